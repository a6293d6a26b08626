"""`make demo`: a lab of real hosts (network namespaces, one salt-minion each) and a salt-master."""

import lab  # noqa: F401 - puts salt/_utils on sys.path (lab/__init__.py)
