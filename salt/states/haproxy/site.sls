# Site LB: balances its site's farms with cookie FARMID. Settings: pillar haproxy (site);
# the site is pillar haproxy:site:name, else grain webfarm:site.
haproxy-site:
  haproxy_tier.configured:
    - tier: site
    - start: {{ salt['pillar.get']('haproxy:start', True) }}
