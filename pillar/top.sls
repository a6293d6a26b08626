base:
  '*':
    - webfarm.topology
