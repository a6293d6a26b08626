{#- salt-run state.orchestrate orch.cluster [pillar='{"orch": {"member_wait": 120}}']
    salt-run state.orchestrate orch.cluster pillar='{"orch": {"batch": "10%"}}'
    Brings a fresh cluster to convergence in dependency order (every step a highstate by role,
    salt/states/top.sls):
      1. saltutil.sync_all on the master (runners) and every minion, then a pillar refresh;
      2. mine.update everywhere: each host publishes itself (nagios pillar mine_functions);
      3. the monitor's nagios.server: builds its hosts from the mine, generates its key and
         publishes it (mine.update), which nagios.client everywhere needs;
      4. highstate on the clients (every minion that is not the monitor or an LB);
      5. highstate on the monitor (its own nagios.client now finds its key);
      6. each site's LBs wait until the site's farm members (pillar topology) answer HTTP 200
         (webfarm.wait_http, orch:member_wait seconds, default 120; 0 skips; a member that
         does not answer in time fails the wait and stops the LB steps), then highstate on
         the site LBs and after them on the primary LBs.
    orch:batch (a count or a percentage, default all at once) runs each highstate step on
    that many minions at a time.
    A step that fails stops the ones after it; a role without minions is skipped. Targets are by grain webfarm:role (what a
    minion applies to itself); the members waited for are the ones the pillar topology names.
    Once this ran, a plain `salt '*' state.apply` converges (the mine holds every host and
    the monitor's key); run this again after adding hosts or a monitor. -#}
{%- set topo = salt['pillar.get']('webfarm:topology', {}) or {} %}
{%- set wait = salt['pillar.get']('orch:member_wait', 120) | int %}
{%- set lbs = 'G@webfarm:role:lb-primary or G@webfarm:role:lb-site' %}
{%- set batch = salt['pillar.get']('orch:batch') %}

webfarm-sync-master:
  salt.runner:
    - name: saltutil.sync_all

webfarm-sync-minions:
  salt.function:
    - name: saltutil.sync_all
    - tgt: '*'
    - require:
      - salt: webfarm-sync-master

webfarm-refresh-pillar:
  salt.function:
    - name: saltutil.refresh_pillar
    - tgt: '*'
    - kwarg:
        wait: true
    - require:
      - salt: webfarm-sync-minions

webfarm-mine-publish:
  salt.function:
    - name: mine.update
    - tgt: '*'
    - require:
      - salt: webfarm-refresh-pillar

webfarm-monitor-server:
  salt.state:
    - expect_minions: false
    - tgt: 'webfarm:role:monitor'
    - tgt_type: grain
    - sls: nagios.server
    - allow_fail: 0
    - require:
      - salt: webfarm-mine-publish

webfarm-clients:
  salt.state:
    - expect_minions: false
    - tgt: '* and not G@webfarm:role:monitor and not ( {{ lbs }} )'
    - tgt_type: compound
    - highstate: true
{%- if batch %}
    - batch: {{ batch | string | json }}
{%- endif %}
    - require:
      - salt: webfarm-monitor-server

webfarm-monitor:
  salt.state:
    - expect_minions: false
    - tgt: 'webfarm:role:monitor'
    - tgt_type: grain
    - highstate: true
{%- if batch %}
    - batch: {{ batch | string | json }}
{%- endif %}
    - require:
      - salt: webfarm-clients

{%- set waits = [] %}
{%- for site, conf in (topo.get('sites') or {}) | dictsort if conf is mapping %}
{%-   set site_lbs = (conf.get('lbs') or []) | selectattr('id', 'defined') | map(attribute='id') | list %}
{%-   for farm, fconf in (conf.get('farms') or {}) | dictsort if wait > 0 and site_lbs %}
{%-     for n, member in (fconf.get('members') or {}) | dictsort if member.get('address') %}
{%-       set sid = 'webfarm-answers-' ~ site ~ '-' ~ farm ~ '-' ~ n %}
{%-       do waits.append(sid) %}

{{ sid }}:
  salt.function:
    - name: webfarm.wait_http
    - tgt: {{ site_lbs | join(',') | json }}
    - tgt_type: list
    - arg:
      - http://{{ member.address }}:{{ member.get('port', 80) }}/
    - kwarg:
        timeout: {{ wait }}
        interval: 1
    - require:
      - salt: webfarm-clients
{%-     endfor %}
{%-   endfor %}
{%- endfor %}

webfarm-lb-site:
  salt.state:
    - expect_minions: false
    - tgt: 'webfarm:role:lb-site'
    - tgt_type: grain
    - highstate: true
{%- if batch %}
    - batch: {{ batch | string | json }}
{%- endif %}
    - require:
      - salt: webfarm-monitor
{%- for sid in waits %}
      - salt: {{ sid }}
{%- endfor %}

webfarm-lb-primary:
  salt.state:
    - expect_minions: false
    - tgt: 'webfarm:role:lb-primary'
    - tgt_type: grain
    - highstate: true
{%- if batch %}
    - batch: {{ batch | string | json }}
{%- endif %}
    - require:
      - salt: webfarm-lb-site
