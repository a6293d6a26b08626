{#-
  Policy routing from pillar ``policyroute`` (salt/_modules/policyroute.py), made persistent
  with a systemd unit that re-applies the last applied configuration at boot without the
  master (see README.md in this directory for why not the startup highstate).

  Minions without the pillar get nothing.  Optional pillar keys for this SLS:
    policyroute:persist_dir   where the boot copy of the pillar goes (default /etc/webfarm)
    policyroute:systemd_dir   where the unit goes (default /etc/systemd/system)
-#}
{%- set conf = salt['pillar.get']('policyroute', None) %}
{%- if conf is mapping %}
{%- set persist_dir = conf.get('persist_dir') or '/etc/webfarm' %}
{%- set systemd_dir = conf.get('systemd_dir') or '/etc/systemd/system' %}
{%- set config_file = persist_dir ~ '/policyroute.json' %}

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
    - source: salt://routing/files/webfarm-policyroute.service
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
