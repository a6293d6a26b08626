"""`make demo` end to end: the widest test. Runs ``python -m demo up`` then ``down``."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from demo import netlab

pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def demo_dir():
    # Short on purpose: salt's unix sockets live below it (sun_path is 108 bytes).
    parent = Path(tempfile.mkdtemp(prefix="wfd", dir="/tmp"))
    parent.chmod(0o755)  # the demo's Nagios check user must reach its shell below it
    yield parent / "demo"
    shutil.rmtree(parent, ignore_errors=True)


def test_demo_up_shows_highstate_and_scroll_then_down_leaves_nothing(repo_root, demo_dir):
    env = {**os.environ, "WEBFARM_DEMO_DIR": str(demo_dir)}
    up = subprocess.run(
        [sys.executable, "-m", "demo", "up"],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=800,
    )  # fmt: skip
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        out = up.stdout
        print(out)  # shown with -rP: the README's excerpt comes from here
        assert "15 minions + master" in out
        for minion in ("lb-primary", "web-s2-f2-m2", "db-replica", "logstore"):
            row = next(line for line in out.splitlines() if line.strip().startswith(minion + " "))
            assert row.split()[3] == "0", row  # failed states
        # step 1: both tiers up by salt, every session sticky to one site/farm, nothing failed
        for lb in ("lb-primary", "lb-s1", "lb-s2"):
            assert f"    {lb}: state.apply haproxy ok" in out
        assert "requests: 24, failed: 0, sessions not sticky: 0" in out
        assert "SITEID=" in out and "FARMID=" in out
        # step 2: the log store names exactly the two clients that browsed /some/page
        assert "$ salt logstore accesslog.visitors /some/page" in out
        assert "visitors of /some/page: 10.77.0.2, 10.77.0.30" in out
        # step 4: the unsourced route leaves by eth1, the eth2 source by table 2, pings answered
        assert "192.0.2.80 via 198.51.100.254 dev eth1" in out
        assert "from 203.0.113.10 via 203.0.113.254 dev eth2 table 2" in out
        assert out.count("): answered") == 2 and "NO ANSWER" not in out
        assert "step 4: 2 uplinks" in out
        # step 5: two checks over one ssh login, both escapes refused
        assert out.count("check_by_ssh check_load -> exit 0: LOAD OK") == 2
        assert "sshd logins for 2 checks: 1 (ControlPersist master reused)" in out
        # refused by the restricted shell on the far side, not by ssh
        assert "escape ssh ... /bin/sh -c id: exit 1: " in out
        assert "restricted: cannot specify `/' in command names" in out
        assert "escape ssh ... 'cat /etc/passwd': exit 127: " in out
        assert "2 escapes refused" in out
        assert " \\_ |  " in out and "    \\_/___" in out  # the scroll was printed
    finally:
        down = subprocess.run(
            [sys.executable, "-m", "demo", "down"],
            cwd=repo_root, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [ns for ns in netlab.namespaces() if ns.startswith(netlab.PREFIX)]
    assert not demo_dir.exists()
    assert subprocess.run(["id", "wfdemonag"], capture_output=True).returncode != 0
    leftover = subprocess.run(["pgrep", "-f", str(demo_dir)], capture_output=True)
    assert leftover.returncode == 1, leftover.stdout
