"""`make demo`: a lab of real hosts (network namespaces, one salt-minion each) and a salt-master."""
