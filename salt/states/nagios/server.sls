{#- Monitoring host: nagios4 checking every minion over ssh (check_by_ssh + ControlPersist).

    Config goes to a staging directory first and is validated there with `nagios4 -v`; only a
    valid config is copied to the live directory, and only then is Nagios reloaded. An invalid
    config fails the run and leaves the live config (and the running Nagios) untouched. #}
{%- from "nagios/map.jinja" import nagios, name_re, path_re, check_re, pubkey_re with context %}
{%- set s = nagios.server %}
{%- set problems = [] %}
{%- set addr_re = '^[A-Za-z0-9][A-Za-z0-9.:-]*$' %}
{%- set descr_re = '^[A-Za-z0-9_][A-Za-z0-9_ ./:@+-]*$' %}

{#- Hosts (trust from the master): every minion pillar webfarm:topology names, with the roles
    and the address the pillar gives it; the mine (grains.item webfarm ipv4) only fills in the
    address of a named minion the pillar gives none. Then pillar nagios:server:hosts (wins). #}
{%- set by_name = {} %}
{%- set hostkeys = {} %}
{%- if s.hosts_from_topology %}
{%-   set named = salt['trust.minions']() %}
{%-   set addresses = salt['trust.addresses']() %}
{%-   set mined = salt['trust.mine']('*', nagios.mine_host_function) %}
{%-   for mid, roles in named | dictsort %}
{%-     set grains = mined.get(mid) if mined.get(mid) is mapping else {} %}
{%-     set wf = grains.get('webfarm') if grains.get('webfarm') is mapping else {} %}
{%-     set ips = (grains.get('ipv4') or []) | reject('match', '^127[.]') | list %}
{%-     set addr = addresses.get(mid) or wf.get('address') or (ips[0] if ips else '') %}
{#-     A named minion with no address yet (none in pillar, nothing in its mine) waits. #}
{%-     if addr %}{% do by_name.update({mid: {'address': addr, 'roles': roles, 'port': s.ssh_port}}) %}{% endif %}
{%-   endfor %}
{%- endif %}
{%- if s.known_hosts_from_mine %}
{%-   do hostkeys.update(salt['trust.mine']('*', nagios.mine_hostkey_function)) %}
{%- endif %}
{%- for name, entry in s.hosts | dictsort %}
{%-   set merged = dict(by_name.get(name, {'roles': [], 'port': s.ssh_port})) %}
{%-   do merged.update(entry) %}
{%-   do by_name.update({name: merged}) %}
{%- endfor %}

{%- set hosts = [] %}
{%- for name, h in by_name | dictsort %}
{%-   set wanted = (s.services.get('*') or []) | list %}
{%-   for role in h.roles %}{% do wanted.extend(s.services.get(role | string) or []) %}{% endfor %}
{%-   do wanted.extend(h.get('services') or []) %}
{%-   set services = [] %}
{%-   for svc in wanted %}
{%-     set svc_out = {'description': svc.get('description', ''), 'check': svc.get('check', ''), 'command': svc.get('command', 'check_by_ssh')} %}
{%-     if not svc_out.description | regex_match(descr_re) %}{% do problems.append(name ~ ': service description ' ~ svc_out.description ~ ' has characters Nagios refuses') %}{% endif %}
{%-     if not svc_out.check | regex_match(check_re) %}{% do problems.append(name ~ ': check ' ~ svc_out.check ~ ' must be a plugin and arguments of [A-Za-z0-9_.,:%/ =@+-]') %}{% endif %}
{%-     if not svc_out.command | regex_match(name_re) %}{% do problems.append(name ~ ': command ' ~ svc_out.command ~ ' is not a command name') %}{% endif %}
{%-     do services.append(svc_out) %}
{%-   endfor %}
{%-   if not name | regex_match(name_re) %}{% do problems.append('host name ' ~ name ~ ' is not a valid Nagios host name') %}{% endif %}
{%-   if not (h.address | string) | regex_match(addr_re) %}{% do problems.append(name ~ ': no usable address (' ~ h.address ~ ')') %}{% endif %}
{%-   if not (h.port | string) | regex_match('^[0-9]{1,5}$') or (h.port | int) < 1 or (h.port | int) > 65535 %}{% do problems.append(name ~ ': ssh port ' ~ h.port ~ ' out of range') %}{% endif %}
{%-   do hosts.append({'name': name, 'address': h.address, 'port': h.port | int, 'roles': h.roles | list, 'services': services}) %}
{%- endfor %}

{#- Pinned host keys: pillar lines, plus the keys each monitored (named) host published with
    ssh.host_keys to the mine, at the address Nagios connects to; StrictHostKeyChecking yes. #}
{%- set known_hosts_lines = s.known_hosts_lines | list %}
{%- for host in hosts if hostkeys.get(host.name) is mapping %}
{%-   set where = host.address if host.port == 22 else '[' ~ host.address ~ ']:' ~ host.port %}
{%-   for file, line in hostkeys[host.name] | dictsort if file.endswith('.pub') and line is string %}
{%-     set words = line.split() %}
{%-     if words | length >= 2 and (words[0] ~ ' ' ~ words[1]) | regex_match(pubkey_re) %}
{%-       do known_hosts_lines.append(where ~ ' ' ~ words[0] ~ ' ' ~ words[1]) %}
{%-     endif %}
{%-   endfor %}
{%- endfor %}
{%- if s.strict_host_key_checking not in ['yes', 'accept-new'] %}{% do problems.append('nagios:server:strict_host_key_checking must be yes (or accept-new)') %}{% endif %}
{%- for key in ['config_dir', 'staging_dir', 'nagios_bin', 'key', 'known_hosts', 'control_dir', 'cleaner', 'lock_file', 'status_file', 'log_file', 'check_result_path', 'command_file', 'query_socket', 'temp_file', 'temp_path', 'object_cache_file', 'precached_object_file', 'state_retention_file'] %}
{%-   if not (s[key] | string) | regex_match(path_re) %}{% do problems.append('nagios:server:' ~ key ~ ' must be an absolute path of [A-Za-z0-9_./-]') %}{% endif %}
{%- endfor %}
{%- if s.staging_dir == s.config_dir %}{% do problems.append('nagios:server:staging_dir must differ from config_dir') %}{% endif %}
{#- ControlPath + the 17 characters ssh appends while binding must fit a Unix socket path (108). #}
{%- if (s.control_dir | length) + 64 + 18 > 107 %}{% do problems.append('nagios:server:control_dir is too long for ssh control sockets (keep it under 25 characters)') %}{% endif %}
{%- if s.reload not in ['service', 'lockfile', 'none'] %}{% do problems.append('nagios:server:reload must be service, lockfile or none') %}{% endif %}
{%- if not (s.control_persist | string) | regex_match('^(yes|no|[0-9]+[smhdw]?)$') %}{% do problems.append('nagios:server:control_persist must be yes, no or a time like 10m') %}{% endif %}

{%- if problems %}
nagios-server-pillar:
  test.configurable_test_state:
    - changes: False
    - result: False
    - allow_test_mode_failure: True
    - comment: {{ ('nagios/server not applied, nothing changed: ' ~ problems | join('; ')) | json }}
{%- else %}
{%- set files = ['nagios.cfg', 'resource.cfg', 'webfarm.cfg'] %}
{%- set context = {'s': s, 'hosts': hosts, 'user': nagios.user, 'plugin_dir': nagios.plugin_dir} %}

{%- if s.pkgs %}
nagios-server-pkgs:
  pkg.installed:
    - pkgs: {{ s.pkgs | json }}
    - require_in:
      - cmd: nagios-server-key
      - cmd: nagios-server-verify
{%- endif %}

nagios-server-key-dir:
  file.directory:
    - name: {{ salt['file.dirname'](s.key) }}
    - user: {{ s.nagios_user }}
    - group: {{ s.nagios_group }}
    - mode: '0700'
    - makedirs: True

{%- if s.get('private_key') %}
nagios-server-key:
  file.managed:
    - name: {{ s.key }}
    - contents_pillar: nagios:server:private_key
    - show_changes: False
    - user: {{ s.nagios_user }}
    - group: {{ s.nagios_group }}
    - mode: '0600'
    - require:
      - file: nagios-server-key-dir
  cmd.run:
    - name: ssh-keygen -y -f {{ s.key }} > {{ s.key }}.pub && chmod 0644 {{ s.key }}.pub
    - onchanges:
      - file: nagios-server-key
{%- else %}
{#- Generated once; the public half is published to the mine for nagios/client. #}
nagios-server-key:
  cmd.run:
    - name: ssh-keygen -q -t ed25519 -N '' -C nagios@{{ grains.id }} -f {{ s.key }}
    - creates: {{ s.key }}
    - require:
      - file: nagios-server-key-dir

nagios-server-key-owner:
  file.managed:
    - names:
      - {{ s.key }}:
        - mode: '0600'
      - {{ s.key }}.pub:
        - mode: '0644'
    - replace: False
    - user: {{ s.nagios_user }}
    - group: {{ s.nagios_group }}
    - require:
      - cmd: nagios-server-key

nagios-server-publish-key:
  module.run:
    - mine.update: []
    - onchanges:
      - cmd: nagios-server-key
{%- endif %}

{%- if known_hosts_lines %}
nagios-server-known-hosts:
  file.managed:
    - name: {{ s.known_hosts }}
    - contents: {{ known_hosts_lines | json }}
    - user: {{ s.nagios_user }}
    - group: {{ s.nagios_group }}
    - mode: '0644'
    - makedirs: True
{%- endif %}

nagios-server-control-dir:
  file.directory:
    - name: {{ s.control_dir }}
    - user: {{ s.nagios_user }}
    - group: {{ s.nagios_group }}
    - mode: '0700'
    - makedirs: True

{%- if s.tmpfiles_dir %}
nagios-server-control-dir-at-boot:
  file.managed:
    - name: {{ s.tmpfiles_dir }}/webfarm-nagios-ssh.conf
    - contents: 'd {{ s.control_dir }} 0700 {{ s.nagios_user }} {{ s.nagios_group }} -'
    - mode: '0644'
{%- endif %}

nagios-server-cleaner:
  file.managed:
    - name: {{ s.cleaner }}
    - source: salt://nagios/files/nagios-ssh-clean.py
    - user: root
    - group: root
    - mode: '0755'
    - makedirs: True

nagios-server-hosts-list:
  file.managed:
    - name: {{ s.config_dir }}/webfarm-hosts.list
    - contents: {{ (hosts | map(attribute='name') | join('\n') ~ '\n') | json }}
    - mode: '0644'
    - makedirs: True

{%- if s.cleaner_cron %}
nagios-server-cleaner-cron:
  cron.present:
    - name: {{ s.cleaner }} {{ s.control_dir }} --hosts-file {{ s.config_dir }}/webfarm-hosts.list
    - user: {{ s.nagios_user }}
    - identifier: webfarm-nagios-ssh-clean
    - require:
      - file: nagios-server-cleaner
      - file: nagios-server-hosts-list
{%- endif %}

nagios-server-check-result-path:
  file.directory:
    - names:
      - {{ s.check_result_path }}
      - {{ salt['file.dirname'](s.command_file) }}
    - user: {{ s.nagios_user }}
    - group: {{ s.nagios_group }}
    - mode: '0750'
    - makedirs: True

{%- if not hosts %}

nagios-server-config:
  test.configurable_test_state:
    - changes: False
    - result: True
    - comment: "No host to monitor yet (none named by pillar webfarm:topology or nagios:server:hosts): Nagios config left as it is"
{%- else %}
{%- for f in files %}

nagios-server-staged-{{ f }}:
  file.managed:
    - name: {{ s.staging_dir }}/{{ f }}
    - source: salt://nagios/files/{{ f }}.jinja
    - template: jinja
    - context: {{ context | json }}
    - user: root
    - group: {{ s.nagios_group }}
    - mode: '0640'
    - makedirs: True
    - require_in:
      - cmd: nagios-server-verify
{%- endfor %}

{#- Runs whenever staging differs from live; a failure stops the copy below. #}
nagios-server-verify:
  cmd.run:
    - name: {{ s.nagios_bin }} -v {{ s.staging_dir }}/nagios.cfg
    - unless:
{%- for f in files %}
      - cmp -s {{ s.staging_dir }}/{{ f }} {{ s.config_dir }}/{{ f }}
{%- endfor %}
    - require:
      - file: nagios-server-check-result-path

{%- for f in files %}

nagios-server-live-{{ f }}:
  file.managed:
    - name: {{ s.config_dir }}/{{ f }}
    - source: {{ s.staging_dir }}/{{ f }}
    - user: root
    - group: {{ s.nagios_group }}
    - mode: '0640'
    - makedirs: True
    - require:
      - cmd: nagios-server-verify
{%- endfor %}

{%- if s.reload == 'service' %}

nagios-server-service:
  service.running:
    - name: {{ s.service }}
    - enable: True
    - reload: True
    - watch:
{%- for f in files %}
      - file: nagios-server-live-{{ f }}
{%- endfor %}
{%- elif s.reload == 'lockfile' %}
{%-   set pid = (salt['file.read'](s.lock_file) | trim) if salt['file.file_exists'](s.lock_file) else '' %}
{%-   if pid | regex_match('^[0-9]+$') and 'nagios' in (salt['file.readlink']('/proc/' ~ pid ~ '/exe') if salt['file.file_exists']('/proc/' ~ pid ~ '/exe') else '') %}

nagios-server-reload:
  cmd.run:
    - name: kill -HUP {{ pid }}
    - onchanges:
{%- for f in files %}
      - file: nagios-server-live-{{ f }}
{%- endfor %}
{%-   endif %}
{%- endif %}
{%- endif %}
{%- endif %}
