{#- Web servers: syslog-ng follows Apache's access log and forwards it (disk-buffered).
    Log host (pillar accesslog:log_host: true): syslog-ng receives and feeds the shipper
    through a program() destination. -#}
{%- from "accesslog/map.jinja" import acl, paths, shipper_cmd with context %}
{%- set syslog = acl['syslog'] %}
{#- The log host's shipper takes the source host from each line and has a spool of its own. #}
{%- set loghost_cmd = shipper_cmd ~ ' --source-from-line --spool-dir ' ~ paths['spool_dir'] ~ '/syslog --status-file ' ~ paths['status_file'] ~ '.syslog' %}

{%- if acl['install_packages'] %}
accesslog-syslog-ng:
  pkg.installed:
    - name: syslog-ng-core
    - require_in:
      - file: accesslog-syslog-ng-conf
{%- endif %}

{%- if acl['log_host'] %}
include:
  - accesslog.shipper
{%- endif %}

{%- if not acl['log_host'] %}
accesslog-syslog-ng-buffer-dir:
  file.directory:
    - name: {{ paths['spool_dir'] }}/syslog-ng-buffer
    - mode: '0750'
    - makedirs: True
{%- endif %}

accesslog-syslog-ng-conf:
  file.managed:
    - name: {{ paths['syslog_ng_conf_dir'] }}/webfarm-accesslog.conf
{%- if acl['log_host'] %}
    - source: salt://accesslog/files/syslog-ng-loghost.conf.jinja
    - context:
        listen: {{ syslog['listen'] | json }}
        port: {{ syslog['port'] }}
        shipper_cmd: {{ loghost_cmd | json }}
    - require:
      - file: accesslog-shipper
      - file: accesslog-shipper-config
{%- else %}
    - source: salt://accesslog/files/syslog-ng-web.conf.jinja
    - context:
        access_log: {{ paths['apache_access_log'] | json }}
        log_host: {{ syslog['log_host_address'] | json }}
        port: {{ syslog['port'] }}
        disk_buf_bytes: {{ syslog['disk_buf_bytes'] }}
        time_reopen: {{ syslog['time_reopen'] }}
        disk_buf_dir: {{ (paths['spool_dir'] ~ '/syslog-ng-buffer') | json }}
    - require:
      - file: accesslog-syslog-ng-buffer-dir
{%- endif %}
    - template: jinja
    - mode: '0644'
    - makedirs: True

{%- if acl['reload_services'] %}
accesslog-syslog-ng-syntax:
  cmd.run:
    - name: syslog-ng --syntax-only
    - onchanges:
      - file: accesslog-syslog-ng-conf

accesslog-syslog-ng-reload:
  cmd.run:
    - name: systemctl reload-or-restart syslog-ng
    - onchanges:
      - cmd: accesslog-syslog-ng-syntax
{%- endif %}
