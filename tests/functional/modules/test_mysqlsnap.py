"""mysqlsnap against a real MariaDB primary + GTID replica, the replica's datadir in a btrfs
subvolume on a loop device, with a writer thread inserting into the primary.

Failures are injected for real (a snapshot directory off btrfs, a full destination, a killed
lock connection, a hung snapshot, SIGTERM, SIGKILL); the ones that need a precise moment wrap
the real command runner of ``webfarm_mysqlsnap.run_backup``. After each one the test checks,
from outside, that writes proceed on the replica, its filesystem is writable, no snapshot or
mount is left and replication still runs.
"""

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pymysql
import pytest
import webfarm_mysqlsnap as logic
from salt.exceptions import CommandExecutionError, SaltInvocationError

from tests.support.mariadb import (
    BACKUP_PASSWORD,
    Writer,
    fs_writable,
    mounts_under,
    slave_status,
    start_replication,
    start_server,
    wait_caught_up,
    writes_proceed,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def dest(mariadb_lab):
    return mariadb_lab.base / "backups" / uuid.uuid4().hex[:8]


@pytest.fixture
def loaders_pillar(mariadb_lab, dest):
    return {"mysqlsnap": mariadb_lab.settings(dest)}


def assert_clean(lab, dest=None):
    """Nothing of a backup is left: no read lock, no frozen fs, no snapshot, no mount."""
    assert writes_proceed(lab.replica, timeout=3), (
        "the replica still refuses writes (read lock held)"
    )
    assert fs_writable(str(lab.subvolume)), "the replica's filesystem is frozen"
    assert lab.snapshots() == [], f"snapshots left behind: {lab.snapshots()}"
    assert mounts_under(str(lab.btrfs.mount)) == [str(lab.btrfs.mount)]
    status = slave_status(lab.replica)
    assert status["Slave_SQL_Running"] == "Yes" and status["Slave_IO_Running"] == "Yes"
    if dest is not None and dest.exists():
        assert [p.name for p in dest.iterdir() if p.name.endswith(logic.PARTIAL_SUFFIX)] == []


def real_run(cmd, timeout):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def real_connect(lab):
    def connect():
        return pymysql.connect(
            host="127.0.0.1",
            port=lab.replica.port,
            user="backup",
            password=BACKUP_PASSWORD,
            autocommit=True,
        )

    return connect


def settings_for(lab, dest, **overrides):
    return logic.merge_settings(lab.settings(dest, **overrides))


# ---------------------------------------------------------------- good backups


def test_backup_under_load_records_positions_and_verifies(
    modules, mariadb_lab, mariadb_writer, dest
):
    ret = modules.mysqlsnap.backup(verify=True)
    assert ret["result"] is True, ret.get("verify")
    assert 0 < ret["lock_ms"] < 2000
    assert ret["snapshot"] == str(mariadb_lab.snapshot_dir / ret["name"])
    assert ret["backup_dir"] == str(dest / ret["name"])
    assert ret["bytes"] > 1_000_000 and ret["duration_s"] > 0
    assert ret["source"]["binlog_file"].startswith("mysql-bin.") and ret["source"]["binlog_pos"] > 0
    assert ret["source"]["gtid"].startswith("0-1-")
    assert ret["replica"]["master_port"] == mariadb_lab.primary.port
    assert ret["replica"]["gtid_slave_pos"].startswith("0-1-")
    assert (
        ret["replica"]["master_log_file"].startswith("mysql-bin.")
        and ret["replica"]["master_log_pos"] > 0
    )
    assert ret["tables"]["app.events"] >= 2000 and "app.audit" in ret["tables"]
    # Verified: a throw-away server on a copy recovered, CHECK TABLE passed and the row counts
    # are exactly those recorded at lock time.
    assert ret["verify"]["result"] is True, ret["verify"]
    assert (
        ret["verify"]["rows_compared"] == len(ret["tables"])
        and ret["verify"]["tables_checked"] > 20
    )
    manifest = json.loads((dest / ret["name"] / "manifest.json").read_text())
    assert manifest == {k: v for k, v in ret.items() if k not in ("pruned", "verify")}
    assert (dest / ret["name"] / "data" / "app" / "events.ibd").is_file()
    assert BACKUP_PASSWORD not in json.dumps(ret)
    assert_clean(mariadb_lab, dest)
    assert [b["name"] for b in modules.mysqlsnap.list()] == [ret["name"]]


def test_manifest_positions_let_a_fresh_replica_resume(modules, mariadb_lab, dest):
    lab = mariadb_lab
    writer = Writer(lab.primary).start()
    try:
        ret = modules.mysqlsnap.backup()
        time.sleep(0.5)  # the primary moves on past the backup's position
    finally:
        rows = writer.stop()
    assert rows > 0
    fresh_dir = lab.base / f"fresh-{ret['name']}"
    subprocess.run(["cp", "-a", str(dest / ret["name"] / "data"), str(fresh_dir)], check=True)
    fresh = start_server("fresh", lab.base / "run", fresh_dir, server_id=3)
    try:
        restored = fresh.query("SELECT COUNT(*) FROM app.events")[0][0]
        assert restored == ret["tables"]["app.events"]
        start_replication(fresh, lab.primary, gtid_slave_pos=ret["replica"]["gtid_slave_pos"])
        wait_caught_up(fresh, lab.primary)
        for table in ("app.events", "app.audit"):
            sql = f"SELECT COUNT(*), COALESCE(MAX(id), 0) FROM {table}"
            assert fresh.query(sql) == lab.primary.query(sql)
        status = slave_status(fresh)
        assert status["Slave_SQL_Running"] == "Yes" and status["Last_Errno"] == 0
    finally:
        fresh.stop()
        subprocess.run(["rm", "-rf", str(fresh_dir)], check=False)
    assert_clean(lab, dest)


def test_retention_prunes_the_oldest(modules, mariadb_lab, dest):
    names = [modules.mysqlsnap.backup(keep=2)["name"] for _ in range(3)]
    assert [b["name"] for b in modules.mysqlsnap.list()] == names[1:]
    assert not (dest / names[0]).exists()
    assert modules.mysqlsnap.prune(keep=1) == {"removed": [names[1]], "kept": [names[2]]}
    assert_clean(mariadb_lab, dest)


def test_verify_reports_a_row_count_mismatch(modules, mariadb_lab, dest):
    ret = modules.mysqlsnap.backup()
    manifest_path = dest / ret["name"] / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["tables"]["app.events"] += 1
    manifest_path.write_text(json.dumps(manifest))
    report = modules.mysqlsnap.verify(ret["backup_dir"])
    expected = ret["tables"]["app.events"]
    assert report["result"] is False
    assert report["row_count_mismatches"] == {"app.events": [expected + 1, expected]}
    assert [p.name for p in dest.iterdir() if p.name.startswith(".verify-")] == []


# ---------------------------------------------------------------- refusals, bad input


def test_primary_is_refused(modules, mariadb_lab, dest):
    with pytest.raises(CommandExecutionError, match="not a replica"):
        modules.mysqlsnap.backup(port=mariadb_lab.primary.port)
    assert writes_proceed(mariadb_lab.primary)
    assert_clean(mariadb_lab, dest)


def test_second_concurrent_backup_is_refused(modules, mariadb_lab, dest):
    lock_file = mariadb_lab.base / "mysqlsnap.lock"
    with open(lock_file, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(CommandExecutionError, match="another mysqlsnap backup is running"):
            modules.mysqlsnap.backup()
    assert not dest.exists()
    assert_clean(mariadb_lab, dest)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"backend": "zfs"}, "backend must be one of"),
        ({"keep": 0}, "keep must be >= 1"),
        ({"lock_timeout": "soon"}, "lock_timeout must be a number"),
        ({"destination": "relative/dir"}, "destination must be an absolute path"),
        ({"bogus": 1}, "unknown argument setting"),
    ],
)
def test_bad_arguments_are_clear_errors(modules, mariadb_lab, dest, overrides, match):
    with pytest.raises(SaltInvocationError, match=match):
        modules.mysqlsnap.backup(**overrides)
    assert_clean(mariadb_lab, dest)


def test_wrong_password_fails_without_leaking_it(modules, mariadb_lab, dest, caplog):
    wrong = "not-the-Password-123"
    with caplog.at_level("DEBUG"), pytest.raises(CommandExecutionError) as err:
        modules.mysqlsnap.backup(password=wrong)
    assert "Access denied" in str(err.value)
    assert wrong not in str(err.value) and wrong not in caplog.text
    assert_clean(mariadb_lab, dest)


# ---------------------------------------------------------------- injected failures


def test_snapshot_command_failure_cleans_up(modules, mariadb_lab, dest):
    not_btrfs = mariadb_lab.base / "not-btrfs-snapshots"
    not_btrfs.mkdir(exist_ok=True)
    btrfs = {"subvolume": str(mariadb_lab.subvolume), "snapshot_dir": str(not_btrfs)}
    with pytest.raises(CommandExecutionError, match="btrfs subvolume snapshot"):
        modules.mysqlsnap.backup(btrfs=btrfs)
    assert list(not_btrfs.iterdir()) == []
    assert_clean(mariadb_lab, dest)


def test_full_destination_cleans_up(modules, mariadb_lab, caplog):
    full = mariadb_lab.base / "full"
    full.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(full)], check=True)
    try:
        with caplog.at_level("DEBUG"), pytest.raises(CommandExecutionError, match="rsync") as err:
            modules.mysqlsnap.backup(destination=str(full))
        assert "cleanup:" in str(err.value) and "remove partial copy: done" in str(err.value)
        assert list(full.iterdir()) == []
        assert BACKUP_PASSWORD not in caplog.text
    finally:
        subprocess.run(["umount", str(full)], check=True)
    assert_clean(mariadb_lab)


def test_watchdog_releases_the_lock_when_the_snapshot_hangs(mariadb_lab, dest):
    seen = {}

    def hanging_snapshot(cmd, timeout):
        if cmd[:3] == ["btrfs", "subvolume", "snapshot"]:
            time.sleep(0.6)  # past lock_timeout: the watchdog must have released the lock
            seen["writes_during_hang"] = writes_proceed(mariadb_lab.replica, timeout=3)
        return real_run(cmd, max(timeout, 30))

    settings = settings_for(mariadb_lab, dest, lock_timeout=0.3)
    with pytest.raises(logic.BackupError, match="lock_timeout=0.3s exceeded"):
        logic.run_backup(settings, hanging_snapshot, real_connect(mariadb_lab))
    assert seen["writes_during_hang"] is True
    assert_clean(mariadb_lab, dest)


def test_snapshot_killed_at_lock_timeout(mariadb_lab, dest):
    def slow_snapshot(cmd, timeout):
        if cmd[:3] == ["btrfs", "subvolume", "snapshot"]:
            return real_run(["sleep", "30"], timeout)
        return real_run(cmd, timeout)

    settings = settings_for(mariadb_lab, dest, lock_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(
        logic.BackupError, match="snapshot exceeded lock_timeout=0.5s and was killed"
    ):
        logic.run_backup(settings, slow_snapshot, real_connect(mariadb_lab))
    assert time.monotonic() - started < 10
    assert_clean(mariadb_lab, dest)


def test_lost_db_connection_discards_the_snapshot(mariadb_lab, dest):
    def kill_backup_connections(cmd, timeout):
        if cmd[:3] == ["btrfs", "subvolume", "snapshot"]:
            ids = mariadb_lab.replica.query(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = 'backup'"
            )
            for (conn_id,) in ids:
                with contextlib.suppress(pymysql.MySQLError):
                    mariadb_lab.replica.query(f"KILL CONNECTION {int(conn_id)}")
        return real_run(cmd, timeout)

    with pytest.raises(logic.BackupError, match="lock connection was lost"):
        logic.run_backup(
            settings_for(mariadb_lab, dest), kill_backup_connections, real_connect(mariadb_lab)
        )
    assert_clean(mariadb_lab, dest)


def test_sigterm_during_the_copy_undoes_everything(mariadb_lab, dest):
    def terminated_rsync(cmd, timeout):
        if cmd[0] == "rsync":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        return real_run(cmd, timeout)

    with pytest.raises(logic.BackupError, match="interrupted"), logic.interruptible():
        logic.run_backup(
            settings_for(mariadb_lab, dest), terminated_rsync, real_connect(mariadb_lab)
        )
    assert_clean(mariadb_lab, dest)


CHILD = """
import json, os, signal, subprocess, sys
sys.path.insert(0, sys.argv[1])
import pymysql, webfarm_mysqlsnap as logic
settings = json.loads(sys.argv[2])
conn = settings["connection"]
def connect():
    return pymysql.connect(host=conn["host"], port=conn["port"], user=conn["user"],
                           password=conn["password"], autocommit=True)
def run(cmd, timeout):
    if cmd[0] == "rsync":
        os.kill(os.getpid(), signal.SIGKILL)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
logic.run_backup(settings, run, connect)
"""


def test_sigkilled_run_releases_the_lock_and_the_next_run_removes_its_leftovers(
    modules, mariadb_lab, dest, repo_root
):
    settings = settings_for(mariadb_lab, dest)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(repo_root / "salt" / "_utils"), json.dumps(settings)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    # The server dropped the dead client's read lock; its snapshot and partial copy remain.
    assert writes_proceed(mariadb_lab.replica, timeout=3)
    leftovers = mariadb_lab.snapshots()
    assert len(leftovers) == 1
    assert [p.name for p in dest.iterdir()] == [leftovers[0] + logic.PARTIAL_SUFFIX]
    ret = modules.mysqlsnap.backup()
    assert ret["result"] is True
    assert ret["stale_removed"] == [leftovers[0], leftovers[0] + logic.PARTIAL_SUFFIX]
    assert [p.name for p in dest.iterdir()] == [ret["name"]]
    assert_clean(mariadb_lab, dest)
