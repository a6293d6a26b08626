{#- The log store's indexes: TTL on the request time (retention_days) and the optional query
    indexes; runs only when accesslog.store_differs says the store is not as wanted. -#}
{%- from "accesslog/map.jinja" import store with context %}
{%- set wanted = {} %}
{%- for key in ('retention_days', 'index_url', 'index_ip') %}
{%-   if key in store %}{% do wanted.update({key: store[key]}) %}{% endif %}
{%- endfor %}

accesslog-store-indexes:
  module.run:
    - accesslog.ensure_indexes:
{%- for key, value in wanted.items() %}
      - {{ key }}: {{ value | json }}
{%- endfor %}
    - onlyif:
      - fun: accesslog.store_differs
{%- for key, value in wanted.items() %}
        {{ key }}: {{ value | json }}
{%- endfor %}
