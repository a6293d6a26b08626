{#- PHP side by side: every version of pillar upgrade:php:versions gets its own interpreter
    location (copied with rsync when the version names a `source`), its own php.ini and FPM
    pool (own port); the vhost handler and the `active` link point at upgrade:php:version.
    Switching versions is a pillar change plus this SLS: nothing of the other versions moves. -#}
{%- set php = salt['pillar.get']('upgrade:php', {}) %}
{%- set versions = php.get('versions', {}) %}
{%- set active = php.get('version') | string %}
{%- set base = php.get('base', '/etc/webfarm/php') %}
{%- set prefix = php.get('prefix', '/opt/php') %}
{%- set vhost = php.get('vhost', '/etc/apache2/conf-available/webfarm-php.conf') %}
{%- set port_base = php.get('pool_port_base', 9000) | int %}
{%- set docroot = salt['pillar.get']('upgrade:root', '/srv/www/app') ~ '/current' %}

{%- macro port(version) -%}
{%- set parts = (version | string).split('.') -%}
{{ port_base + (parts[0] | int) * 10 + ((parts[1] if parts | length > 1 else 0) | int) }}
{%- endmacro %}

{%- if active not in versions %}
php-version-unknown:
  test.fail_without_changes:
    - name: php-versions
    - comment: "upgrade:php:version {{ active }} is not one of upgrade:php:versions ({{ versions | join(', ') or 'none' }}): add it there first"
{%- else %}
{%- for version, conf in versions | dictsort %}
{%- set version = version | string %}
{%- set conf = conf or {} %}
{%- if conf.get('source') %}
php-{{ version }}-interpreter:
  rsync.synchronized:
    - name: {{ prefix }}/{{ version }}/
    - source: {{ conf['source'] }}
    - delete: True
    - prepare: True
    - require_in:
      - file: php-{{ version }}-ini
{%- endif %}

php-{{ version }}-ini:
  file.managed:
    - name: {{ base }}/{{ version }}/php.ini
    - makedirs: True
    - mode: '0644'
    - contents: |
        ; managed by webfarm upgrade/php — PHP {{ version }}
        memory_limit = {{ conf.get('memory_limit', '256M') }}
        session.save_handler = memcached
        realpath_cache_ttl = 0
        opcache.validate_timestamps = 1
        opcache.revalidate_freq = 0

php-{{ version }}-pool:
  file.managed:
    - name: {{ base }}/{{ version }}/pool.conf
    - makedirs: True
    - mode: '0644'
    - contents: |
        ; managed by webfarm upgrade/php — FPM pool of PHP {{ version }}
        [webfarm-{{ version }}]
        user = {{ conf.get('user', 'www-data') }}
        group = {{ conf.get('group', 'www-data') }}
        listen = 127.0.0.1:{{ port(version) }}
        pm = dynamic
        pm.max_children = {{ conf.get('max_children', 32) }}
        pm.start_servers = 4
        pm.min_spare_servers = 2
        pm.max_spare_servers = 8
        php_admin_value[include_path] = {{ docroot }}
        ; binary: {{ conf.get('binary', prefix ~ '/' ~ version ~ '/bin/php-fpm') }}
{%- endfor %}

php-active-version:
  file.symlink:
    - name: {{ base }}/active
    - target: {{ active | json }}
    - force: True
    - require:
      - file: php-{{ active }}-pool
      - file: php-{{ active }}-ini

php-vhost-handler:
  file.managed:
    - name: {{ vhost }}
    - makedirs: True
    - mode: '0644'
    - contents: |
        # managed by webfarm upgrade/php: PHP {{ active }} serves {{ docroot }}
        Define WEBFARM_PHP_VERSION {{ active }}
        <FilesMatch "\.php$">
            SetHandler "proxy:fcgi://127.0.0.1:{{ port(active) }}"
        </FilesMatch>
    - require:
      - file: php-active-version
{%- endif %}
