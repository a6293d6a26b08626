{#- salt-run state.orchestrate upgrade.preprod pillar='{"upgrade": {"kind": "app", "version": "2.1.0"}}'
    Renders on the master: the upgrade runner's preprod function deploys the release to the
    preproduction servers (grain webfarm:role: preprod, one per hw-profile), checks HTTP health
    and runs the release's check command (pillar upgrade:checks:<version> or upgrade:check_cmd
    of the preprod minion), records the outcome per hw-profile on the master (master option
    webfarm_release_record, default <cachedir>/webfarm/releases-tested.json; see
    salt-run upgrade.tested) and fires webfarm/upgrade/preprod/done. Production rollouts
    (salt://upgrade.sls, the webfarm/upgrade/release/ready reactor) refuse a version without an OK
    record for every hw-profile they would upgrade. Options: kind (app | os | os-online),
    version, source, pkgs, health_timeout, job_timeout. -#}
{%- set up = salt['pillar.get']('upgrade', {}) %}
{%- set options = ['version', 'source', 'pkgs', 'health_timeout', 'job_timeout'] %}

webfarm-preprod-{{ up.get('kind', 'app') }}-{{ up.get('version') }}:
  salt.runner:
    - name: upgrade.preprod
    - kind: {{ up.get('kind', 'app') | json }}
{%- for key in options %}
{%- if up.get(key) is not none %}
    - {{ key }}: {{ up[key] | json }}
{%- endif %}
{%- endfor %}
