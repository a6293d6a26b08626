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


def server_paths(var):
    """``nagios:server`` settings that put Nagios's log, status, lock, temp and retention
    files, command pipe, query socket, check results and object caches under ``var``."""
    return {
        "log_file": f"{var}/nagios.log",
        "status_file": f"{var}/status.dat",
        "lock_file": f"{var}/nagios.pid",
        "temp_file": f"{var}/nagios.tmp",
        "temp_path": str(var),
        "command_file": f"{var}/rw/nagios.cmd",
        "query_socket": f"{var}/rw/nagios.qh",
        "check_result_path": f"{var}/checkresults",
        "object_cache_file": f"{var}/objects.cache",
        "precached_object_file": f"{var}/objects.precache",
        "state_retention_file": f"{var}/retention.dat",
    }


# nagios:server timing in seconds instead of minutes (interval_length 1), so that the tests
# and the demo see two checks within seconds.
FAST_TIMING = {
    "retain_state_information": 0,
    "interval_length": 1,
    "status_update_interval": 1,
    "check_result_reaper_frequency": 1,
    "inter_check_delay_method": "n",
    "max_check_spread": 1,
    "check_interval": 2,
    "retry_interval": 1,
    "max_check_attempts": 1,
    "check_timeout": 10,
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
