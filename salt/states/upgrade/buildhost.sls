{#- A preproduction server as the Gentoo build host of its hardware profile (the seed: "the
    preproduction servers will pre-compile the Gentoo packages for each hw-profile"):
    - make.conf: FEATURES gains buildpkg (every emerge also writes a binary package) and
      PKGDIR=<upgrade:buildhost:pkgdir_root>/<grain webfarm:hw_profile>;
    - an rsync daemon serves <pkgdir_root> read-only as module <module> (default binpkgs) to
      upgrade:buildhost:hosts_allow (the production subnets).
    Production members point upgrade:binhost_url at rsync://<this host>/binpkgs; the
    upgrade.binhost SLS makes their PORTAGE_BINHOST rsync://<this host>/binpkgs/<hw_profile>,
    which Portage fetches with FETCHCOMMAND_RSYNC (make.globals: rsync -LtvP ...) and
    `emerge --usepkg --getbinpkg` installs what this host built. After building, run
    `emaint binhost --fix` so the Packages index lists the new packages.
    Pillar upgrade:buildhost: pkgdir_root (/var/cache/binpkgs), hosts_allow (required),
    module, address, port, uid, gid, use_chroot, pid_file, rsyncd_conf (/etc/rsyncd.conf),
    service (rsyncd; set manage_service: false to run the daemon some other way). -#}
{%- set bh = salt['pillar.get']('upgrade:buildhost', {}) %}
{%- set path = salt['pillar.get']('upgrade:make_conf', '/etc/portage/make.conf') %}
{%- set role = salt['grains.get']('webfarm:role') %}
{%- set profile = salt['grains.get']('webfarm:hw_profile') %}
{%- set root = bh.get('pkgdir_root', '/var/cache/binpkgs') %}
{%- if role != 'preprod' or not profile or not bh.get('hosts_allow') %}
upgrade-buildhost-settings:
  test.fail_without_changes:
    - name: upgrade-buildhost
    - comment: "upgrade.buildhost is for preprod minions with a webfarm:hw_profile grain and pillar upgrade:buildhost:hosts_allow (got role {{ role }}, hw_profile {{ profile }}, hosts_allow {{ bh.get('hosts_allow') }})"
{%- else %}
upgrade-buildhost-make-conf:
  file.managed:
    - name: {{ path }}
    - makedirs: True
    - mode: '0644'
    - contents: {{ salt['upgrade.buildhost_make_conf'](path=path, pkgdir_root=root, hw_profile=profile) | json }}

upgrade-buildhost-pkgdir:
  file.directory:
    - name: {{ root }}/{{ profile }}
    - makedirs: True
    - mode: '0755'

upgrade-buildhost-rsyncd-conf:
  file.managed:
    - name: {{ bh.get('rsyncd_conf', '/etc/rsyncd.conf') }}
    - makedirs: True
    - mode: '0644'
    - contents: {{ salt['upgrade.buildhost_rsyncd_conf']() | json }}
{%- if bh.get('manage_service', True) not in [False, 'false', 'no', '0'] %}

upgrade-buildhost-rsyncd:
  service.running:
    - name: {{ bh.get('service', 'rsyncd') }}
    - enable: True
    - watch:
      - file: upgrade-buildhost-rsyncd-conf
{%- endif %}
{%- endif %}
