"""Nagios helpers shared by the nagios tests, the benchmark and the demo (not a plugin)."""

import re
import subprocess
from pathlib import Path


def client_pillar(root, user, pubkey, sources=("127.0.0.1",), plugins=("check_load",)):
    """Pillar for ``nagios.client`` with every path rooted under ``root``."""
    return {
        "nagios": {
            "user": user,
            "client": {
                "pkgs": [],
                "home": f"{root}/home",
                "shell": f"{root}/lib/rshell",
                "checks_dir": f"{root}/lib/checks",
                "plugins": list(plugins),
                "from": list(sources),
                "pubkeys": [pubkey],
            },
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
