"""Pure logic of mysqlsnap: settings, names/retention, backend command plans, rsync, verify plan.

The LVM backend cannot run here (this kernel has no device-mapper), so its exact command lines
and its undo order are checked against a recording command runner and a fake DB connection;
the btrfs backend is exercised for real in tests/functional/modules/test_mysqlsnap.py.
"""

import datetime
import json

import pytest
import webfarm_mysqlsnap as logic

UTC = datetime.UTC


def base(**extra):
    settings = {
        "connection": {"host": "127.0.0.1", "user": "backup", "password": "pw"},
        "datadir": "/srv/mysql/data",
        "btrfs": {"subvolume": "/srv/mysql", "snapshot_dir": "/srv/.snap"},
        "destination": "/backup/mysql",
    }
    settings.update(extra)
    return settings


LVM = {
    "backend": "lvm",
    "lvm": {
        "vg": "vg0",
        "lv": "mysql",
        "snapshot_size": "5G",
        "mount_point": "/mnt/mysqlsnap",
        "fstype": "xfs",
        "origin_mount": "/srv/mysql",
    },
}


# ---------------------------------------------------------------- settings


def test_defaults_pillar_and_overrides_merge():
    s = logic.merge_settings(
        base(keep=3), {"keep": "5", "port": "3307", "verify": "yes", "__pub_jid": "1"}
    )
    assert s["keep"] == 5 and s["verify"] is True
    assert s["connection"]["port"] == 3307 and s["connection"]["host"] == "127.0.0.1"
    assert s["lock_timeout"] == 10 and s["require_replica"] is True and s["freeze"] == "auto"


def test_nested_override_keeps_the_other_keys():
    s = logic.merge_settings(base(), {"connection": {"user": "other"}})
    assert s["connection"] == {
        **s["connection"],
        "user": "other",
        "host": "127.0.0.1",
        "password": "pw",
    }


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"backend": "zfs"}, "backend must be one of"),
        ({"freeze": "always"}, "freeze must be auto or none"),
        ({"keep": 0}, "keep must be >= 1"),
        ({"keep": True}, "keep must be >= 1"),
        ({"lock_timeout": "x"}, "lock_timeout must be a number"),
        ({"verify": "maybe"}, "verify must be true or false"),
        ({"datadir": "var/lib/mysql"}, "datadir must be an absolute path"),
        ({"datadir": "/var/lib/mysql"}, "not inside btrfs:subvolume"),
        ({"btrfs": {"snapshot_dir": "/srv/mysql/snaps"}}, "must not be inside btrfs:subvolume"),
        ({"destination": "/srv/mysql/data/backups"}, "must not be inside datadir"),
        ({"destination": ""}, "destination must be"),
        ({"connection": {"host": None}}, "needs unix_socket, host or defaults_file"),
        ({"defaults_file": "/root/.my.cnf"}, "not both"),
        ({"nonsense": 1}, "unknown argument setting"),
        ({"lvm": {"size": 1}}, "unknown lvm setting"),
        ({"connection": "localhost"}, "connection must be a mapping"),
    ],
)
def test_bad_settings_name_the_key(overrides, match):
    with pytest.raises(logic.SettingsError, match=match):
        logic.merge_settings(base(), overrides)


def test_unknown_pillar_key_is_reported_as_pillar():
    with pytest.raises(logic.SettingsError, match="unknown pillar mysqlsnap setting"):
        logic.merge_settings(base(retention=3))


def test_lvm_settings_are_validated():
    s = logic.merge_settings(base(**LVM))
    assert s["lvm"]["origin_mount"] == "/srv/mysql"
    with pytest.raises(logic.SettingsError, match="lvm:vg must be a plain name"):
        logic.merge_settings(base(**LVM), {"lvm": {"vg": "vg0; rm -rf /"}})
    with pytest.raises(logic.SettingsError, match="not inside lvm:origin_mount"):
        logic.merge_settings(base(**LVM), {"lvm": {"origin_mount": "/data"}})


def test_remote_destination_is_accepted_as_is():
    s = logic.merge_settings(base(destination="backuphost:/backup/mysql"))
    assert logic.is_remote(s["destination"]) and not logic.is_remote("/backup/mysql")


def test_redacted_hides_the_password():
    s = logic.merge_settings(base())
    shown = logic.redacted(s)
    assert shown["connection"]["password"] == "********" and s["connection"]["password"] == "pw"


@pytest.mark.parametrize(
    "value, seconds",
    [(3600, 3600), ("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800), ("1.5h", 5400)],
)
def test_parse_duration(value, seconds):
    assert logic.parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["soon", "-5", "5w", None, True])
def test_parse_duration_rejects(value):
    with pytest.raises(logic.SettingsError, match="duration"):
        logic.parse_duration(value)


# ---------------------------------------------------------------- names, retention


def test_backup_names_round_trip_and_sort_by_time():
    t = datetime.datetime(2026, 11, 25, 2, 0, 5, 123456, tzinfo=UTC)
    name = logic.backup_name(t)
    assert name == "mysqlsnap-20261125T020005.123Z"
    assert logic.name_time(name) == t.replace(microsecond=123000)
    assert logic.name_time("mysqlsnap-garbage") is None and logic.name_time(".verify-x") is None


def test_plan_prune_removes_the_oldest_and_ignores_foreign_names():
    names = [
        "mysqlsnap-20261125T020000.000Z",
        "lost+found",
        "mysqlsnap-20261123T020000.000Z",
        "mysqlsnap-20261124T020000.000Z",
    ]
    assert logic.plan_prune(names, 2) == ["mysqlsnap-20261123T020000.000Z"]
    assert logic.plan_prune(names, 3) == []
    with pytest.raises(logic.SettingsError):
        logic.plan_prune(names, 0)


def test_newest_age():
    now = datetime.datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
    assert (
        logic.newest_age(["mysqlsnap-20261125T020000.000Z", "mysqlsnap-20261124T020000.000Z"], now)
        == 3600
    )
    assert logic.newest_age([], now) is None


# ---------------------------------------------------------------- backends, rsync


def test_btrfs_plan():
    backend = logic.make_backend(logic.merge_settings(base()))
    name = "mysqlsnap-20261125T020000.000Z"
    (step,) = backend.locked_steps(name)
    assert step.cmd == ["btrfs", "subvolume", "snapshot", "-r", "/srv/mysql", f"/srv/.snap/{name}"]
    assert step.undo == ["btrfs", "subvolume", "delete", f"/srv/.snap/{name}"]
    assert backend.mount_steps(name) == []
    assert backend.source_dir(name) == f"/srv/.snap/{name}/data"
    assert backend.stale_probe()[:2] == ["find", "/srv/.snap"]
    assert logic.parse_stale(f"{name}\nother\n\nmysqlsnap-x\n") == [name]


def test_btrfs_never_freezes_even_with_freeze_auto():
    backend = logic.make_backend(logic.merge_settings(base(freeze="auto")))
    assert [s.label for s in backend.locked_steps("mysqlsnap-20261125T020000.000Z")] == ["snapshot"]


def test_lvm_command_lines():
    """LVM cannot run on this kernel (no device-mapper): the exact command lines are checked."""
    backend = logic.make_backend(logic.merge_settings(base(**LVM)))
    name = "mysqlsnap-20261125T020000.000Z"
    steps = backend.locked_steps(name)
    assert [(s.label, s.cmd, s.undo, s.settles) for s in steps] == [
        (
            "freeze",
            ["fsfreeze", "--freeze", "/srv/mysql"],
            ["fsfreeze", "--unfreeze", "/srv/mysql"],
            None,
        ),
        (
            "snapshot",
            [
                "lvcreate",
                "--snapshot",
                "--permission",
                "r",
                "--size",
                "5G",
                "--name",
                name,
                "/dev/vg0/mysql",
            ],
            ["lvremove", "--yes", f"vg0/{name}"],
            None,
        ),
        ("thaw", ["fsfreeze", "--unfreeze", "/srv/mysql"], None, "freeze"),
    ]
    (mount,) = backend.mount_steps(name)
    assert mount.cmd == [
        "mount",
        "-t",
        "xfs",
        "-o",
        "ro,nouuid,norecovery",
        f"/dev/vg0/{name}",
        "/mnt/mysqlsnap",
    ]
    assert mount.undo == ["umount", "/mnt/mysqlsnap"]
    assert backend.source_dir(name) == "/mnt/mysqlsnap/data"
    assert backend.stale_probe() == ["lvs", "--noheadings", "--options", "lv_name", "vg0"]
    assert [s.cmd for s in backend.stale_cleanup(name)] == [
        ["umount", "/mnt/mysqlsnap"],
        ["lvremove", "--yes", f"vg0/{name}"],
    ]


def test_lvm_ext4_mount_and_freeze_none():
    lvm = {**LVM, "lvm": {**LVM["lvm"], "fstype": "ext4"}, "freeze": "none"}
    backend = logic.make_backend(logic.merge_settings(base(**lvm)))
    assert [s.label for s in backend.locked_steps("n")] == ["snapshot"]
    assert backend.mount_steps("n")[0].cmd[3:5] == ["-o", "ro,noload"]


def test_rsync_command_and_stats():
    assert logic.rsync_cmd("/snap/data", "/backup/x/data") == [
        "rsync", "--archive", "--whole-file", "--numeric-ids", "--stats", "/snap/data/", "/backup/x/data/",
    ]  # fmt: skip
    remote = logic.rsync_cmd("/snap/data/", "bk:/backup/x/data")
    assert remote[-4:] == ["--rsh", "ssh -o BatchMode=yes", "/snap/data/", "bk:/backup/x/data/"]
    stats = "Number of files: 12\nTotal file size: 1,234,567 bytes\nTotal transferred file size: 5 bytes\n"
    assert logic.parse_rsync_bytes(stats) == 1234567
    assert logic.parse_rsync_bytes("garbage") is None


def test_verify_server_command():
    cmd = logic.verify_server_cmd(
        "/usr/sbin/mariadbd",
        "/b/.v/data",
        4406,
        "/b/.v/s.sock",
        "/b/.v/p",
        "/b/.v/e",
        "mysql",
        "mysql-bin",
    )
    assert cmd[:2] == ["/usr/sbin/mariadbd", "--no-defaults"]
    for arg in (
        "--port=4406",
        "--bind-address=127.0.0.1",
        "--skip-grant-tables",
        "--skip-slave-start",
        "--user=mysql",
    ):
        assert arg in cmd
    assert "--log-bin=/b/.v/data/mysql-bin" in cmd and "--skip-log-bin" not in cmd
    assert "--skip-log-bin" in logic.verify_server_cmd("m", "/d", 1, "s", "p", "e")


def test_compare_counts():
    assert logic.compare_counts({"a.t": 3, "a.u": 1}, {"a.t": 3, "a.u": 1}) == {}
    assert logic.compare_counts({"a.t": 3, "a.u": 1}, {"a.t": 2}) == {
        "a.t": [3, 2],
        "a.u": [1, None],
    }


def test_undo_runs_newest_first_and_reports_failures():
    done = []
    undo = logic.Undo()
    undo.push("a", lambda: done.append("a"))
    undo.push("b", lambda: (_ for _ in ()).throw(OSError("busy")))
    undo.push("c", lambda: done.append("c"))
    undo.settle("c")
    report = undo.unwind()
    assert done == ["a"]
    assert report == ["b: FAILED (busy) - do it by hand", "a: done"]


def test_sigterm_during_undo_waits_until_everything_is_undone():
    import os
    import signal

    done = []
    undo = logic.Undo()
    undo.push("first", lambda: done.append("first"))
    undo.push("second", lambda: (os.kill(os.getpid(), signal.SIGTERM), done.append("second")))
    with pytest.raises(logic.BackupInterrupted), logic.interruptible():
        undo.unwind()
    assert done == ["second", "first"]


# ---------------------------------------------------------------- the LVM sequence (fakes)


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
    return logic.merge_settings(base(**LVM, destination=str(tmp_path / "dest")))


def test_lvm_backup_sequence(tmp_path):
    """LVM cannot run here: fake runner and connection check the order of the real commands."""
    calls, run = lvm_run(tmp_path)
    sql = []
    conns = []

    def connect():
        conns.append(FakeConn(sql))
        return conns[-1]

    now = datetime.datetime(2026, 11, 25, 2, 0, tzinfo=UTC)
    result = logic.run_backup(lvm_settings(tmp_path), run, connect, now=now)
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
        logic.run_backup(lvm_settings(tmp_path), run, connect)
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
        logic.run_backup(lvm_settings(tmp_path), run, connect)
    assert calls == []
