# Source-based policy routing (salt/_modules/policyroute.py, SLS salt://policyroute).
# The seed's scenario: traffic from 85.14.228.248 leaves through 85.14.228.254 on eth1,
# everything else through 10.12.0.254 on eth0. Table ids 1-252 or 256-4294967295
# (0, 253, 254, 255 are reserved); rule priorities 1000-9999; a source belongs to one table.
policyroute:
  default:
    gateway: 10.12.0.254          # or a list with one IPv4 and one IPv6 gateway
    dev: eth0
  tables:
    uplink1:
      id: 1
      gateway: 85.14.228.254
      dev: eth1
      sources:
        - 85.14.228.248           # addresses or networks, IPv4 or IPv6
      priority: 1000
      # routes:                   # optional extra routes in this table
      #   - {dst: 192.0.2.0/24, gateway: 85.14.228.253}
  # iproute2_dir: /etc/iproute2   # where rt_tables.d/ and rt_protos.d/ are written
  # persist_dir: /etc/webfarm     # where the SLS keeps the boot copy of this pillar
