{#-
  mysqlsnap/schedule: schedule mysqlsnap backups on db-replica minions (and remove the job elsewhere).

  Salt schedule, not cron: the job runs inside the minion, so the settings and the database
  password come from pillar and never sit in a crontab or on a command line; its return and the
  webfarm/mysqlsnap/backup/{done,failed} events reach the master and its reactors; maxrunning
  keeps one run at a time and splay spreads the replicas. The job applies mysqlsnap.backup_now
  (mysqlsnap.backed_up with max_age), so an hourly check takes a backup only when the newest is
  too old and catches up by itself after the minion was down.
-#}
{%- set role = salt['grains.get']('webfarm:role', '') %}
{%- import_yaml tpldir ~ '/defaults.yaml' as defaults %}
{%- set snap = salt['slsutil.merge'](defaults, salt['pillar.get']('mysqlsnap', {}), strategy='recurse') %}
{%- set sched = snap['schedule'] %}
{%- set dest = snap.get('destination') or '' %}
{%- set conn = snap.get('connection') or {} %}
{%- if role == 'db-replica' and not (conn.get('password') or conn.get('defaults_file')) %}
{#- No schedule without credentials: every run would fail an hour later, out of sight. #}

mysqlsnap-backup:
  test.configurable_test_state:
    - changes: false
    - result: false
    - allow_test_mode_failure: true
    - comment: "pillar mysqlsnap:connection has no password and no defaults_file: write pillar/secrets/db.sls (password, see pillar/secrets/db.sls.example) or set mysqlsnap:connection:defaults_file; no backup scheduled"
{%- elif role == 'db-replica' %}
{%- if dest.startswith('/') %}

{#- group mysql: mysqlsnap.verify runs its throw-away server as mysql on a copy in here. #}
mysqlsnap-destination:
  file.directory:
    - name: {{ dest }}
    - user: root
    - group: mysql
    - mode: '0750'
    - makedirs: True
    - require_in:
      - schedule: mysqlsnap-backup
{%- endif %}

mysqlsnap-backup:
  schedule.present:
    - function: state.sls
    - job_args:
      - mysqlsnap.backup_now
    - hours: {{ sched['hours'] }}
    - splay: {{ sched['splay'] }}
    - maxrunning: 1
    - offline: {{ sched['offline'] }}
{%- else %}

mysqlsnap-backup:
  schedule.absent:
    - offline: {{ sched['offline'] }}
{%- endif %}
