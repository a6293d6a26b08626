# VRRP failover of this LB's tier(s): keepalived moves the tier's VIP (webfarm:topology
# primary_vip / sites:<site>:vip) to another LB of the tier when this HAProxy or host dies.
# Settings and the password: pillar haproxy:vrrp (see pillar/haproxy.sls).
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
