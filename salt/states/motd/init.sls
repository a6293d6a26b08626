{#- MOTD scroll: /etc/motd = /etc/motd_base + a fortune (or pillar motd:text) in a paper scroll,
    regenerated hourly by cron through `salt-call --local motd.update` (no master round-trip). -#}
{%- set motd = salt['pillar.get']('motd', {}) %}
{%- set target = motd.get('target', '/etc/motd') %}
{%- set base = motd.get('base', '/etc/motd_base') %}
{%- set pinned = motd.get('pinned', '/etc/motd_pinned') %}
{%- set cron_file = motd.get('cron_file', '/etc/cron.d/webfarm-motd') %}
{%- set salt_call = motd.get('salt_call', 'salt-call') %}
{#- Spread 500+ minions over the hour: a stable minute from the minion id. -#}
{%- set minute = motd.get('minute', (grains['id'] | md5)[:6] | int(base=16) % 60) %}

motd-fortune:
  pkg.installed:
    - pkgs: {{ motd.get('packages', ['fortune-mod', 'fortunes-min']) | json }}

{#- Keep what the distribution (or an admin) wrote as the base, once, before we own motd. #}
motd-base-from-existing:
  file.copy:
    - name: {{ base }}
    - source: {{ target }}
    - force: False
    - onlyif:
      - fun: file.file_exists
        path: {{ target }}

motd-base:
  file.managed:
    - name: {{ base }}
    - replace: False
    - mode: '0644'
    - require:
      - file: motd-base-from-existing

motd-pinned:
{%- if motd.get('text') %}
  file.managed:
    - name: {{ pinned }}
    - contents: {{ motd['text'] | json }}
    - mode: '0644'
{%- else %}
  file.absent:
    - name: {{ pinned }}
{%- endif %}

{#- Re-render only when /etc/motd is not base + one scroll (of the pinned text, when pinned). #}
{%- set args = {'target': target, 'base': base, 'pinned': pinned} %}
{%- if motd.get('width') %}{%- do args.update({'width': motd['width']}) %}{%- endif %}
motd-render:
  module.run:
    - motd.update:
{%- for key, value in args.items() %}
      - {{ key }}: {{ value }}
{%- endfor %}
    - require:
      - pkg: motd-fortune
      - file: motd-base
      - file: motd-pinned
    - unless:
      - fun: motd.current
{%- for key, value in args.items() %}
        {{ key }}: {{ value }}
{%- endfor %}

motd-cron:
  file.managed:
    - name: {{ cron_file }}
    - mode: '0644'
    - contents: |
        # Managed by Salt (webfarm motd): regenerate the MOTD scroll hourly.
        SHELL=/bin/sh
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
        {{ minute }} * * * * root {{ salt_call }} --local --out=quiet motd.update {% for key, value in args.items() %}{{ key }}={{ value }} {% endfor %}
