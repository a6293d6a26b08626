# HAProxy tiers (states haproxy.primary / haproxy.site, module haproxy_tier).
# Everything is optional; shown with the defaults. The topology itself is webfarm:topology.
haproxy:
  binary: haproxy
  user: haproxy
  group: haproxy
  maxconn: 4096
  log: /dev/log              # syslog target; null disables logging
  log_facility: local0
  retries: 3
  postonly: false            # true: insert SITEID/FARMID only on POST responses (seed's way)
  start: true                # start HAProxy when it is not running
  monitor_uri: /haproxy-health
  check: {path: /, inter: 2s, fall: 3, rise: 2}
  timeouts:
    connect: 5s
    client: 30s
    server: 30s
    http-request: 10s
    http-keep-alive: 10s
    queue: 30s
    check: 5s
  primary:
    config: /etc/haproxy/primary.cfg
    pidfile: /run/haproxy/primary.pid
    socket: /run/haproxy/primary.sock       # admin level, mode 600
    state_file: /var/lib/haproxy/primary.state
    cookie: SITEID
    # bind: 10.77.0.10:80     # default: this minion's entry in webfarm:topology:primary_lb
    # service: haproxy-primary  # reload with systemctl where systemd runs (else pidfile + SIGUSR2)
  site:
    config: /etc/haproxy/site.cfg
    pidfile: /run/haproxy/site.pid
    socket: /run/haproxy/site.sock
    state_file: /var/lib/haproxy/site.state
    cookie: FARMID
    # name: s1                # default: grain webfarm:site, or the site whose lbs list this minion
    # bind: [10.77.1.10:80]   # default: this minion's entry in webfarm:topology:sites:<site>:lbs
