# Primary LB: balances the sites' LBs with cookie SITEID. Settings: pillar haproxy (primary).
haproxy-primary:
  haproxy_tier.configured:
    - tier: primary
    - start: {{ salt['pillar.get']('haproxy:start', True) }}
