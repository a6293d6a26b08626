# Pillar of the web and preprod roles (pillar/top.sls) for rolling upgrades (salt/_modules/upgrade.py, salt/_runners/upgrade.py,
# salt/states/upgrade/php.sls, salt/states/upgrade/binhost.sls, salt/states/upgrade/buildhost.sls).
upgrade:
  # farm module, on every web member
  root: /srv/www/app                              # releases/<version>/ + the `current` symlink
  source: rsync://binhost.lan/releases/{version}/ # upgrade.release copies from here
  health_url: http://127.0.0.1/                   # 200 + header X-App-Version: <version>
  health_timeout: 30
  # service: php8.2-fpm                           # restarted after a release switch (default: none)
  # optional release check run by upgrade.upgrade_step after the health check (preprod smoke
  # tests; an argument list, never a shell; {version} is replaced); checks:<version> wins
  # check_cmd: [/usr/local/bin/webfarm-smoke, --version, "{version}"]
  checks: {}
  # the os kinds (salt/_runners/upgrade.py): packages upgraded through Salt's pkg
  pkgs: [openssl, apache2, libc6]
  # upgrade/binhost: PORTAGE_BINHOST = <binhost_url>/<grain webfarm:hw_profile>
  binhost_url: rsync://preprod-generic/binpkgs      # what upgrade.buildhost serves
  make_conf: /etc/portage/make.conf
  # upgrade/buildhost (preprod minions): FEATURES buildpkg, PKGDIR=<pkgdir_root>/<hw_profile>,
  # an rsync daemon serving <pkgdir_root> read-only as module binpkgs
  buildhost:
    pkgdir_root: /var/cache/binpkgs
    hosts_allow: [10.77.0.0/16]
    module: binpkgs
  # upgrade/php: interpreters side by side, the vhost/pool switched to `php:version`
  php:
    version: "8.2"
    versions:
      "8.1": {binary: /usr/bin/php8.1}
      "8.2": {binary: /usr/bin/php8.2}
    base: /etc/webfarm/php                        # <base>/<version>/php.ini + pool.conf
    vhost: /etc/apache2/conf-available/webfarm-php.conf
    pool_port_base: 9000                          # FPM of version X.Y listens on base + X*10 + Y
