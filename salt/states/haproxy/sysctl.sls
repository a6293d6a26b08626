# Connection-rate tuning of an LB host (listen/SYN backlogs, SYN cookies, ports, TIME-WAIT,
# file descriptors, conntrack): every value and why in haproxy/defaults.yaml (sysctl);
# override or add keys in pillar haproxy:sysctl.
haproxy-sysctl:
  haproxy_tier.sysctl_tuned:
    - netns: {{ salt['pillar.get']('haproxy:sysctl_netns', None) | json }}
    - persist: {{ salt['pillar.get']('haproxy:sysctl_persist', '/etc/sysctl.d/60-webfarm-haproxy.conf') | json }}
