{#- less with syntax highlighting through source-highlight's lesspipe. -#}
{%- set less = salt['pillar.get']('less', {}) %}
{%- set profile_file = less.get('profile_file', '/etc/profile.d/webfarm-less.sh') %}
{%- set helper = less.get('lesspipe', '/usr/share/source-highlight/src-hilite-lesspipe.sh') %}

less-packages:
  pkg.installed:
    - pkgs: {{ less.get('packages', ['less', 'source-highlight']) | json }}

less-profile:
  file.managed:
    - name: {{ profile_file }}
    - mode: '0644'
    - require:
      - pkg: less-packages
    - contents: |
        # Managed by Salt (webfarm less): syntax highlighting in less.
        if [ -x {{ helper }} ]; then
            LESSOPEN="| {{ helper }} %s"
            export LESSOPEN
        fi
        webfarm_less_raw=no
        for webfarm_less_opt in ${LESS-}; do
            case "$webfarm_less_opt" in
                --RAW-CONTROL-CHARS|--raw-control-chars) webfarm_less_raw=yes ;;
                --*) ;;
                *R*) webfarm_less_raw=yes ;;
            esac
        done
        if [ "$webfarm_less_raw" = no ]; then
            LESS="${LESS:+$LESS }-R"
            export LESS
        fi
        unset webfarm_less_raw webfarm_less_opt
