# Nagios over SSH (salt/states/nagios/): agentless checks with check_by_ssh + ControlPersist.
# Example pillar; every key has a default in salt/states/nagios/map.jinja.
#
# Every minion publishes itself (its `webfarm` grain and addresses) to the mine, and the
# monitoring host publishes its public key; nagios/server builds one Nagios host per minion
# from the first, nagios/client puts the second in the check user's authorized_keys with
# from="<monitoring host addresses>". The pubkey mine function may be given to every minion:
# nagios/client only reads it from the minions matched by monitor_target.
mine_functions:
  webfarm_nagios_host:
    - mine_function: grains.item
    - webfarm
    - ipv4
  webfarm_nagios_pubkey:
    - mine_function: file.read
    - /var/lib/nagios/.ssh/id_ed25519.pub

nagios:
  user: nagiosssh                       # the restricted check user on every monitored host
  monitor_target: 'webfarm:role:monitor'
  monitor_target_type: grain
  client:
    home: /var/lib/nagiosssh            # root-owned; only .ssh/authorized_keys in it
    shell: /usr/local/lib/nagiosssh/rshell
    checks_dir: /usr/local/lib/nagiosssh/checks
    plugins: [check_load, check_disk, check_users, check_procs, check_swap, check_dummy]
    from: []                            # empty: the monitoring hosts' addresses from the mine
    pubkeys: []                         # empty: the monitoring hosts' keys from the mine
  server:
    config_dir: /etc/nagios4
    staging_dir: /etc/nagios4/staging   # validated with `nagios4 -v` before going live
    key: /var/lib/nagios/.ssh/id_ed25519
    # private_key: |                    # optional: from pillar instead of generated once
    #   -----BEGIN OPENSSH PRIVATE KEY-----
    control_dir: /run/nagios-ssh        # ControlPath=<control_dir>/$HOSTNAME$ (keep it short)
    control_persist: 10m
    check_timeout: 20                   # check_by_ssh -t
    strict_host_key_checking: accept-new
    reload: service                     # service (systemd nagios4), lockfile (HUP) or none
    ssh_port: 22
    hosts: {}                           # extra/override hosts: {name: {address, roles, port}}
    services:
      '*':
        - {description: load, check: 'check_load -r -w 4,3,2 -c 8,6,4'}
        - {description: disk root, check: 'check_disk -w 15% -c 5% -p /'}
        - {description: users, check: 'check_users -w 20 -c 50'}
      web:
        - {description: apache, check: 'check_procs -C apache2 -c 1:'}
      db-primary:
        - {description: mariadb, check: 'check_procs -C mariadbd -c 1:1'}
      db-replica:
        - {description: mariadb, check: 'check_procs -C mariadbd -c 1:1'}
