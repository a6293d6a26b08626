{#- salt-run state.orchestrate orch.motd [pillar='{"orch": {"role": "web"}}']
    Refresh the MOTD on every minion of one role (grain webfarm:role), then on the rest. -#}
{%- set role = salt['pillar.get']('orch:role', 'web') %}

motd-on-{{ role }}:
  salt.state:
    - tgt: 'webfarm:role:{{ role }}'
    - tgt_type: grain
    - sls: motd
