{#- webfarm/release/ready {"version": "2.0.1"[, "sites": [...], "farms": [...], "batch": 1]}:
    a published release starts the app orchestration (salt/states/upgrade.sls). The event may
    come from a minion (event.send: the payload is under data['data']) or from the master. -#}
{%- set payload = data.get('data', data) if data.get('data') is mapping else data %}
{%- set upgrade = {'kind': 'app', 'version': payload.get('version')} %}
{%- for key in ['sites', 'farms', 'batch', 'max_failures', 'source'] %}
{%- if payload.get(key) is not none %}
{%- do upgrade.update({key: payload[key]}) %}
{%- endif %}
{%- endfor %}
webfarm-release-ready-{{ payload.get('version') }}:
  runner.state.orchestrate:
    - args:
      - mods: upgrade
      - pillar: {{ {'upgrade': upgrade} | json }}
