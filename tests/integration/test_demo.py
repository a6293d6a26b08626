"""`make demo` end to end, the widest test: ``python -m demo up`` twice, then ``down``."""

import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from demo import netlab

pytestmark = pytest.mark.timeout(2400)


@pytest.fixture
def demo_dir():
    # Short on purpose: salt's unix sockets live below it (sun_path is 108 bytes).
    parent = Path(tempfile.mkdtemp(prefix="wfd", dir="/tmp"))
    parent.chmod(0o755)  # the demo's Nagios check user must reach its shell below it
    yield parent / "demo"
    shutil.rmtree(parent, ignore_errors=True)


def _up(repo_root, env):
    return subprocess.run(
        [sys.executable, "-m", "demo", "up"],
        cwd=repo_root, env=env, capture_output=True, text=True, timeout=1100,
    )  # fmt: skip


def _loop_devices_under(path):
    out = subprocess.run(
        ["losetup", "--list", "--noheadings", "--output", "BACK-FILE"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [line for line in out.stdout.split() if line.startswith(str(path))]


def _assert_roles_configured(demo_dir):
    """What each role's highstate left on its host, read from the hosts' own files."""
    hosts = demo_dir / "hosts"
    for web in ("web-s1-f1-m1", "web-s2-f2-m2"):
        conf = hosts / web / "etc" / "apache2" / "conf-enabled" / "webfarm-accesslog.conf"
        shipper = hosts / web / "usr" / "local" / "bin" / "webfarm_shipper.py"
        config = hosts / web / "etc" / "webfarm" / "accesslog-shipper.json"
        assert f"{shipper} --config {config}" in conf.read_text(), conf  # Apache pipes into it
        assert json.loads(config.read_text())["source"] == web
        assert (hosts / web / "etc" / "webfarm" / "php" / "active").is_symlink()
    for minion in (demo_dir / "minions").iterdir():  # the backup job: on the replica only
        schedule = minion / "conf" / "minion.d" / "_schedule.conf"
        scheduled = schedule.exists() and "mysqlsnap-backup" in schedule.read_text()
        assert scheduled is (minion.name == "db-replica"), minion.name
    for host, user in (("web-s2-f1-m2", "wfd-web-s2-f1-m2"), ("lb-s2", "wfd-lb-s2")):
        entry = pwd.getpwnam(user)  # the check user: a restricted shell, a key bound to a command
        assert entry.pw_shell == str(hosts / host / "nagios" / "lib" / "rshell"), entry
        keys = (Path(entry.pw_dir) / ".ssh" / "authorized_keys").read_text()
        assert 'restrict,from="10.77.0.30",command="' in keys, keys
    for lb in ("lb-s1", "lb-primary"):
        persisted = hosts / lb / "etc" / "sysctl.d" / "60-webfarm-haproxy.conf"
        assert "net.ipv4.tcp_max_syn_backlog" in persisted.read_text()


def test_demo_up_twice_shows_every_step_then_down_leaves_nothing(repo_root, demo_dir):
    env = {**os.environ, "WEBFARM_DEMO_DIR": str(demo_dir)}
    up = _up(repo_root, env)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        out = up.stdout
        print(out)  # shown with -rP: the README's excerpt comes from here
        assert "18 minions + master" in out
        # one orch.cluster configured every role; the second highstate and the dry run after
        # it found nothing to do on any of the 18 minions (the table lists each)
        orch = out.split("==> salt-run state.orchestrate orch.cluster")[1].split("==> ")[0]
        assert "FAILED" not in orch and "    ok     webfarm-lb-primary\n" in orch, orch
        for minion in ("lb-primary", "web-s2-f2-m2", "db-replica", "logstore", "monitor"):
            rows = [line for line in out.splitlines() if line.strip().startswith(minion + " ")]
            assert len(rows) == 2 and all(row.split()[2:4] == ["0", "0"] for row in rows), rows
        assert (
            "then a second highstate on all minions: 0 changed, 0 failed (" in out
            and "; state.apply test=True: 0 to change, 0 failed\n" in out
        )
        _assert_roles_configured(demo_dir)
        # step 1: both tiers up by orch.cluster, every session sticky to one site/farm
        for lb in ("lb-primary", "lb-primary-b"):
            assert f"    {lb}: HAProxy (primary) runs, master pid " in out
        for lb in ("lb-s1", "lb-s1b", "lb-s2"):
            assert f"    {lb}: HAProxy (site) runs, master pid " in out
        # keepalived through salt on the LBs of the two tiers with a VIP, one holder each
        assert (
            "    lb-primary,lb-primary-b,lb-s1,lb-s1b: keepalived (VRRPv3) from haproxy.vrrp" in out
        )
        assert re.search(r"    VIP 10\.77\.0\.100 held by lb-primary(-b)?\n", out)
        assert re.search(r"    VIP 10\.77\.1\.100 held by lb-s1b?\n", out)
        assert "requests: 24, failed: 0, sessions not sticky: 0" in out
        assert "SITEID=" in out and "FARMID=" in out
        assert "all sticky (sites used: s1,s2)" in out  # round robin over both sites, all UP
        # step 1b: the primary VIP holder's HAProxy killed under sticky traffic: the VIP
        # moved to the other primary LB, answered again, every session kept its site and farm
        holder = re.search(r"    kill -9 HAProxy on (lb-primary(?:-b)?) \(pids \d+", out).group(1)
        other = "lb-primary-b" if holder == "lb-primary" else "lb-primary"
        assert f"    VIP 10.77.0.100 now held by {other}\n" in out
        failover = re.search(
            r"failover: the VIP answered again after ([\d.]+)s; requests failed: (\d+) of (\d+); "
            r"sessions that kept SITEID and FARMID: 6/6\n",
            out,
        )
        assert failover, out
        assert int(failover.group(2)) > 0  # the kill hit the traffic
        assert out.count(" served, all on s") == 6
        assert re.search(
            rf"    {holder}: haproxy_tier.start: HAProxy back \(master pid \d+\); "
            rf"VIP 10\.77\.0\.100 stays on {other}",
            out,
        )
        # step 2: the log store names exactly the two clients that browsed /some/page
        assert "$ salt logstore accesslog.visitors /some/page" in out
        assert "visitors of /some/page: 10.77.0.2, 10.77.0.30" in out
        # step 3: the backup ran through salt under writes, its lock was short, verify passed
        assert "$ salt db-replica mysqlsnap.backup" in out
        lock_ms = float(re.search(r"read lock held ([\d.]+) ms", out).group(1))
        assert 0 < lock_ms < 1000, lock_ms
        written = int(re.search(r"(\d+) rows committed on db-primary meanwhile", out).group(1))
        assert written > 0  # the writer kept committing while the backup ran
        assert "replica of 10.77.0.20:3306 at gtid 0-1-" in out
        assert "row counts of 2 tables match the manifest" in out
        assert "0 errors; replica caught up again; snapshots left: 0" in out
        # step 4: the unsourced route leaves by eth1, the eth2 source by table 2, pings answered
        assert "192.0.2.80 via 198.51.100.254 dev eth1" in out
        assert "from 203.0.113.10 via 203.0.113.254 dev eth2 table 2" in out
        assert out.count("): answered") == 2 and "NO ANSWER" not in out
        assert "step 4: 2 uplinks" in out
        # step 5: nagios4, configured by salt, ran two checks over one ssh login; escapes refused
        assert "    web-s1-f1-m1: check user wfdemonag (home " in out
        assert "/nagios/etc/nagios.cfg, configured by nagios.server" in out
        checks = re.findall(
            r"nagios4 check \d at ([\d:]+): web-s1-f1-m1/load \(check_by_ssh\) -> OK: LOAD OK", out
        )
        assert len(checks) == 2 and checks[0] != checks[1], checks
        assert "sshd logins for 2 checks: 1 (ControlPersist master reused)" in out
        # refused by the check key's forced command on the far side, not by ssh
        refused = "exit 3: webfarm-nagios-dispatch: refused: "
        assert f"escape ssh ... /bin/sh -c id: {refused}plugin '/bin/sh' is not allowed" in out
        assert f"escape ssh ... 'cat /etc/passwd': {refused}plugin 'cat' is not allowed" in out
        assert f"""printf %s "${{l[@]}}"': {refused}'<' in request""" in out
        assert f"-q x: {refused}plugin 'check_log' is not allowed" in out
        assert "4 escapes refused" in out
        # a minion that claims the monitor role: the mine's grain match finds it, nothing trusts it
        assert (
            "    $ salt web-s1-f1-m1 mine.get webfarm:role:monitor webfarm_nagios_pubkey grain\n"
            "      -> web-s1-f1-m2\n" in out
        )
        assert re.search(
            r"nagios.client test=True: \d+ states, 0 would change; authorized_keys holds 1 key",
            out,
        )
        assert "web-s1-f1-m2's key as wfdemonag: exit 255: " in out
        assert "Permission denied (publickey)" in out
        assert "a minion claiming the monitor role was not trusted" in out
        # step 6: untested refused, preprod, the event started the rollout (sites at once),
        # the broken release rolled back, all under traffic with no failure or regression
        assert "-> 9 hosts on 1.0.0" in out
        assert (
            "webfarm/upgrade/rollout/refused: refused: app 2.0.0 is not tested OK on preprod" in out
        )
        assert (
            "webfarm/upgrade/preprod/done 2.0.0: ok=True (generic-x86_64 on preprod-generic)" in out
        )
        waves = re.findall(r"wave (\d): (s\d/f\d) on 2\.0\.0 in .*; 3 Salt round trips\)", out)
        assert sorted(farm for _, farm in waves) == ["s1/f1", "s1/f2", "s2/f1", "s2/f2"]
        assert sorted(int(n) for n, _ in waves) == [1, 1, 2, 2]
        assert "webfarm/upgrade/step/failed: s1/f2: web-s1-f2-m2: health check failed" in out
        assert "-> rolled back to 2.0.0, memcached flushed, back in service; rollout stopped" in out
        traffic = re.search(
            r"(\d+) requests in \d+ sessions, failed: (\d+), version regressions: (\d+)", out
        )
        assert int(traffic.group(1)) > 100 and traffic.group(2, 3) == ("0", "0"), traffic.group(0)
        assert re.search(r"served: 1\.0\.0 x\d+, 2\.0\.0 x\d+, 2\.1\.0 x\d+;", out)
        assert "upgrade.version on the members now: 2.0.0 x2, 2.1.0 x6\n" in out
        assert "\n\\__/|       " in out and "\n   `----" in out  # the scroll was printed
        for step in ("1", "1b", "2", "3", "4", "5", "6"):
            assert f"  step {step}: " in out.split("=" * 72)[-2]  # in the summary
        # a second run over the first: it tears the old lab down and comes up again
        again = _up(repo_root, env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "step 6: 4 farms 1.0.0 -> 2.0.0" in again.stdout
        assert len(_loop_devices_under(demo_dir)) == 1
    finally:
        down = subprocess.run(
            [sys.executable, "-m", "demo", "down"],
            cwd=repo_root, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert down.returncode == 0, down.stdout + down.stderr
    assert not [ns for ns in netlab.namespaces() if ns.startswith(netlab.PREFIX)]
    assert not demo_dir.exists()
    for user in ("wfdemonag", "wfd-web-s2-f2-m2", "wfd-logstore"):  # every host's check user
        assert subprocess.run(["id", user], capture_output=True).returncode != 0, user
    leftover = subprocess.run(["pgrep", "-f", str(demo_dir)], capture_output=True)
    assert leftover.returncode == 1, leftover.stdout
    assert _loop_devices_under(demo_dir) == []
    nagios_masters = subprocess.run(["pgrep", "-f", "/run/wfdemo-nagios/"], capture_output=True)
    assert nagios_masters.returncode == 1, nagios_masters.stdout
    with open("/proc/self/mountinfo", encoding="utf-8") as mounts:
        assert str(demo_dir) not in mounts.read()


def test_a_failed_step_says_which_and_why_and_tears_the_lab_down(repo_root):
    parent = Path(tempfile.mkdtemp(prefix="wfd", dir="/tmp"))
    try:
        (parent / "file").write_text("")
        env = {**os.environ, "WEBFARM_DEMO_DIR": str(parent / "file" / "demo")}
        up = _up(repo_root, env)
    finally:
        shutil.rmtree(parent, ignore_errors=True)
    assert up.returncode == 1, up.stdout + up.stderr
    assert "    done in" in up.stdout.split("==> MariaDB")[0]  # the namespaces were made first
    assert "!!  step failed: MariaDB on db-primary and db-replica" in up.stdout
    assert "Not a directory" in up.stdout
    assert "tearing the lab down" in up.stdout
    assert not [ns for ns in netlab.namespaces() if ns.startswith(netlab.PREFIX)]
