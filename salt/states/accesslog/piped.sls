{#- Apache pipes every access log line straight into the shipper (GlobalLog "||..."). -#}
{%- from "accesslog/map.jinja" import acl, paths, shipper_cmd with context %}
{#- The HAProxy tiers' addresses (pillar webfarm:topology): the proxies whose
    X-Forwarded-For Apache trusts to name the client. #}
{%- set topo = salt['pillar.get']('webfarm:topology', {}) %}
{%- set proxies = [] %}
{%- for lb in topo.get('primary_lb', []) + [topo.get('primary_vip') or {}] %}
{%-   if lb.get('address') %}{% do proxies.append(lb['address']) %}{% endif %}
{%- endfor %}
{%- for site in (topo.get('sites') or {}).values() %}
{%-   for lb in site.get('lbs', []) + [site.get('vip') or {}] %}
{%-     if lb.get('address') %}{% do proxies.append(lb['address']) %}{% endif %}
{%-   endfor %}
{%- endfor %}

include:
  - accesslog.shipper

accesslog-apache-piped-conf:
  file.managed:
    - name: {{ paths['apache_conf_available'] }}/webfarm-accesslog.conf
    - source: salt://accesslog/files/apache-piped.conf.jinja
    - template: jinja
    - context:
        log_format: {{ acl['log_format'] | json }}
        shipper_cmd: {{ shipper_cmd | json }}
        proxies: {{ proxies | unique | list | json }}
    - mode: '0644'
    - makedirs: True
    - require:
      - file: accesslog-shipper
      - file: accesslog-shipper-config

accesslog-apache-piped-enabled:
  file.symlink:
    - name: {{ paths['apache_conf_enabled'] }}/webfarm-accesslog.conf
    - target: {{ paths['apache_conf_available'] }}/webfarm-accesslog.conf
    - makedirs: True
    - require:
      - file: accesslog-apache-piped-conf

{%- if acl['reload_services'] %}
accesslog-apache-remoteip:
  apache_module.enabled:
    - name: remoteip

accesslog-apache-configtest:
  cmd.run:
    - name: apache2ctl -t
    - onchanges:
      - file: accesslog-apache-piped-conf
      - file: accesslog-apache-piped-enabled
      - file: accesslog-shipper
      - file: accesslog-shipper-config
      - apache_module: accesslog-apache-remoteip

{#- graceful: Apache restarts its piped logger; the old shipper flushes on EOF/SIGTERM. #}
accesslog-apache-graceful:
  cmd.run:
    - name: apache2ctl graceful
    - onchanges:
      - cmd: accesslog-apache-configtest
{%- endif %}
