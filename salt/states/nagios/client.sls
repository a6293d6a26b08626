{#- Monitored host: the restricted check user Nagios logs in as with check_by_ssh.

    Trust from the master: the monitors, their source addresses and their keys come from
    pillar (nagios:monitors, or the monitor entries of webfarm:topology); a monitor's key may
    come from the mine, but only from the minion ID the pillar names. Each key gets its own
    from= list (IP/CIDR only).

    The key is `restrict,from=...,command="webfarm-nagios-dispatch <table>"`, and an sshd
    drop-in forces the same command for the user: sshd never runs what the client asked for,
    the dispatcher (root-owned) matches it against the check table (pillar) and runs only a
    configured plugin, without a shell, with an empty environment, rlimits and a timeout.
    The user's login shell is still the seed's wrapper: `bash --restricted` with PATH set to
    a root-owned directory of links to the allowed plugins (defence in depth). #}
{%- from "nagios/map.jinja" import nagios, name_re, path_re, from_re, check_re, pubkey_re, dispatch_name with context %}
{%- set c = nagios.client %}
{%- set sd = c.sshd %}
{%- set user = nagios.user %}
{%- set problems = [] %}
{%- set forced = dispatch_name ~ ' ' ~ c.check_table %}

{#- Monitors: pillar nagios:monitors {id: {from, pubkey}}, else webfarm:topology monitor entries. #}
{%- set topo_monitors = salt['pillar.get']('webfarm:topology:monitor', []) %}
{%- set topo_monitors = [topo_monitors] if topo_monitors is mapping else (topo_monitors | list) %}
{%- set topo_address = {} %}
{%- for entry in topo_monitors if entry is mapping and entry.get('id') %}
{%-   do topo_address.update({entry.id | string: entry.get('address')}) %}
{%- endfor %}
{%- set named = nagios.monitors if nagios.monitors else dict.fromkeys(topo_address.keys(), {}) %}
{%- set monitors = [] %}
{%- for mid, entry in named | dictsort %}
{%-   set entry = entry if entry is mapping else {} %}
{%-   if not (mid | string) | regex_match(name_re) %}
{%-     do problems.append('monitor id ' ~ mid ~ ' is not a minion id') %}
{%-   else %}
{%-     set sources = (entry.get('from') or ([topo_address[mid]] if topo_address.get(mid) else [])) %}
{%-     set sources = [sources] if sources is string else (sources | list) %}
{%-     set key = entry.get('pubkey') %}
{%-     if not key %}
{%-       set key = salt['mine.get'](mid, nagios.mine_pubkey_function).get(mid) %}
{%-     endif %}
{%-     set key = key.strip() if key is string else '' %}
{%-     if not sources %}{% do problems.append('monitor ' ~ mid ~ ': no source address (nagios:monitors:' ~ mid ~ ':from or its webfarm:topology address)') %}{% endif %}
{%-     for src in sources %}
{%-       if not (src | string) | regex_match(from_re) %}{% do problems.append('monitor ' ~ mid ~ ': from entry ' ~ src ~ ' is not an IP address or CIDR network') %}{% endif %}
{%-     endfor %}
{%-     if not key %}
{%-       do problems.append('monitor ' ~ mid ~ ': no public key (nagios:monitors:' ~ mid ~ ':pubkey, or ' ~ nagios.mine_pubkey_function ~ ' in its mine)') %}
{%-     elif not key | regex_match(pubkey_re) %}
{%-       do problems.append('monitor ' ~ mid ~ ': pubkey is not an OpenSSH public key line: ' ~ key[:40]) %}
{%-     endif %}
{%-     do monitors.append({'id': mid, 'from': sources, 'pubkey': key}) %}
{%-   endif %}
{%- endfor %}
{%- if not named %}{% do problems.append('no monitoring host: set nagios:monitors or a monitor in webfarm:topology') %}{% endif %}

{#- The check table: pillar nagios:checks (patterns) + every check nagios/server runs over ssh. #}
{%- set table = [] %}
{%- for entry in nagios.checks %}
{%-   if entry is not mapping or not (entry.get('plugin') | string) | regex_match(name_re) %}
{%-     do problems.append('nagios:checks entry ' ~ entry ~ ' needs a plugin name') %}
{%-   else %}
{%-     set out = {'plugin': entry.plugin} %}
{%-     if entry.get('argv') is not none %}{% do out.update({'argv': entry.argv | map('string') | list}) %}{% else %}{% do out.update({'args': (entry.get('args') or []) | map('string') | list}) %}{% endif %}
{%-     if entry.get('verbose') %}{% do out.update({'verbose': True}) %}{% endif %}
{%-     do table.append(out) %}
{%-   endif %}
{%- endfor %}
{%- set server_checks = [] %}
{%- for role, services in nagios.server.services | dictsort %}{% do server_checks.extend(services or []) %}{% endfor %}
{%- for host, h in nagios.server.hosts | dictsort %}{% do server_checks.extend(h.get('services') or []) %}{% endfor %}
{%- for svc in server_checks if svc.get('command', 'check_by_ssh') == 'check_by_ssh' %}
{%-   set check = svc.get('check', '') | string %}
{%-   if not check | regex_match(check_re) %}
{%-     do problems.append('check ' ~ check ~ ' must be a plugin and arguments of [A-Za-z0-9_.,:%/ =@+-]') %}
{%-   else %}
{%-     set words = check.split() %}
{%-     do table.append({'plugin': words[0], 'argv': words[1:]}) %}
{%-   endif %}
{%- endfor %}
{%- for entry in table if entry.plugin not in c.plugins %}
{%-   do problems.append('check plugin ' ~ entry.plugin ~ ' is not in the allow-list nagios:client:plugins') %}
{%- endfor %}
{%- for key in ['timeout'] %}
{%-   if not (c[key] | string) | regex_match('^[0-9]{1,4}$') or (c[key] | int) < 1 %}{% do problems.append('nagios:client:' ~ key ~ ' must be a number of seconds') %}{% endif %}
{%- endfor %}
{%- for key, value in c.limits | dictsort %}
{%-   if key not in ['cpu', 'nproc', 'as_mb', 'nofile', 'fsize_kb'] or not (value | string) | regex_match('^[0-9]{1,7}$') %}{% do problems.append('nagios:client:limits:' ~ key ~ ' must be one of cpu, nproc, as_mb, nofile, fsize_kb with a whole number') %}{% endif %}
{%- endfor %}

{%- if not user | regex_match(name_re) %}{% do problems.append('nagios:user ' ~ user ~ ' is not a valid user name') %}{% endif %}
{%- for key in ['home', 'shell', 'checks_dir', 'dispatcher', 'check_table'] %}
{%-   if not c[key] | regex_match(path_re) %}{% do problems.append('nagios:client:' ~ key ~ ' must be an absolute path of [A-Za-z0-9_./-], got ' ~ c[key]) %}{% endif %}
{%- endfor %}
{%- if not nagios.plugin_dir | regex_match(path_re) %}{% do problems.append('nagios:plugin_dir must be an absolute path') %}{% endif %}
{#- Plugins that run another program of the caller's choice would undo the restricted shell. #}
{%- set forbidden = ['negate', 'check_by_ssh', 'urlize', 'check_nrpe', 'utils.sh', 'utils.pm', dispatch_name] %}
{%- for plugin in c.plugins %}
{%-   if not plugin | regex_match(name_re) %}
{%-     do problems.append('plugin name ' ~ plugin ~ ' must be a plain file name') %}
{%-   elif plugin in forbidden %}
{%-     do problems.append('plugin ' ~ plugin ~ ' runs arbitrary commands and may not be linked for the check user') %}
{%-   elif not salt['file.file_exists'](nagios.plugin_dir ~ '/' ~ plugin) %}
{%-     do problems.append('plugin ' ~ plugin ~ ' not found in ' ~ nagios.plugin_dir ~ ' (install monitoring-plugins)') %}
{%-   endif %}
{%- endfor %}

{#- sshd side: a drop-in where the main config includes the drop-in's directory. #}
{%- for key in ['bin', 'config', 'dropin', 'staging_dir'] %}
{%-   if not (sd[key] | string) | regex_match(path_re) %}{% do problems.append('nagios:client:sshd:' ~ key ~ ' must be an absolute path of [A-Za-z0-9_./-]') %}{% endif %}
{%- endfor %}
{%- if sd.reload not in ['service', 'pidfile', 'none'] %}{% do problems.append('nagios:client:sshd:reload must be service, pidfile or none') %}{% endif %}
{%- set dropin_dir = salt['file.dirname'](sd.dropin) %}
{%- set main_config = salt['file.read'](sd.config) if sd.manage and salt['file.file_exists'](sd.config) else '' %}
{%- set sshd_included = sd.manage and (main_config | regex_search('(?mi)^[ \t]*Include[ \t]+(.*[ \t])?' ~ (dropin_dir | regex_escape) ~ '/[*](\\.conf)?([ \t].*)?$')) is not none %}

{%- if problems %}
nagios-client-pillar:
  test.configurable_test_state:
    - changes: False
    - result: False
    - allow_test_mode_failure: True
    - comment: {{ ('nagios/client not applied, nothing changed: ' ~ problems | join('; ')) | json }}
{%- else %}

{%- if c.pkgs %}
nagios-client-pkgs:
  pkg.installed:
    - pkgs: {{ c.pkgs | json }}
    - require_in:
      - file: nagios-client-shell
{%- endif %}

nagios-client-shell:
  file.managed:
    - name: {{ c.shell }}
    - source: salt://nagios/files/rshell.sh.jinja
    - template: jinja
    - context:
        user: {{ user }}
        checks_dir: {{ c.checks_dir }}
        home: {{ c.home }}
        shell: {{ c.shell }}
    - user: root
    - group: root
    - mode: '0755'
    - makedirs: True


nagios-client-dispatcher:
  file.managed:
    - name: {{ c.dispatcher }}
    - source: salt://nagios/files/nagios-dispatch.py
    - user: root
    - group: root
    - mode: '0755'
    - makedirs: True

nagios-client-check-table:
  file.managed:
    - name: {{ c.check_table }}
    - contents: {{ {'checks_dir': c.checks_dir, 'timeout': c.timeout | int, 'limits': c.limits, 'checks': table} | json | json }}
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: True

nagios-client-check-{{ dispatch_name }}:
  file.symlink:
    - name: {{ c.checks_dir }}/{{ dispatch_name }}
    - target: {{ c.dispatcher }}
    - user: root
    - group: root
    - makedirs: True
    - force: True
    - require:
      - file: nagios-client-dispatcher
{%- for plugin in c.plugins %}

nagios-client-check-{{ plugin }}:
  file.symlink:
    - name: {{ c.checks_dir }}/{{ plugin }}
    - target: {{ nagios.plugin_dir }}/{{ plugin }}
    - user: root
    - group: root
    - makedirs: True
    - force: True
{%- endfor %}

{#- clean: links not in the pillar list are removed; root owns it and everything in it. #}
nagios-client-checks-dir:
  file.directory:
    - name: {{ c.checks_dir }}
    - user: root
    - group: root
    - mode: '0755'
    - clean: True
    - require:
      - file: nagios-client-check-{{ dispatch_name }}
{%- for plugin in c.plugins %}
      - file: nagios-client-check-{{ plugin }}
{%- endfor %}

nagios-client-user:
  user.present:
    - name: {{ user }}
    - home: {{ c.home }}
    - createhome: False
    - shell: {{ c.shell }}
    {#- "*" never matches a password, but unlike "!" it does not lock the account for keys. #}
    - password: '*'
    - system: True
    - usergroup: True
    - require:
      - file: nagios-client-shell

nagios-client-home:
  file.directory:
    - name: {{ c.home }}
    - user: root
    - group: root
    - mode: '0755'
    - makedirs: True

nagios-client-ssh-dir:
  file.directory:
    - name: {{ c.home }}/.ssh
    - user: root
    - group: root
    - mode: '0755'
    - require:
      - file: nagios-client-home

{#- One line per monitor key, each with its own monitor's from= list; `restrict` turns off
    forwarding, ptys and ~/.ssh/rc, command= replaces whatever the client asks for. #}
nagios-client-authorized-keys:
  file.managed:
    - name: {{ c.home }}/.ssh/authorized_keys
    - user: root
    - group: root
    - mode: '0644'
    - contents:
{%- for m in monitors %}
      - {{ ('restrict,from="' ~ (m['from'] | join(',')) ~ '",command="' ~ forced ~ '" ' ~ m.pubkey) | json }}
{%- endfor %}
    - require:
      - file: nagios-client-ssh-dir
      - file: nagios-client-checks-dir
      - file: nagios-client-check-table
      - user: nagios-client-user

{%- if sd.manage and not sshd_included %}

nagios-client-sshd:
  test.configurable_test_state:
    - changes: False
    - result: True
    - comment: {{ ('WARNING: ' ~ sd.config ~ ' has no Include of ' ~ dropin_dir ~ '/*.conf (or is missing): the sshd drop-in (ForceCommand, DisableForwarding, PermitTTY no) is not managed; the key options still force the dispatcher') | json }}
{%- elif sd.manage %}
{%-   set staged = sd.staging_dir ~ '/' ~ salt['file.basename'](sd.dropin) %}
{%-   set check_config = sd.staging_dir ~ '/sshd_config.check' %}

{#- Staged, checked with `sshd -t` (the main config plus the new drop-in), then made live. #}
nagios-client-sshd-staged:
  file.managed:
    - names:
      - {{ staged }}:
        - source: salt://nagios/files/sshd-dropin.conf.jinja
        - template: jinja
        - context:
            user: {{ user }}
            forced: {{ forced }}
      - {{ check_config }}:
        - contents: {{ ('# sshd -t of ' ~ sd.config ~ ' with the staged drop-in (nagios/client)\nInclude ' ~ sd.config ~ '\nInclude ' ~ staged ~ '\n') | json }}
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: True

nagios-client-sshd-verify:
  cmd.run:
    - name: {{ sd.bin }} -t -f {{ check_config }}
    - unless: cmp -s {{ staged }} {{ sd.dropin }}
    - require:
      - file: nagios-client-sshd-staged

nagios-client-sshd-dropin:
  file.managed:
    - name: {{ sd.dropin }}
    - source: {{ staged }}
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - cmd: nagios-client-sshd-verify
      - file: nagios-client-authorized-keys

{%-   if sd.reload == 'service' %}

nagios-client-sshd-reload:
  module.run:
    - service.reload:
      - name: {{ sd.service }}
    - onchanges:
      - file: nagios-client-sshd-dropin
{%-   elif sd.reload == 'pidfile' %}
{%-     set pid = (salt['file.read'](sd.pidfile) | trim) if salt['file.file_exists'](sd.pidfile) else '' %}
{%-     if pid | regex_match('^[0-9]+$') and 'sshd' in (salt['file.readlink']('/proc/' ~ pid ~ '/exe') if salt['file.file_exists']('/proc/' ~ pid ~ '/exe') else '') %}

nagios-client-sshd-reload:
  cmd.run:
    - name: kill -HUP {{ pid }}
    - onchanges:
      - file: nagios-client-sshd-dropin
{%-     endif %}
{%-   endif %}
{%- endif %}
{%- endif %}
