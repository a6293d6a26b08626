{#- The standalone shipper and its settings file; included by piped, syslog_ng and batch. -#}
{%- from "accesslog/map.jinja" import acl, paths, shipper_config with context %}

{%- if acl['install_packages'] %}
accesslog-shipper-pymongo:
  pkg.installed:
    - name: python3-pymongo
    - require_in:
      - file: accesslog-shipper
{%- endif %}

accesslog-shipper:
  file.managed:
    - name: {{ paths['shipper'] }}
    - source: salt://accesslog/files/webfarm_shipper.py
    - mode: '0755'
    - makedirs: True

{#- 0600: the URI may carry the store's password. #}
accesslog-shipper-config:
  file.serialize:
    - name: {{ paths['config'] }}
    - dataset: {{ shipper_config | json }}
    - serializer: json
    - mode: '0600'
    - makedirs: True

accesslog-shipper-spool:
  file.directory:
    - name: {{ paths['spool_dir'] }}
    - mode: '0750'
    - makedirs: True
