{#- Pick the access-log path per host from pillar: accesslog:mode (piped | syslog_ng | batch
    | none) for the web server, accesslog:log_host for the syslog-ng log host and
    accesslog:store_admin where the store's indexes are managed. -#}
{%- from "accesslog/map.jinja" import acl with context %}
{%- set parts = [] %}
{%- if acl['mode'] in ('piped', 'syslog_ng', 'batch') %}{% do parts.append('accesslog.' ~ acl['mode']) %}{% endif %}
{%- if acl['log_host'] and 'accesslog.syslog_ng' not in parts %}{% do parts.append('accesslog.syslog_ng') %}{% endif %}
{%- if acl['store_admin'] %}{% do parts.append('accesslog.store') %}{% endif %}

{%- set uri = acl['store'].get('uri') or '' %}

{%- if acl['mode'] not in ('piped', 'syslog_ng', 'batch', 'none') %}
accesslog-bad-mode:
  test.fail_without_changes:
    - comment: "pillar accesslog:mode must be piped, syslog_ng, batch or none, not {{ acl['mode'] }}"
{%- elif parts and acl['require_store_credentials'] and '@' not in uri %}
{#- Nothing is written: the shipper would only fill its spool against a store that refuses it. #}
accesslog-store-credentials:
  test.configurable_test_state:
    - changes: false
    - result: false
    - allow_test_mode_failure: true
    - comment: "pillar accesslog:require_store_credentials is true but accesslog:store:uri has no credentials: write pillar/secrets/accesslog.sls (store_uri, see pillar/secrets/accesslog.sls.example); nothing of accesslog was applied"
{%- elif parts %}
include: {{ parts | json }}
{%- else %}
accesslog-nothing-to-do:
  test.succeed_without_changes:
    - name: accesslog mode none on this host
{%- endif %}
