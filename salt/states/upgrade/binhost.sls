{#- Gentoo binary packages from the local binhost of this minion's hardware profile:
    PORTAGE_BINHOST=<upgrade:binhost_url>/<grain webfarm:hw_profile> and FEATURES getbinpkg in
    make.conf (other lines kept), so `emerge --usepkg --getbinpkg` (Salt's pkg with
    binhost=try, see upgrade.upgrade_os) installs what the binhost built for this hardware. -#}
{%- set path = salt['pillar.get']('upgrade:make_conf', '/etc/portage/make.conf') %}
{%- set url = salt['pillar.get']('upgrade:binhost_url') %}
{%- set profile = salt['grains.get']('webfarm:hw_profile') %}
{%- if not url or not profile %}
upgrade-binhost-settings:
  test.fail_without_changes:
    - name: upgrade-binhost
    - comment: "upgrade.binhost needs pillar upgrade:binhost_url (got {{ url }}) and grain webfarm:hw_profile (got {{ profile }})"
{%- else %}
upgrade-binhost-make-conf:
  file.managed:
    - name: {{ path }}
    - makedirs: True
    - mode: '0644'
    - contents: {{ salt['upgrade.make_conf'](path=path, binhost_url=url, hw_profile=profile) | json }}
{%- endif %}
