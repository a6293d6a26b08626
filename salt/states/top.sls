base:
  '*':
    - motd
    - less
