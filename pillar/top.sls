# The pillar of each role, one file per capability (values the site edits, not structure):
# webfarm/topology.sls (every host, LB, farm member, DB, monitor and log store of the site),
# nagios.sls, accesslog.sls, upgrade.sls, haproxy.sls, mysqlsnap.sls. pillar/examples/ holds
# what no top includes: copy one up (e.g. examples/policyroute.sls to policyroute.sls) to use it.
# Secrets are not here: pillar/secrets/<name>.sls (git-ignored; each has a tracked
# .sls.example) is read by the capability's file only on the minions the topology names
# (pillar/webfarm/members.jinja); without it the SLS that needs it fails with a clear comment.
# Plain YAML (no Jinja), so tools can read and extend it. Later entries win a merge: '*' is
# last, so a file appended to it (a lab's or test's overrides) overrides the role files.
base:
  'webfarm:role:web':
    - match: grain
    - accesslog
    - upgrade
  'webfarm:role:preprod':
    - match: grain
    - upgrade
  'webfarm:role:logstore':
    - match: grain
    - accesslog
  'webfarm:role:lb-*':
    - match: grain
    - haproxy
    # - policyroute     # source-based routing on the LBs: copy examples/policyroute.sls first
  'webfarm:role:db-*':
    - match: grain
    - mysqlsnap
  '*':
    - webfarm.topology
    - nagios
