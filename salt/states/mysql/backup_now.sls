{#- Run by the mysqlsnap-backup schedule (mysql/backup): a backup when the newest is too old. #}
mysqlsnap-fresh-backup:
  mysqlsnap.backed_up:
    - max_age: {{ salt['pillar.get']('mysqlsnap:schedule:max_age', '24h') }}
