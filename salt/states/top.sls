{#- The highstate by role: grain webfarm:role picks the SLS (webfarm/roles.yaml), every minion
    gets motd, less, nagios.client and webfarm.role_check (fails a minion with an unknown or
    missing role). What depends on the host or on this minion's pillar is added here:
    upgrade.binhost (web) / upgrade.buildhost (preprod) where os_family is Gentoo, policyroute where
    pillar policyroute is given, haproxy.vrrp on an LB whose tier has a VIP
    in webfarm:topology (primary_vip, or sites:<site>:vip of the site whose lbs list this
    minion). The role only chooses what a minion applies to itself; farm, LB and monitoring
    membership comes from the pillar topology. -#}
{%- import_yaml "webfarm/roles.yaml" as roles %}
{%- set topo = salt['pillar.get']('webfarm:topology', {}) or {} %}
{%- set gentoo = grains.get('os_family') == 'Gentoo' %}
{%- set site_vip = [] %}
{%- for site in (topo.get('sites') or {}).values() if site is mapping %}
{%-   if (site.get('vip') or {}).get('address') and grains['id'] in (site.get('lbs') or []) | map(attribute='id') | list %}
{%-     do site_vip.append(site['vip']['address']) %}
{%-   endif %}
{%- endfor %}
{%- set extras = {
    'web': ['upgrade.binhost'] if gentoo else [],
    'preprod': ['upgrade.buildhost'] if gentoo else [],
    'lb-primary': ['haproxy.vrrp'] if (topo.get('primary_vip') or {}).get('address') else [],
    'lb-site': ['haproxy.vrrp'] if site_vip else [],
} %}
base:
  '*':
    - motd
    - less
    - nagios.client
    - webfarm.role_check
{%- if salt['pillar.get']('policyroute') is mapping %}
    - policyroute
{%- endif %}
{%- for role, sls in roles | dictsort %}
  'webfarm:role:{{ role }}':
    - match: grain
{%-   for name in sls + extras.get(role, []) %}
    - {{ name }}
{%-   endfor %}
{%- endfor %}
