{#- salt-run state.orchestrate upgrade pillar='{"upgrade": {"kind": "app", "version": "2.0.1"}}'
    Renders on the master: the waves are planned and driven by the upgrade runner
    (salt/_runners/upgrade.py; `salt-run saltutil.sync_all` puts it on the master), which reads
    the minions' live grains, drains/readies through haproxy_tier on the site LBs and upgrades
    through the farm module on the members. Options (pillar upgrade): kind (app | os | os-online),
    version (app), sites, farms, batch (default: the number of sites, one farm per site at a
    time), max_failures (default 0), on_failure (rollback | hold, default rollback), force
    (roll out a version not tested OK on preprod: reported), source, pkgs, drain_timeout,
    health_timeout. Test a version on preprod first: salt-run state.orchestrate upgrade.preprod. -#}
{%- set up = salt['pillar.get']('upgrade', {}) %}
{%- set options = ['version', 'sites', 'farms', 'batch', 'max_failures', 'on_failure', 'force',
                   'source', 'pkgs', 'drain_timeout', 'health_timeout', 'job_timeout'] %}

webfarm-upgrade-{{ up.get('kind', 'unset') }}:
  salt.runner:
    - name: upgrade.rollout
    - kind: {{ up.get('kind') | json }}
{%- for key in options %}
{%- if up.get(key) is not none %}
    - {{ key }}: {{ up[key] | json }}
{%- endif %}
{%- endfor %}
