"""mysqlsnap against a real MariaDB primary + GTID replica, the replica's datadir in a btrfs
subvolume on a loop device, with a writer thread inserting into the primary.

Failures are injected for real (a snapshot directory off btrfs, a full destination, a killed
lock connection, a hung snapshot, SIGTERM, SIGKILL); the ones that need a precise moment wrap
the real command runner of the execution module's backup sequence (``_run_backup(settings,
run, connect)``, called on the module file imported as plain Python). After each one the test
checks, from outside, that writes proceed on the replica, its filesystem is writable, no
snapshot or mount is left and replication still runs.

The LVM backend cannot run here (no device-mapper): its sequence and undo order are checked
with a recording command runner and a fake DB connection (the last section), and so are the
undo stack and its SIGTERM handling.
"""

import contextlib
import datetime
import fcntl
import grp
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pymysql
import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

import webfarm_mysqlsnap as logic
from lab import defaults
from lab.mariadb import (
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
from lab.modload import load_file
from tests.unit.test_mysqlsnap import LVM, base

pytestmark = pytest.mark.timeout(180)

MODULE = Path(__file__).resolve().parents[3] / "salt" / "_modules" / "mysqlsnap.py"

DEFAULTS = defaults.load("mysqlsnap")


def load_module():
    """salt/_modules/mysqlsnap.py as plain Python: the backup sequence needs no dunders."""
    return load_file("mysqlsnap_under_test", MODULE)


snap = load_module()


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
    return logic.merge_settings(DEFAULTS, lab.settings(dest, **overrides))


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


def test_verify_says_when_the_server_user_cannot_reach_the_backup(modules, mariadb_lab, dest):
    ret = modules.mysqlsnap.backup()
    os.chown(dest, 0, 0)
    dest.chmod(0o750)  # root:root 0750: the throw-away server (as mysql) could not enter
    with pytest.raises(CommandExecutionError, match=f"as mysql, which cannot enter {dest} "):
        modules.mysqlsnap.verify(ret["backup_dir"])
    assert [p.name for p in dest.iterdir() if p.name.startswith(".verify-")] == []
    os.chown(dest, 0, grp.getgrnam("mysql").gr_gid)  # as mysqlsnap.schedule creates it
    assert modules.mysqlsnap.verify(ret["backup_dir"])["result"] is True


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
        snap._run_backup(settings, hanging_snapshot, real_connect(mariadb_lab))
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
        snap._run_backup(settings, slow_snapshot, real_connect(mariadb_lab))
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
        snap._run_backup(
            settings_for(mariadb_lab, dest), kill_backup_connections, real_connect(mariadb_lab)
        )
    assert_clean(mariadb_lab, dest)


def test_sigterm_during_the_copy_undoes_everything(mariadb_lab, dest):
    def terminated_rsync(cmd, timeout):
        if cmd[0] == "rsync":
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        return real_run(cmd, timeout)

    with pytest.raises(logic.BackupError, match="interrupted"), snap._interruptible():
        snap._run_backup(
            settings_for(mariadb_lab, dest), terminated_rsync, real_connect(mariadb_lab)
        )
    assert_clean(mariadb_lab, dest)


CHILD = """
import importlib.util, json, os, signal, subprocess, sys
sys.path.insert(0, sys.argv[1])
spec = importlib.util.spec_from_file_location("mysqlsnap_child", sys.argv[2])
snap = importlib.util.module_from_spec(spec)
spec.loader.exec_module(snap)
import pymysql
settings = json.loads(sys.argv[3])
conn = settings["connection"]
def connect():
    return pymysql.connect(host=conn["host"], port=conn["port"], user=conn["user"],
                           password=conn["password"], autocommit=True)
def run(cmd, timeout):
    if cmd[0] == "rsync":
        os.kill(os.getpid(), signal.SIGKILL)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
snap._run_backup(settings, run, connect)
"""


def test_sigkilled_run_releases_the_lock_and_the_next_run_removes_its_leftovers(
    modules, mariadb_lab, dest, repo_root
):
    settings = settings_for(mariadb_lab, dest)
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            str(repo_root / "salt" / "_utils"),
            str(MODULE),
            json.dumps(settings),
        ],
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


# ---------------------------------------------------------------- undo stack; the LVM sequence (fakes)

UTC = datetime.UTC


def test_undo_runs_newest_first_and_reports_failures():
    done = []
    undo = snap.Undo()
    undo.push("a", lambda: done.append("a"))
    undo.push("b", lambda: (_ for _ in ()).throw(OSError("busy")))
    undo.push("c", lambda: done.append("c"))
    undo.settle("c")
    report = undo.unwind()
    assert done == ["a"]
    assert report == ["b: FAILED (busy) - do it by hand", "a: done"]


def test_sigterm_during_undo_waits_until_everything_is_undone():
    done = []
    undo = snap.Undo()
    undo.push("first", lambda: done.append("first"))
    undo.push("second", lambda: (os.kill(os.getpid(), signal.SIGTERM), done.append("second")))
    with pytest.raises(logic.BackupInterrupted), snap._interruptible():
        undo.unwind()
    assert done == ["second", "first"]


class FakeProc:
    def __init__(self, returncode=0, stdout="", stderr=""):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


class FakeCursor:
    def __init__(self, conn):
        self.conn = conn
        self.rows, self.description = [], None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, sql, args=None):
        self.conn.log.append(sql)
        answers = self.conn.answers
        for prefix, (columns, rows) in answers.items():
            if sql.startswith(prefix):
                self.description = [(c,) for c in columns]
                self.rows = list(rows)
                return
        self.description, self.rows = None, []

    def fetchall(self):
        return self.rows

    def fetchone(self):
        return self.rows[0] if self.rows else None


class FakeConn:
    """Answers the statements run_backup sends to a replica; records them."""

    def __init__(self, log):
        self.log = log
        self.closed = False
        self.answers = {
            "SHOW SLAVE STATUS": (
                [
                    "Master_Host",
                    "Master_Port",
                    "Relay_Master_Log_File",
                    "Exec_Master_Log_Pos",
                    "Gtid_IO_Pos",
                    "Using_Gtid",
                ],
                [("10.0.0.1", 3306, "bin.000007", 1234, "0-1-99", "Slave_Pos")],
            ),
            "SELECT @@datadir": (
                ["d", "l", "h", "f", "v", "b"],
                [("/srv/mysql/data/", "./", "", 1, "10.11.6-MariaDB", "/srv/mysql/data/mysql-bin")],
            ),
            "SELECT TABLE_SCHEMA": (["s", "t", "e"], [("app", "events", "InnoDB")]),
            "SELECT CONNECTION_ID": (["id"], [(42,)]),
            "SHOW MASTER STATUS": (["File", "Position"], [("mysql-bin.000003", 555)]),
            "SELECT @@GLOBAL.gtid_binlog_pos": (["a", "b"], [("0-2-5,0-1-99", "0-1-99")]),
            "SELECT COUNT(*)": (["c"], [(17,)]),
        }

    def cursor(self):
        return FakeCursor(self)

    def close(self):
        self.closed = True


def lvm_run(tmp_path, fail=None):
    calls = []

    def run(cmd, timeout):
        calls.append(cmd)
        if fail and cmd[0] == fail:
            return FakeProc(5, stderr=f"{fail}: injected failure")
        if cmd[0] == "rsync":
            return FakeProc(0, stdout="Total file size: 1,000 bytes\n")
        return FakeProc(0)

    return calls, run


def lvm_settings(tmp_path):
    return logic.merge_settings(DEFAULTS, base(**LVM, destination=str(tmp_path / "dest")))


def test_lvm_backup_sequence(tmp_path):
    """LVM cannot run here: fake runner and connection check the order of the real commands."""
    calls, run = lvm_run(tmp_path)
    sql = []
    conns = []

    def connect():
        conns.append(FakeConn(sql))
        return conns[-1]

    now = datetime.datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
    result = snap._run_backup(lvm_settings(tmp_path), run, connect, now=now)
    name = "mysqlsnap-20261125T020000.000Z"
    assert [c[0] for c in calls] == [
        "lvs",
        "fsfreeze",
        "lvcreate",
        "fsfreeze",
        "mount",
        "rsync",
        "umount",
        "lvremove",
    ]
    assert calls[3] == ["fsfreeze", "--unfreeze", "/srv/mysql"]
    assert (
        sql.index("FLUSH TABLES WITH READ LOCK")
        < sql.index("SHOW MASTER STATUS")
        < sql.index("UNLOCK TABLES")
    )
    assert result["source"] == {
        "binlog_file": "mysql-bin.000003",
        "binlog_pos": 555,
        "gtid": "0-2-5,0-1-99",
    }
    assert (
        result["replica"]["master_log_file"] == "bin.000007"
        and result["replica"]["gtid_slave_pos"] == "0-1-99"
    )
    assert result["tables"] == {"app.events": 17} and result["bytes"] == 1000
    assert result["snapshot"] == f"/dev/vg0/{name}"
    manifest = json.loads((tmp_path / "dest" / name / "manifest.json").read_text())
    assert manifest["lock_ms"] == result["lock_ms"] and manifest["binlog_basename"] == "mysql-bin"
    assert all(c.closed for c in conns)


@pytest.mark.parametrize(
    "fail, undone",
    [
        ("lvcreate", ["fsfreeze", "lvremove"]),  # thaw, then remove a half-made snapshot
        ("mount", ["lvremove"]),
        ("rsync", ["umount", "lvremove"]),
    ],
)
def test_lvm_failures_undo_in_reverse(tmp_path, fail, undone):
    """LVM cannot run here: the undo commands after each injected failure are checked."""
    calls, run = lvm_run(tmp_path, fail=fail)
    sql = []
    conns = []

    def connect():
        conns.append(FakeConn(sql))
        return conns[-1]

    with pytest.raises(logic.BackupError, match=f"{fail}.*injected failure") as err:
        snap._run_backup(lvm_settings(tmp_path), run, connect)
    after = calls[[c[0] for c in calls].index(fail) + 1 :]
    assert sorted(c[0] for c in after) == sorted(undone)
    if "fsfreeze" in undone:
        assert ["fsfreeze", "--unfreeze", "/srv/mysql"] in after
    assert all(c.closed for c in conns)  # the lock connection is closed: the lock is gone
    assert "cleanup:" in str(err.value)
    assert list((tmp_path / "dest").glob("*")) == [] if (tmp_path / "dest").exists() else True


def test_refuses_a_server_that_is_not_a_replica(tmp_path):
    calls, run = lvm_run(tmp_path)

    def connect():
        conn = FakeConn([])
        conn.answers["SHOW SLAVE STATUS"] = (["Master_Host"], [])
        return conn

    with pytest.raises(logic.BackupError, match="not a replica"):
        snap._run_backup(lvm_settings(tmp_path), run, connect)
    assert calls == []
