{#- webfarm/motd/refresh/requested: re-apply the motd SLS on the minion that asked. -#}
motd-refresh-{{ data['id'] }}:
  local.state.apply:
    - tgt: {{ data['id'] | json }}
    - args:
      - mods: motd
