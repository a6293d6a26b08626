"""The highstate by role through a real salt-master (the README's master.d snippet, the repo's
state and pillar tops) and real salt-minion daemons: the smoke minions (two web, a replica)
plus one started here without a ``webfarm:role`` grain.

Only what is safe on the test host is applied for real: the roleless minion's highstate
(motd and less pointed at a temp root by pillar overrides; nagios.client, with no monitor in
this lab, and webfarm.role_check fail without writing anything) and the replica's
mysqlsnap.schedule, which without pillar/secrets/db.sls must fail and schedule nothing.
"""

import pytest

from tests.support.salt_daemons import REPO, stop_and_forget

pytestmark = pytest.mark.timeout(600)

COMMON = ["motd", "less", "nagios.client", "webfarm.role_check"]
NOROLE = "norole-1"


@pytest.fixture(scope="module")
def norole_minion(salt_master, salt_minions):
    factory = salt_master.salt_minion_daemon(NOROLE, overrides={"grains": {"os_family": "Debian"}})
    factory.start()
    try:
        yield factory
    finally:
        stop_and_forget(salt_master, factory)


@pytest.fixture(scope="module")
def synced(salt_cli, salt_minions, norole_minion):
    ret = salt_cli.run("saltutil.sync_all", minion_tgt="*")
    assert ret.returncode == 0, ret
    return ret.data


def _failed(ret):
    return {v["__id__"]: v["comment"] for v in ret.values() if v["result"] is False}


def test_the_master_renders_each_minions_top_by_its_role(synced, salt_cli):
    ret = salt_cli.run("state.show_top", minion_tgt="*")
    assert ret.returncode == 0, ret
    tops = {minion: top["base"] for minion, top in ret.data.items()}
    assert tops == {
        "web-s1-f1-m1": [*COMMON, "accesslog", "upgrade.php"],
        "web-s1-f2-m1": [*COMMON, "accesslog", "upgrade.php"],
        "db-replica": [*COMMON, "mysqlsnap.schedule"],
        NOROLE: COMMON,
    }


def test_the_master_composes_the_pillar_by_role(synced, salt_cli):
    ret = salt_cli.run("pillar.items", minion_tgt="*")
    assert ret.returncode == 0, ret
    keys = {minion: set(pillar) for minion, pillar in ret.data.items()}
    for minion, have in keys.items():
        assert "_errors" not in have, ret.data[minion]["_errors"]
        assert {"webfarm", "nagios", "mine_functions"} <= have, minion
    assert {"accesslog", "upgrade"} <= keys["web-s1-f1-m1"]
    assert "mysqlsnap" not in keys["web-s1-f1-m1"] and "mysqlsnap" not in keys[NOROLE]
    assert "mysqlsnap" in keys["db-replica"]
    assert not {"accesslog", "upgrade", "haproxy", "mysqlsnap"} & keys[NOROLE]


def test_without_the_db_secret_the_replica_schedules_no_backup(synced, salt_cli):
    if (REPO / "pillar" / "secrets" / "db.sls").exists():
        pytest.skip("this checkout has an operator's pillar/secrets/db.sls")
    ret = salt_cli.run("state.apply", "mysqlsnap.schedule", minion_tgt="db-replica")
    assert ret.returncode != 0
    assert list(_failed(ret.data)) == ["mysqlsnap-backup"]
    assert "write pillar/secrets/db.sls" in _failed(ret.data)["mysqlsnap-backup"]
    jobs = salt_cli.run("schedule.list", "return_yaml=False", minion_tgt="db-replica")
    assert jobs.returncode == 0, jobs
    assert "mysqlsnap-backup" not in (jobs.data or {})


def test_a_minion_without_a_role_fails_naming_the_grain_and_converges_the_rest(
    synced, salt_cli, pillar_overrides, tmp_path
):
    (tmp_path / "cron.d").mkdir()
    (tmp_path / "motd").write_text("a host without a role\n")
    pillar_overrides.set(
        NOROLE,
        {
            "motd": {
                "target": str(tmp_path / "motd"),
                "base": str(tmp_path / "motd_base"),
                "pinned": str(tmp_path / "motd_pinned"),
                "cron_file": str(tmp_path / "cron.d" / "webfarm-motd"),
            },
            "less": {"profile_file": str(tmp_path / "webfarm-less.sh")},
        },
    )
    try:
        first = salt_cli.run("state.apply", minion_tgt=NOROLE)
        second = salt_cli.run("state.apply", minion_tgt=NOROLE)
    finally:
        pillar_overrides.clear(NOROLE)
    for ret in (first, second):
        assert ret.returncode != 0
        failed = _failed(ret.data)
        assert sorted(failed) == ["nagios-client-pillar", "webfarm-role-check"], failed
        assert failed["webfarm-role-check"].startswith("grain webfarm:role is missing; set it")
        assert "monitor monitor: no public key" in failed["nagios-client-pillar"]
    assert any(v["changes"] for v in first.data.values())
    changed = [v["__id__"] for v in second.data.values() if v["changes"]]
    assert changed == [], f"second highstate changed {changed}"
    assert (tmp_path / "motd_base").read_text() == "a host without a role\n"
    assert (tmp_path / "webfarm-less.sh").exists()
