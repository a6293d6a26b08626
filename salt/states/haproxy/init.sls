# The HAProxy tier(s) of this minion, by grain webfarm:role (lb-primary, lb-site).
{% set role = salt['grains.get']('webfarm:role', '') %}
{% set tiers = {'lb-primary': 'haproxy.primary', 'lb-site': 'haproxy.site'} %}
{% if role in tiers %}
include:
  - {{ tiers[role] }}
{% else %}
haproxy-not-an-lb:
  test.nop:
    - name: "webfarm:role is {{ role or 'unset' }}: no HAProxy tier here"
{% endif %}
