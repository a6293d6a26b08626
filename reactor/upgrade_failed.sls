{#- webfarm/upgrade/step/failed {kind, version, site, farm, members, error, action, on_failure,
    drained, rollbacks, farms, comment}: notify the operators. The upgrade runner's notify
    function appends the event as one JSON line to the master option webfarm_upgrade_notify
    (default /var/log/salt/webfarm-upgrade-failed.log) and logs it at ERROR level; point a log
    shipper or a returner at that file. With on_failure rollback (the default) the failed
    farm is already back on its old version and in service; with hold it stays drained until
    someone acts (``action`` says which). -#}
webfarm-upgrade-failed-notify:
  runner.upgrade.notify:
    - args:
      - data: {{ data | json }}
