# mysqlsnap: online snapshot backups of the db-replica minions (salt/states/mysql/backup.sls).
# Put the password in an encrypted pillar (gpg renderer) in production.
mysqlsnap:
  connection:
    unix_socket: /run/mysqld/mysqld.sock
    user: backup
    password: change-me
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
