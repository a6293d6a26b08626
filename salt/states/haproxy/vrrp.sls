# VRRP failover of this LB's tier(s): keepalived moves the tier's VIP (webfarm:topology
# primary_vip / sites:<site>:vip) to another LB of the tier when this HAProxy or host dies.
# Settings: pillar haproxy:vrrp (see pillar/haproxy.sls); VRRPv3 by default, why in README.md here.
{% if salt['pillar.get']('haproxy:vrrp:install_package', True) %}
haproxy-vrrp-packages:
  pkg.installed:
    - pkgs: [keepalived, curl]
    - require_in:
      - haproxy_tier: haproxy-vrrp
{% endif %}

haproxy-vrrp:
  haproxy_tier.vrrp_configured:
    - start: {{ salt['pillar.get']('haproxy:start', True) }}
