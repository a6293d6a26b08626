"""The wiring, through a real salt-master and three real salt-minion daemons.

The motd/less states are pointed at a temp root through per-minion pillar overrides
(file_tree ext_pillar, see tests/support/salt_daemons.py) so the host's /etc is not touched.
"""

import os
import stat
import subprocess
import time

import pytest

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def synced(salt_cli, salt_minions):
    ret = salt_cli.run("saltutil.sync_all", minion_tgt="*")
    assert ret.returncode == 0, ret
    return ret.data


def _paths(root):
    return {
        "target": str(root / "motd"),
        "base": str(root / "motd_base"),
        "pinned": str(root / "motd_pinned"),
        "cron_file": str(root / "cron.d" / "webfarm-motd"),
    }


def test_sync_all_ships_custom_modules_to_every_minion(synced, salt_cli, salt_minions):
    assert set(synced) == set(salt_minions)
    # sync_all answers only what it changed, and another module of the session may have synced
    # these minions first: ask each minion's loader what it has (the util behind motd.scroll
    # is exercised by the next test).
    ret = salt_cli.run("sys.list_functions", "motd", minion_tgt="*")
    assert ret.returncode == 0, ret
    assert set(ret.data) == set(salt_minions)
    for minion_id, functions in ret.data.items():
        assert "motd.scroll" in functions and "motd.update" in functions, (minion_id, functions)


def test_custom_module_runs_on_every_minion(synced, salt_cli, salt_minions):
    ret = salt_cli.run("motd.scroll", "text=hello from the farm", "width=30", minion_tgt="*")
    assert ret.returncode == 0, ret
    assert set(ret.data) == set(salt_minions)
    for out in ret.data.values():
        assert "hello from the farm" in out
        assert out.splitlines()[1].startswith("/  \\\\")  # the seed's papel.sh frame


def test_motd_and_less_states_apply_and_are_idempotent(
    synced, salt_cli, pillar_overrides, tmp_path
):
    minion = "web-s1-f1-m1"
    (tmp_path / "cron.d").mkdir()
    (tmp_path / "motd").write_text("Debian GNU/Linux, managed by webfarm\n")
    paths = _paths(tmp_path)
    profile = tmp_path / "webfarm-less.sh"
    pillar_overrides.set(
        minion,
        {
            "motd": {**paths, "text": "Deploy freeze until Monday"},
            "less": {"profile_file": str(profile)},
        },
    )
    try:
        first = salt_cli.run("state.apply", "motd,less", minion_tgt=minion)
        assert first.returncode == 0, first
        second = salt_cli.run("state.apply", "motd,less", minion_tgt=minion)
        assert second.returncode == 0, second
    finally:
        pillar_overrides.clear(minion)

    changed = [ret["__id__"] for ret in second.data.values() if ret["changes"]]
    assert changed == [], f"second highstate changed {changed}"

    motd = (tmp_path / "motd").read_text()
    assert motd.startswith("Debian GNU/Linux, managed by webfarm\n __,---")
    assert "Deploy freeze until Monday" in motd
    assert stat.S_IMODE(os.stat(tmp_path / "motd").st_mode) == 0o644
    assert (tmp_path / "motd_base").read_text() == "Debian GNU/Linux, managed by webfarm\n"

    cron = (tmp_path / "cron.d" / "webfarm-motd").read_text().splitlines()
    job = [line for line in cron if "motd.update" in line]
    assert len(job) == 1
    fields = job[0].split()
    assert 0 <= int(fields[0]) < 60 and fields[1:5] == ["*", "*", "*", "*"] and fields[5] == "root"
    assert f"target={paths['target']}" in job[0]

    for before, after in (("", "-R"), ("-FX", "-FX -R"), ("-FRX", "-FRX"), ("-R", "-R")):
        env = {"PATH": "/usr/bin:/bin", "LESS": before} if before else {"PATH": "/usr/bin:/bin"}
        out = subprocess.run(
            ["sh", "-c", f'. "{profile}"; . "{profile}"; printf "%s|%s" "$LESS" "$LESSOPEN"'],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
        less, lessopen = out.split("|", 1)
        assert less == after, (before, less)
        assert lessopen == "| /usr/share/source-highlight/src-hilite-lesspipe.sh %s"


def test_orchestrate_targets_minions_by_grain(synced, salt_run_cli, pillar_overrides, tmp_path):
    web = ["web-s1-f1-m1", "web-s1-f2-m1"]
    for minion in [*web, "db-replica"]:
        root = tmp_path / minion
        (root / "cron.d").mkdir(parents=True)
        pillar_overrides.set(minion, {"motd": _paths(root)})
    # A host that already has a motd keeps it as the base and gets a fortune scroll under it.
    (tmp_path / web[0] / "motd").write_text("Existing motd\n")
    try:
        ret = salt_run_cli.run("state.orchestrate", "orch.motd", 'pillar={"orch": {"role": "web"}}')
    finally:
        for minion in [*web, "db-replica"]:
            pillar_overrides.clear(minion)
    assert ret.returncode == 0, ret
    for minion in web:
        assert (tmp_path / minion / "motd").is_file(), minion
    motd = (tmp_path / web[0] / "motd").read_text()
    assert motd.startswith("Existing motd\n __,---") and motd.rstrip().endswith("``"), motd
    assert not (tmp_path / "db-replica" / "motd").exists(), "a db-replica was targeted as web"


def test_reactor_reapplies_motd_on_event(synced, salt_minions, pillar_overrides, tmp_path):
    minion = "db-replica"
    (tmp_path / "cron.d").mkdir()
    pillar_overrides.set(minion, {"motd": _paths(tmp_path)})
    try:
        call = salt_minions[minion].salt_call_cli(timeout=60)
        ret = call.run("event.send", "webfarm/motd/refresh/requested", "data={}")
        assert ret.returncode == 0 and ret.data is True, ret
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (tmp_path / "motd").exists():
            time.sleep(1)
    finally:
        # Give a state run started by the reactor time to finish before the pillar goes.
        time.sleep(2)
        pillar_overrides.clear(minion)
    assert (tmp_path / "motd").is_file(), "the reactor did not re-apply motd within 120 s"
    assert (tmp_path / "cron.d" / "webfarm-motd").is_file()
