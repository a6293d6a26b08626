{#- Rotated files imported by a daily cron job (after logrotate); the shipper's journal makes
    a file that was already imported a no-op, so a missed or repeated run loses nothing. -#}
{%- from "accesslog/map.jinja" import acl, paths, shipper_cmd with context %}
{%- set batch = acl['batch'] %}
{%- set files = [] %}
{%- for path in batch['files'] %}{% do files.append('--file ' ~ path) %}{% endfor %}

include:
  - accesslog.shipper

accesslog-batch-import:
  file.managed:
    - name: {{ paths['cron_file'] }}
    - mode: '0644'
    - makedirs: True
    - contents: |
        # Managed by Salt (accesslog/batch.sls): import rotated Apache access logs into MongoDB.
        {{ batch['minute'] }} {{ batch['hour'] }} * * * {{ paths['cron_user'] }} {{ shipper_cmd }} --imported-journal {{ paths['imported_journal'] }} {{ files | join(' ') }}
    - require:
      - file: accesslog-shipper
      - file: accesslog-shipper-config
