{#- Monitored host: the restricted check user Nagios logs in as with check_by_ssh.

    The user's login shell is a wrapper that runs `bash --restricted` with PATH set to a
    root-owned directory of links to the allowed plugins; its key in authorized_keys may
    only run commands, only from the monitoring hosts. #}
{%- from "nagios/map.jinja" import nagios, name_re, path_re, from_re, pubkey_re with context %}
{%- set c = nagios.client %}
{%- set user = nagios.user %}
{%- set problems = [] %}

{%- set sources = c['from'] | list %}
{%- set pubkeys = c.pubkeys | list %}
{%- if not sources or not pubkeys %}
{%-   set monitors = salt['mine.get'](nagios.monitor_target, nagios.mine_host_function, tgt_type=nagios.monitor_target_type) %}
{%-   if not sources %}
{%-     for mid, entry in monitors | dictsort %}
{%-       set grains = entry if entry is mapping else {} %}
{%-       set addr = grains.get('webfarm', {}).get('address') or (grains.get('ipv4', []) | reject('match', '^127[.]') | first) %}
{%-       if addr %}{% do sources.append(addr) %}{% endif %}
{%-     endfor %}
{%-   endif %}
{%-   if not pubkeys %}
{%-     set published = salt['mine.get'](nagios.monitor_target, nagios.mine_pubkey_function, tgt_type=nagios.monitor_target_type) %}
{%-     for mid, key in published | dictsort %}
{%-       if key is string and key.strip() %}{% do pubkeys.append(key.strip()) %}{% endif %}
{%-     endfor %}
{%-   endif %}
{%- endif %}

{%- if not user | regex_match(name_re) %}{% do problems.append('nagios:user ' ~ user ~ ' is not a valid user name') %}{% endif %}
{%- for key in ['home', 'shell', 'checks_dir'] %}
{%-   if not c[key] | regex_match(path_re) %}{% do problems.append('nagios:client:' ~ key ~ ' must be an absolute path of [A-Za-z0-9_./-], got ' ~ c[key]) %}{% endif %}
{%- endfor %}
{%- if not nagios.plugin_dir | regex_match(path_re) %}{% do problems.append('nagios:plugin_dir must be an absolute path') %}{% endif %}
{%- if not sources %}{% do problems.append('no monitoring host address: set nagios:client:from or publish ' ~ nagios.mine_host_function ~ ' in the mine of the monitoring hosts') %}{% endif %}
{%- for src in sources %}
{%-   if not src | string | regex_match(from_re) %}{% do problems.append('nagios:client:from entry ' ~ src ~ ' is not an address or pattern') %}{% endif %}
{%- endfor %}
{%- if not pubkeys %}{% do problems.append('no monitoring public key: set nagios:client:pubkeys or publish ' ~ nagios.mine_pubkey_function ~ ' in the mine of the monitoring hosts') %}{% endif %}
{%- for key in pubkeys %}
{%-   if not key | regex_match(pubkey_re) %}{% do problems.append('nagios:client:pubkeys entry is not an OpenSSH public key line: ' ~ key[:40]) %}{% endif %}
{%- endfor %}
{#- Plugins that run another program of the caller's choice would undo the restricted shell. #}
{%- set forbidden = ['negate', 'check_by_ssh', 'urlize', 'check_nrpe', 'utils.sh', 'utils.pm'] %}
{%- for plugin in c.plugins %}
{%-   if not plugin | regex_match(name_re) %}
{%-     do problems.append('plugin name ' ~ plugin ~ ' must be a plain file name') %}
{%-   elif plugin in forbidden %}
{%-     do problems.append('plugin ' ~ plugin ~ ' runs arbitrary commands and may not be linked for the check user') %}
{%-   elif not salt['file.file_exists'](nagios.plugin_dir ~ '/' ~ plugin) %}
{%-     do problems.append('plugin ' ~ plugin ~ ' not found in ' ~ nagios.plugin_dir ~ ' (install monitoring-plugins)') %}
{%-   endif %}
{%- endfor %}

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

nagios-client-authorized-keys:
  file.managed:
    - name: {{ c.home }}/.ssh/authorized_keys
    - user: root
    - group: root
    - mode: '0644'
    - contents:
{%- for key in pubkeys %}
      - 'no-agent-forwarding,no-port-forwarding,no-pty,no-X11-forwarding,no-user-rc,from="{{ sources | join(',') }}" {{ key }}'
{%- endfor %}
    - require:
      - file: nagios-client-ssh-dir
      - user: nagios-client-user
{%- endif %}
