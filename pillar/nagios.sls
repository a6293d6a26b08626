# Nagios over SSH (salt/states/nagios/): agentless checks with check_by_ssh + ControlPersist.
# Example pillar; every key has a default in salt/states/nagios/defaults.yaml.
#
# Trust from the master (docs/trust.md): the monitors, their source addresses and keys come
# from pillar (nagios:monitors, or the `monitor` entry of webfarm:topology); nagios/server
# monitors every minion webfarm:topology names, at its pillar address. The mine only fills in
# details for minions the pillar names: a monitor's public key (read from that minion id
# only), a host's address when the topology gives none, and each host's ssh host keys
# (pinned in the monitor's known_hosts, StrictHostKeyChecking yes). A minion that sets
# `webfarm:role: monitor` in its grains and publishes a key is ignored.
mine_functions:
  webfarm_nagios_host:
    - mine_function: grains.item
    - webfarm
    - ipv4
  webfarm_nagios_pubkey:
    - mine_function: file.read
    - /var/lib/nagios/.ssh/id_ed25519.pub
  webfarm_nagios_hostkeys:              # public host keys only (private: False)
    - mine_function: ssh.host_keys
    - keydir: /etc/ssh
    - private: False
    - certs: False

nagios:
  user: nagiosssh                       # the restricted check user on every monitored host
  monitors: {}                          # {minion id: {from: [IP or CIDR], pubkey: 'ssh-ed25519 ...'}}
                                        # empty: webfarm:topology:monitor (its address; its key
                                        # from the mine of that minion id only)
  # Allow-list of the forced command, besides every check nagios:server:services runs
  # (those are allowed with exactly their arguments): plugin + one regex per argument.
  checks: []
  #  - {plugin: check_procs, args: ['-C', '[a-z0-9_-]+', '-c', '[0-9:]+']}
  client:
    home: /var/lib/nagiosssh            # root-owned; only .ssh/authorized_keys in it
    shell: /usr/local/lib/nagiosssh/rshell      # the seed's rbash wrapper (defence in depth)
    checks_dir: /usr/local/lib/nagiosssh/checks
    dispatcher: /usr/local/lib/nagiosssh/dispatch     # the forced command
    check_table: /usr/local/lib/nagiosssh/checks.json
    plugins: [check_load, check_disk, check_users, check_procs, check_swap, check_dummy]
    timeout: 20                         # seconds a check may run before its group is killed
    limits: {cpu: 10, nproc: 64, as_mb: 512, nofile: 64, fsize_kb: 0}
    sshd:
      manage: true                      # drop-in only where sshd_config Includes its dir
      config: /etc/ssh/sshd_config
      dropin: /etc/ssh/sshd_config.d/webfarm-nagios.conf
      reload: service                   # service (ssh), pidfile or none
  server:
    config_dir: /etc/nagios4
    staging_dir: /etc/nagios4/staging   # validated with `nagios4 -v` before going live
    key: /var/lib/nagios/.ssh/id_ed25519
    # private_key: |                    # optional: from pillar instead of generated once
    #   -----BEGIN OPENSSH PRIVATE KEY-----
    control_dir: /run/nagios-ssh        # ControlPath=<control_dir>/$HOSTNAME$ (keep it short)
    control_persist: 10m
    check_timeout: 20                   # check_by_ssh -t
    strict_host_key_checking: 'yes'     # host keys pinned from the mine of named hosts
    reload: service                     # service (systemd nagios4), lockfile (HUP) or none
    ssh_port: 22
    hosts_from_topology: true           # every minion webfarm:topology names
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
