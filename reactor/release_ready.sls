{#- webfarm/upgrade/release/ready {"version": "2.0.1"[, "sites": [...], "farms": [...], "batch": 1,
    "on_failure": "hold", "force": true]}: a published release starts the app orchestration
    (salt/states/upgrade.sls). Its runner refuses a version that is not tested OK on preprod
    for every hw-profile (webfarm/upgrade/rollout/refused with the reason, nothing drained).
    The event may come from a minion (event.send: the payload is under data['data']) or from
    the master; "force" is honoured only from the master: a minion cannot push an untested
    release past the preprod gate. -#}
{%- set from_minion = data.get('data') is mapping %}
{%- set payload = data['data'] if from_minion else data %}
{%- set upgrade = {'kind': 'app', 'version': payload.get('version')} %}
{%- for key in ['sites', 'farms', 'batch', 'max_failures', 'source', 'on_failure'] %}
{%- if payload.get(key) is not none %}
{%- do upgrade.update({key: payload[key]}) %}
{%- endif %}
{%- endfor %}
{%- if payload.get('force') and not from_minion %}
{%- do upgrade.update({'force': payload['force']}) %}
{%- endif %}
webfarm-release-ready-{{ payload.get('version') }}:
  runner.state.orchestrate:
    - args:
      - mods: upgrade
      - pillar: {{ {'upgrade': upgrade} | json }}
