{#-
  Policy routing from pillar ``policyroute`` (salt/_modules/policyroute.py), made persistent
  with a systemd unit that re-applies the last applied configuration at boot without the
  master (see README.md in this directory for why not the startup highstate).

  Minions without the pillar get nothing.  Optional pillar keys for this SLS:
    policyroute:persist_dir   where the boot copy of the pillar goes (default /etc/webfarm)
    policyroute:systemd_dir   where the unit goes (default /etc/systemd/system)
    policyroute:networkd      auto (default: when systemd-networkd is active), true, false:
                              write the networkd drop-in that keeps webfarm's rules and routes
    policyroute:networkd_conf_dir   where that drop-in goes (default /etc/systemd/networkd.conf.d)
-#}
{%- set conf = salt['pillar.get']('policyroute', None) %}
{%- if conf is mapping %}
{%- set persist_dir = conf.get('persist_dir') or '/etc/webfarm' %}
{%- set systemd_dir = conf.get('systemd_dir') or '/etc/systemd/system' %}
{%- set config_file = persist_dir ~ '/policyroute.json' %}
{%- set networkd = conf.get('networkd', 'auto') %}
{%- if networkd == 'auto' %}
{%-   set networkd = grains.get('init') == 'systemd' and salt['service.status']('systemd-networkd') %}
{%- endif %}

{%- if networkd %}
{#- systemd-networkd (>= 248) removes the routing policy rules and routes it did not
    configure each time it starts; this drop-in makes it leave them (README.md here). #}
policyroute-networkd-keeps-foreign:
  file.managed:
    - name: {{ conf.get('networkd_conf_dir') or '/etc/systemd/networkd.conf.d' }}/50-webfarm-policyroute.conf
    - source: salt://policyroute/files/networkd-keep-foreign.conf
    - makedirs: True
    - mode: '0644'
    - require_in:
      - policyroute: policyroute-managed
{%- endif %}

policyroute-managed:
  policyroute.managed:
    - name: webfarm

{#- Saved only after a successful apply, so a reboot re-applies a configuration that worked. #}
policyroute-boot-config:
  file.serialize:
    - name: {{ config_file }}
    - dataset_pillar: policyroute
    - serializer: json
    - makedirs: True
    - mode: '0644'
    - require:
      - policyroute: policyroute-managed

policyroute-boot-unit:
  file.managed:
    - name: {{ systemd_dir }}/webfarm-policyroute.service
    - source: salt://policyroute/files/webfarm-policyroute.service
    - template: jinja
    - context:
        config_file: {{ config_file }}
    - makedirs: True
    - mode: '0644'

{#- What `systemctl enable` does, written directly so it also works where systemd is not PID 1. #}
policyroute-boot-enabled:
  file.symlink:
    - name: {{ systemd_dir }}/multi-user.target.wants/webfarm-policyroute.service
    - target: {{ systemd_dir }}/webfarm-policyroute.service
    - makedirs: True
    - require:
      - file: policyroute-boot-unit

{%- if grains.get('init') == 'systemd' and systemd_dir == '/etc/systemd/system' %}

policyroute-systemd-reload:
  module.run:
    - service.systemctl_reload: []
    - onchanges:
      - file: policyroute-boot-unit
{%- endif %}
{%- endif %}
