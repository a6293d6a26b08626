{#- Run by the mysqlsnap-backup schedule (mysqlsnap/schedule): a backup when the newest is older than
    pillar mysqlsnap:schedule:max_age (mysqlsnap.newest's default). #}
mysqlsnap-fresh-backup:
  mysqlsnap.backed_up: []
