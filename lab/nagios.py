"""Nagios helpers shared by the nagios tests, the benchmark and the demo (not a plugin)."""

import re
import subprocess
from pathlib import Path

LOAD_CHECK = "check_load -w 1000,1000,1000 -c 2000,2000,2000"

# The check table the tests, the benchmark and the demo allow (pillar nagios:checks).
TEST_CHECKS = [
    {"plugin": "check_dummy", "args": ["[0-3]"]},
    {"plugin": "check_dummy", "args": ["[0-3]", "[A-Za-z0-9 _.:-]*"]},
    {"plugin": "check_load", "argv": LOAD_CHECK.split()[1:]},
    {"plugin": "check_users", "args": ["-w", "[0-9]+", "-c", "[0-9]+"]},
]


def client_paths(root):
    """``nagios:client`` settings that put the check user's home, shell, dispatcher and
    check table under ``root`` (and install no packages)."""
    return {
        "pkgs": [],
        "home": f"{root}/home",
        "shell": f"{root}/lib/rshell",
        "checks_dir": f"{root}/lib/checks",
        "dispatcher": f"{root}/lib/dispatch",
        "check_table": f"{root}/lib/checks.json",
    }


def client_pillar(
    root,
    user,
    pubkey,
    sources=("127.0.0.1",),
    plugins=("check_load",),
    monitor="monitor",
    checks=None,
    sshd=None,
):
    """Pillar for ``nagios.client`` with every path rooted under ``root``: one monitor
    (``monitor``, its key and source addresses from pillar), the test check table, and
    the sshd drop-in off unless ``sshd`` (the ``nagios:client:sshd`` settings) is given."""
    wanted = [c for c in (TEST_CHECKS if checks is None else checks) if c["plugin"] in plugins]
    return {
        "nagios": {
            "user": user,
            "monitors": {monitor: {"from": list(sources), "pubkey": pubkey}},
            "checks": wanted,
            "client": {
                **client_paths(root),
                "plugins": list(plugins),
                "sshd": sshd or {"manage": False},
            },
            "server": {"services": {"*": []}},
        }
    }


def remove_user(name):
    """Delete the check user ``name`` and its group (no error when they are gone)."""
    subprocess.run(["userdel", name], capture_output=True, check=False)
    subprocess.run(["groupdel", name], capture_output=True, check=False)


def parse_status(path):
    """servicestatus blocks of a Nagios status.dat as dicts."""
    blocks = re.findall(r"servicestatus \{\n(.*?)\n\s*\}", Path(path).read_text(), re.S)
    out = []
    for block in blocks:
        fields = dict(line.strip().split("=", 1) for line in block.splitlines() if "=" in line)
        out.append(fields)
    return out
