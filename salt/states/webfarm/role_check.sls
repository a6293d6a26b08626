{#- Fails a minion whose grain webfarm:role is missing or not a role of webfarm/roles.yaml
    (the top then gives it only the common SLS); succeeds without changes otherwise. -#}
{%- import_yaml "webfarm/roles.yaml" as roles %}
{%- set role = salt['grains.get']('webfarm:role', '') %}
{%- if role is string and role in roles %}
webfarm-role-check:
  test.succeed_without_changes:
    - name: {{ ('grain webfarm:role is ' ~ role) | json }}
{%- else %}
{%-   set what = 'missing' if role in ('', None) else 'not a known role: ' ~ (role | string) %}
webfarm-role-check:
  test.configurable_test_state:
    - changes: false
    - result: false
    - allow_test_mode_failure: true
    - name: webfarm-role-check
    - comment: {{ ('grain webfarm:role is ' ~ what ~ '; set it to one of ' ~ (roles | list | sort | join(', ')) ~ ' (salt ' ~ grains['id'] ~ ' grains.set webfarm:role web) and apply the highstate again; only the common SLS (motd, less, nagios.client) were applied here') | json }}
{%- endif %}
