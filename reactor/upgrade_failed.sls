{#- webfarm/upgrade/failed {kind, version, site, farm, members, error, farms, comment}:
    notify the operators. The upgrade runner's notify function appends the event as one JSON
    line to the master option webfarm_upgrade_notify (default
    /var/log/salt/webfarm-upgrade-failed.log) and logs it at ERROR level; point a log shipper
    or a returner at that file. The failed farm stays drained until someone acts. -#}
webfarm-upgrade-failed-notify:
  runner.upgrade.notify:
    - args:
      - data: {{ data | json }}
