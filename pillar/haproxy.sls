# HAProxy tiers (states haproxy.primary / haproxy.site, module haproxy_tier).
# Everything is optional; shown with the defaults. The topology itself is webfarm:topology.
# The VRRP password comes from pillar/secrets/lb.sls (the operator's; see lb.sls.example).
{%- from "webfarm/members.jinja" import secret_text with context %}
{%- set secret = secret_text('lb') | load_yaml or {} %}
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
  # Connection-rate sizing (issue 18). maxconn is the global limit (HAProxy raises its own fd
  # limit to ~2 x maxconn, haproxy.sysctl lifts the kernel's ceilings); frontend_maxconn the
  # per-frontend one (default: maxconn); backlog the listen backlog (default: frontend
  # maxconn, capped by net.core.somaxconn). 500-1000 Mbit/s of SYN/ACK/FIN is ~1-2 M small
  # packets/s; an LB of 8 cores takes ~40-60 k new connections/s, so size maxconn for the
  # concurrent ones (rate x duration), e.g. 50000 x 1 s.
  # frontend_maxconn: null
  # backlog: null
  # nbthread: null           # default: one thread per CPU HAProxy may run on
  # tune: {maxaccept: 64, bufsize: 16384}   # rendered as tune.<key> <value> in global
  # Where a site has a VIP, the primary tier checks it with this many failures before DOWN
  # (a VRRP failover of the site tier must not move the site's sticky clients elsewhere):
  # check: {vip_fall: 5}
  # VRRP (haproxy.vrrp): one instance per tier with a vip in webfarm:topology, e.g.
  #   primary_vip: {address: 10.77.0.100, port: 80, vrid: 71, prefix: 16}
  #   sites: {s1: {vip: {address: 10.77.1.100, vrid: 72, prefix: 16}, lbs: [...two...]}}
  vrrp:
    # VRRPv3 (RFC 5798): sub-second adverts, so a dead host's VIP moves in ~2 s (3 adverts +
    # skew). v3 has no authentication, so each instance talks unicast to, and with
    # check_unicast_src accepts adverts only from, the tier's other LBs as the master's
    # webfarm:topology names them (no grain or mine decides who is a peer): a host outside
    # the topology cannot take the VIP by sending adverts. Setting auth_pass with version 3
    # is an error (the state fails and writes nothing), not silently ignored.
    version: 3
    advert_int: 0.5          # seconds (v3: 0.01-40.95; v2: whole seconds 1-255)
    # VRRPv2 with keepalived's PASS authentication only on request (whole-second adverts:
    # ~4 s for a dead host); the password is a secret, at most 8 characters, masked in
    # every return and log:
    #   version: 2
    #   advert_int: 1
    # and put the password in pillar/secrets/lb.sls (vrrp_auth_pass; see lb.sls.example).
    # A password with version 3 is refused (the state fails and writes nothing).
{%- if secret.get('vrrp_auth_pass') is not none %}
    auth_pass: {{ secret.get('vrrp_auth_pass') | json }}
{%- endif %}
    interface: eth0
    preempt: false           # a recovered LB does not take the VIP back (one move, not two)
    priorities: {}           # minion id -> 1-254; default 150, 140, ... by LB list order
    check: {interval: 1, timeout: 1, fall: 2, rise: 2}   # curl of this LB's monitor URI
    config: /etc/keepalived/keepalived.conf               # written 0600
    pidfile: /run/keepalived/keepalived.pid
    vrrp_pidfile: /run/keepalived/vrrp.pid
    install_package: true    # pkg keepalived + curl
  # haproxy.sysctl: every default and why in salt/states/haproxy/defaults.yaml (sysctl);
  # override a key here, or null to leave it alone. Ceilings are never lowered.
  sysctl: {}
  sysctl_persist: /etc/sysctl.d/60-webfarm-haproxy.conf
