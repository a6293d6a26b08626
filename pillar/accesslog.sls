# Access-log shipping (issue 5): Apache access logs -> MongoDB on the log store.
# pillar/top.sls gives it to the web and logstore roles; the host's `webfarm:role` grain picks
# how its logs travel (see salt/states/accesslog/init.sls). Store credentials come from
# pillar/secrets/accesslog.sls (the operator's; see accesslog.sls.example).
{%- from "webfarm/members.jinja" import secret_text, topo with context %}
{%- set secret = secret_text('accesslog') | load_yaml or {} %}
{%- set role = salt['grains.get']('webfarm:role', '') %}
{%- set logstore = salt['pillar.get']('webfarm:topology:logstore') or topo.get('logstore') or {} %}
accesslog:
  # piped: Apache GlobalLog "||shipper" (default); syslog_ng: syslog-ng follows access.log and
  # forwards to the log host; batch: a daily cron job imports access.log.1; none.
  mode: {{ 'piped' if role == 'web' else 'none' }}
  # The log host runs syslog-ng with a program() destination into its own shipper.
  log_host: {{ role == 'logstore' }}
  # Where the store's indexes and TTL are managed (accesslog/store.sls).
  store_admin: {{ role == 'logstore' }}
  log_format: combined            # an Apache nickname or a LogFormat string
  # true: the store requires auth; a store URI without credentials (no secrets/accesslog.sls)
  # then fails the accesslog SLS with a clear comment instead of writing the shipper's config.
  require_store_credentials: false
  store:
    # With credentials: store_uri of secrets/accesslog.sls (the shipper's config file is 0600).
    uri: {{ (secret.get('store_uri') or 'mongodb://' ~ logstore.get('address', '127.0.0.1') ~ ':' ~ logstore.get('port', 27017) ~ '/') | json }}
    database: weblogs
    collection: access
    dead_letter_collection: access_deadletter
    retention_days: 30            # TTL index on the request time
    # Query indexes: visitors(url) uses {path, time}, hits(ip) uses {ip, time}. Each costs
    # insert speed (bench/accesslog.py measures both); turn off on an ingest-bound store.
    index_url: true
    index_ip: true
    # Sharded cluster at 500+ web servers: shard the collection on {path: 1, _id: 1}
    # (see salt/_utils/webfarm_accesslog.py for why).
  shipper:                        # overrides of the shipper's settings (its --help)
    batch_size: 1000
    flush_interval: 1.0
    spool_max_bytes: 1073741824   # 1 GiB of spool per web server while the store is away
    spool_alert_ratio: 0.8        # then /var/spool/webfarm-shipper/ALERT appears
    on_spool_full: drop           # drop (counted, logged) or block (Apache stalls)
    drain_timeout: 10
  syslog:
    log_host_address: {{ logstore.get('address', '127.0.0.1') }}
    port: 6514
  batch:
    files: [/var/log/apache2/access.log.1]
    hour: 6
    minute: 47
