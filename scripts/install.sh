#!/usr/bin/env bash
# Installs what webfarm's tests, benchmarks and demo need, idempotently:
#   - the Debian packages listed in scripts/apt-packages.txt (only the missing ones),
#   - a venv in .venv from requirements-dev.txt, pinned by constraints.txt.
# Services installed here are not started by dpkg (policy-rc.d); tests start their own.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
while read -r pkg; do
    [[ -z "$pkg" || "$pkg" == \#* ]] && continue
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [[ "$status" == "installed" ]] || missing+=("$pkg")
done < scripts/apt-packages.txt

if ((${#missing[@]})); then
    echo "install: apt packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod 755 "$policy"; made_policy=1
    fi
    trap '[[ $made_policy == 1 ]] && rm -f "$policy"' EXIT
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

stamp=.venv/.installed
if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
if [[ ! -f $stamp || requirements.txt -nt $stamp || requirements-dev.txt -nt $stamp || constraints.txt -nt $stamp ]]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -r requirements-dev.txt -c constraints.txt
    touch "$stamp"
fi
echo "install: ready (.venv, $(.venv/bin/python -c 'import salt.version as v; print("salt", v.__version__)'))"
