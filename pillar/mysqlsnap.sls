# mysqlsnap: online snapshot backups of the db-replica minions (salt/states/mysqlsnap/schedule.sls).
# The password comes from pillar/secrets/db.sls (the operator's, git-ignored; see
# secrets/db.sls.example), or use a defaults_file; an encrypted pillar (gpg renderer) works too.
{%- from "webfarm/members.jinja" import secret_text with context %}
{%- set secret = secret_text('db') | load_yaml or {} %}
mysqlsnap:
  connection:
    unix_socket: /run/mysqld/mysqld.sock
    user: backup
    password: {{ secret.get('password') | json }}   # null: mysqlsnap.schedule fails, schedules nothing
    # defaults_file: /root/.my.cnf   # instead of a password
  datadir: /srv/mysql/data
  backend: btrfs
  btrfs:
    subvolume: /srv/mysql
    snapshot_dir: /srv/.mysqlsnap
  # backend: lvm
  # lvm: {vg: vg0, lv: mysql, snapshot_size: 10G, mount_point: /mnt/mysqlsnap,
  #       fstype: xfs, origin_mount: /srv/mysql}
  freeze: auto
  destination: /backup/mysql
  keep: 7
  lock_timeout: 10
  require_replica: true
  verify: false
  schedule:
    hours: 1
    splay: 600
    max_age: 24h
