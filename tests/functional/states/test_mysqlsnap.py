"""mysqlsnap.backed_up and the mysqlsnap/schedule SLS against the real MariaDB lab (primary + GTID
replica on btrfs, lab/mariadb.py), each case in real and test mode."""

import grp
import uuid

import pytest

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def dest(mariadb_lab):
    return mariadb_lab.base / "backups" / uuid.uuid4().hex[:8]


@pytest.fixture
def snap_pillar(mariadb_lab, dest):
    return mariadb_lab.settings(dest)


@pytest.fixture
def loaders_pillar(snap_pillar):
    return {"mysqlsnap": snap_pillar}


def test_backed_up_takes_the_first_backup(states, modules, testmode):
    ret = states.mysqlsnap.backed_up("nightly", max_age="1h", test=testmode)
    backups = modules.mysqlsnap.list()
    if testmode:
        assert ret.result is None
        assert ret.comment == "Would have taken a backup: there is no backup yet"
        assert ret.changes == {"backup": {"old": None, "new": "(new backup)"}}
        assert backups == []
    else:
        assert ret.result is True, ret.comment
        assert [b["name"] for b in backups] == [ret.changes["backup"]["new"]]
        assert ret.changes["backup"]["old"] is None and ret.changes["lock_ms"] > 0
        assert "because there is no backup yet" in ret.comment


def test_backed_up_is_satisfied_by_a_fresh_backup(states, modules, testmode):
    first = modules.mysqlsnap.backup()
    ret = states.mysqlsnap.backed_up("nightly", max_age="1h", test=testmode)
    assert ret.result is True
    assert ret.changes == {}
    assert ret.comment.startswith(f"Newest backup {first['name']} is ") and ret.comment.endswith(
        "already as wanted"
    )
    assert [b["name"] for b in modules.mysqlsnap.list()] == [first["name"]]


def test_backed_up_replaces_a_too_old_backup(states, modules, testmode):
    first = modules.mysqlsnap.backup()
    ret = states.mysqlsnap.backed_up("nightly", max_age=0, test=testmode)
    names = [b["name"] for b in modules.mysqlsnap.list()]
    if testmode:
        assert ret.result is None and ret.comment.startswith(
            "Would have taken a backup: the newest backup"
        )
        assert names == [first["name"]]
    else:
        assert ret.result is True
        assert ret.changes["backup"] == {"old": first["name"], "new": names[-1]}
        assert names == [first["name"], ret.changes["backup"]["new"]]


def test_backed_up_bad_max_age(states, testmode):
    ret = states.mysqlsnap.backed_up("nightly", max_age="someday", test=testmode)
    assert ret.result is False and "duration must look like" in ret.comment
    assert ret.changes == {}


def test_backed_up_on_a_primary_fails_cleanly(states, modules, mariadb_lab, testmode):
    ret = states.mysqlsnap.backed_up(
        "nightly", max_age="1h", port=mariadb_lab.primary.port, test=testmode
    )
    if testmode:
        assert ret.result is None  # test mode only looks at the destination
    else:
        assert ret.result is False and "not a replica" in ret.comment
    assert ret.changes.get("backup", {}).get("new") in (None, "(new backup)")
    assert modules.mysqlsnap.list() == []


@pytest.mark.parametrize("role, kind", [("db-replica", "present"), ("web", "absent")])
def test_backup_sls_schedules_only_replicas(
    loaders, modules, snap_pillar, dest, role, kind, testmode
):
    loaders.grains["webfarm"] = {"role": role}
    pillar = {"mysqlsnap": {**snap_pillar, "schedule": {"hours": 2, "splay": 60, "offline": True}}}
    ret = modules.state.sls("mysqlsnap.schedule", pillar=pillar, test=testmode)
    assert not ret.failed, ret.errors
    assert ret["mysqlsnap-backup"].result is not False, ret["mysqlsnap-backup"].comment
    job = modules.schedule.list(show_all=True, return_yaml=False, offline=True).get(
        "mysqlsnap-backup"
    )
    if kind == "present":
        assert "mysqlsnap-destination" in ret
        if testmode:
            assert job is None and not dest.exists()
        else:
            assert dest.is_dir() and dest.stat().st_gid == grp.getgrnam("mysql").gr_gid  # verify
            assert job["function"] == "state.sls" and job["args"] == ["mysqlsnap.backup_now"]
            assert job["hours"] == 2 and job["splay"] == 60 and job["maxrunning"] == 1
            modules.schedule.delete("mysqlsnap-backup", offline=True)
    else:
        assert "mysqlsnap-destination" not in ret and job is None


def test_backup_sls_takes_its_schedule_defaults_from_the_yaml(loaders, modules, snap_pillar):
    """No schedule in pillar: the SLS schedules with the values of mysqlsnap/defaults.yaml,
    the ones webfarm.defaults gives mysqlsnap.newest (one source)."""
    loaders.grains["webfarm"] = {"role": "db-replica"}
    low = modules.state.show_sls("mysqlsnap.schedule", pillar={"mysqlsnap": snap_pillar})
    args = {}
    for item in low["mysqlsnap-backup"]["schedule"]:
        if isinstance(item, dict):
            args.update(item)
    schedule = modules.webfarm.defaults("mysqlsnap")["schedule"]
    assert (args["hours"], args["splay"], args["offline"]) == (1, 600, False)
    assert (schedule["hours"], schedule["splay"], schedule["offline"]) == (1, 600, False)
