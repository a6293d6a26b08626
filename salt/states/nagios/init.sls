{#- A monitoring host gets both sides (it monitors itself too); every other minion the client. #}
include:
  - nagios.client
{%- if salt['grains.get']('webfarm:role') == 'monitor' %}
  - nagios.server
{%- endif %}
