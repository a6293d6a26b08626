# Example topology: 2 sites x 2 farms x 2 members, two primary LBs sharing a VIP, two LBs
# of site s1 sharing another (VRRP, haproxy.vrrp), one LB of site s2, one DB primary, one
# DB replica, one monitoring host, one log store.
# Addresses are those of the demo lab (network namespaces `make demo` creates); tests
# override them with pillar of their own.
webfarm:
  topology:
    from_mine: false
    primary_lb:
      - {id: lb-primary, address: 10.77.0.10, port: 80}
      - {id: lb-primary-b, address: 10.77.0.11, port: 80}
    # The primary tier's virtual IP: keepalived (haproxy.vrrp) keeps it on one of the LBs.
    primary_vip: {address: 10.77.0.100, port: 80, vrid: 71, prefix: 16}
    sites:
      s1:
        lbs:
          - {id: lb-s1, address: 10.77.1.10, port: 80}
          - {id: lb-s1b, address: 10.77.1.9, port: 80}
        vip: {address: 10.77.1.100, port: 80, vrid: 72, prefix: 16}
        farms:
          f1:
            memcached: {address: 10.77.1.11, port: 11211}
            members:
              1: {id: web-s1-f1-m1, address: 10.77.1.11, port: 80}
              2: {id: web-s1-f1-m2, address: 10.77.1.12, port: 80}
          f2:
            memcached: {address: 10.77.1.21, port: 11211}
            members:
              1: {id: web-s1-f2-m1, address: 10.77.1.21, port: 80}
              2: {id: web-s1-f2-m2, address: 10.77.1.22, port: 80}
      s2:
        lbs:
          - {id: lb-s2, address: 10.77.2.10, port: 80}
        farms:
          f1:
            memcached: {address: 10.77.2.11, port: 11211}
            members:
              1: {id: web-s2-f1-m1, address: 10.77.2.11, port: 80}
              2: {id: web-s2-f1-m2, address: 10.77.2.12, port: 80}
          f2:
            memcached: {address: 10.77.2.21, port: 11211}
            members:
              1: {id: web-s2-f2-m1, address: 10.77.2.21, port: 80}
              2: {id: web-s2-f2-m2, address: 10.77.2.22, port: 80}
    db:
      primary: {id: db-primary, address: 10.77.0.20, port: 3306}
      replicas:
        - {id: db-replica, address: 10.77.0.21, port: 3306}
    monitor: {id: monitor, address: 10.77.0.30}
    logstore: {id: logstore, address: 10.77.0.40, port: 27017}
    # Preproduction: one server per hw-profile tests every release first and builds the
    # Gentoo binary packages of its profile (salt://upgrade/preprod.sls, upgrade.buildhost).
    preprod:
      - {id: preprod-generic, address: 10.77.0.50, port: 80, hw_profile: generic-x86_64}
