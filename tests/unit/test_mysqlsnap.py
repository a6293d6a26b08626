"""Pure logic of mysqlsnap (salt/_utils/webfarm_mysqlsnap.py), with plain data: settings,
names/retention, backend command plans, rsync, the copy and manifest plans, the checks and
parsers of what the server answers, the verify plan.

The LVM backend cannot run here (this kernel has no device-mapper), so its exact command lines
are checked here, and its sequence and undo order against a recording command runner and a
fake DB connection in tests/functional/modules/test_mysqlsnap.py, where the btrfs backend is
exercised for real.
"""

import datetime
import json

import pytest

import webfarm_mysqlsnap as logic
from lab import defaults

UTC = datetime.UTC
DEFAULTS = defaults.load("mysqlsnap")


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
        DEFAULTS, base(keep=3), {"keep": "5", "port": "3307", "verify": "yes", "__pub_jid": "1"}
    )
    assert s["keep"] == 5 and s["verify"] is True
    assert s["connection"]["port"] == 3307 and s["connection"]["host"] == "127.0.0.1"
    assert s["lock_timeout"] == 10 and s["require_replica"] is True and s["freeze"] == "auto"


def test_nested_override_keeps_the_other_keys():
    s = logic.merge_settings(DEFAULTS, base(), {"connection": {"user": "other"}})
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
        logic.merge_settings(DEFAULTS, base(), overrides)


def test_unknown_pillar_key_is_reported_as_pillar():
    with pytest.raises(logic.SettingsError, match="unknown pillar mysqlsnap setting"):
        logic.merge_settings(DEFAULTS, base(retention=3))


def test_lvm_settings_are_validated():
    s = logic.merge_settings(DEFAULTS, base(**LVM))
    assert s["lvm"]["origin_mount"] == "/srv/mysql"
    with pytest.raises(logic.SettingsError, match="lvm:vg must be a plain name"):
        logic.merge_settings(DEFAULTS, base(**LVM), {"lvm": {"vg": "vg0; rm -rf /"}})
    with pytest.raises(logic.SettingsError, match="not inside lvm:origin_mount"):
        logic.merge_settings(DEFAULTS, base(**LVM), {"lvm": {"origin_mount": "/data"}})


def test_remote_destination_is_accepted_as_is():
    s = logic.merge_settings(DEFAULTS, base(destination="backuphost:/backup/mysql"))
    assert logic.is_remote(s["destination"]) and not logic.is_remote("/backup/mysql")


def test_redacted_hides_the_password():
    s = logic.merge_settings(DEFAULTS, base())
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
    backend = logic.make_backend(logic.merge_settings(DEFAULTS, base()))
    name = "mysqlsnap-20261125T020000.000Z"
    (step,) = backend.locked_steps(name)
    assert step.cmd == ["btrfs", "subvolume", "snapshot", "-r", "/srv/mysql", f"/srv/.snap/{name}"]
    assert step.undo == ["btrfs", "subvolume", "delete", f"/srv/.snap/{name}"]
    assert backend.mount_steps(name) == []
    assert backend.source_dir(name) == f"/srv/.snap/{name}/data"
    assert backend.stale_probe()[:2] == ["find", "/srv/.snap"]
    assert logic.parse_stale(f"{name}\nother\n\nmysqlsnap-x\n") == [name]


def test_btrfs_never_freezes_even_with_freeze_auto():
    backend = logic.make_backend(logic.merge_settings(DEFAULTS, base(freeze="auto")))
    assert [s.label for s in backend.locked_steps("mysqlsnap-20261125T020000.000Z")] == ["snapshot"]


def test_lvm_command_lines():
    """LVM cannot run on this kernel (no device-mapper): the exact command lines are checked."""
    backend = logic.make_backend(logic.merge_settings(DEFAULTS, base(**LVM)))
    name = "mysqlsnap-20261125T020000.000Z"
    steps = backend.locked_steps(name)
    # the command lines as an operator would type them (split on spaces: no argument has one)
    assert [(s.label, s.cmd, s.undo, s.settles) for s in steps] == [
        (
            "freeze",
            "fsfreeze --freeze /srv/mysql".split(),
            "fsfreeze --unfreeze /srv/mysql".split(),
            None,
        ),
        (
            "snapshot",
            f"lvcreate --snapshot --permission r --size 5G --name {name} /dev/vg0/mysql".split(),
            f"lvremove --yes vg0/{name}".split(),
            None,
        ),
        ("thaw", "fsfreeze --unfreeze /srv/mysql".split(), None, "freeze"),
    ]
    (mount,) = backend.mount_steps(name)
    assert (
        mount.cmd == f"mount -t xfs -o ro,nouuid,norecovery /dev/vg0/{name} /mnt/mysqlsnap".split()
    )
    assert mount.undo == ["umount", "/mnt/mysqlsnap"]
    assert backend.source_dir(name) == "/mnt/mysqlsnap/data"
    assert backend.stale_probe() == ["lvs", "--noheadings", "--options", "lv_name", "vg0"]
    assert [s.cmd for s in backend.stale_cleanup(name)] == [
        ["umount", "/mnt/mysqlsnap"],
        ["lvremove", "--yes", f"vg0/{name}"],
    ]


def test_lvm_ext4_mount_and_freeze_none():
    lvm = {**LVM, "lvm": {**LVM["lvm"], "fstype": "ext4"}, "freeze": "none"}
    backend = logic.make_backend(logic.merge_settings(DEFAULTS, base(**lvm)))
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


def test_table_check_problem():
    assert logic.table_check_problem("a", "t", [("a.t", "check", "status", "OK")]) is None
    assert (
        logic.table_check_problem(
            "a", "t", [("a.t", "check", "status", "Table is already up to date")]
        )
        is None
    )
    broken = [("a.t", "check", "warning", "Size mismatch"), ("a.t", "check", "error", "Corrupt")]
    assert logic.table_check_problem("a", "t", broken) == {
        "table": "a.t",
        "messages": [["warning", "Size mismatch"], ["error", "Corrupt"]],
    }
    assert logic.table_check_problem("a", "t", []) == {"table": "a.t", "messages": []}


# ---------------------------------------------------------------- the copy and the manifest

NAME = "mysqlsnap-20261125T020000.000Z"


def test_copy_paths_local_and_remote():
    assert logic.copy_paths("/backup/mysql", NAME) == {
        "backup_dir": f"/backup/mysql/{NAME}",
        "partial": f"/backup/mysql/{NAME}.partial",
        "target": f"/backup/mysql/{NAME}.partial/data",
    }
    assert logic.copy_paths("bk:/backup/mysql/", NAME) == {
        "backup_dir": f"bk:/backup/mysql/{NAME}",
        "partial": None,
        "target": f"bk:/backup/mysql/{NAME}/data",
    }


def test_copy_summary():
    stats = "Total file size: 150,000,000 bytes\n"
    assert logic.copy_summary("/b/x", stats, 1.23456) == {
        "backup_dir": "/b/x",
        "bytes": 150_000_000,
        "copy_s": 1.235,
        "copy_mb_s": 121.5,
    }
    assert logic.copy_summary("/b/x", None, 0.0) == {
        "backup_dir": "/b/x",
        "bytes": None,
        "copy_s": 0.0,
        "copy_mb_s": None,
    }


def test_stale_partials_are_only_ours():
    entries = [
        f"{NAME}.partial",
        NAME,
        "mysqlsnap-garbage.partial",
        "other.partial",
        "mysqlsnap-20261124T020000.000Z.partial",
    ]
    assert logic.stale_partials(entries) == [
        "mysqlsnap-20261124T020000.000Z.partial",
        f"{NAME}.partial",
    ]
    assert logic.stale_partials([]) == []


def test_manifest_text_and_remote_push():
    text = logic.manifest_json({"name": NAME, "bytes": 5, "replica": None})
    assert text.endswith("}\n") and json.loads(text) == {"bytes": 5, "name": NAME, "replica": None}
    assert text.index('"bytes"') < text.index('"name"')  # sorted keys: stable manifests
    assert logic.manifest_push_cmd("/tmp/m.json", f"bk:/b/{NAME}") == [
        "rsync", "--rsh", "ssh -o BatchMode=yes", "/tmp/m.json", f"bk:/b/{NAME}/manifest.json",
    ]  # fmt: skip


# ---------------------------------------------------------------- what the server answers


def test_count_sql_quotes_identifiers():
    assert logic.count_sql("app", "events") == "SELECT COUNT(*) FROM `app`.`events`"
    assert logic.count_sql("a`b", "t") == "SELECT COUNT(*) FROM `a``b`.`t`"


def test_check_replica():
    settings = logic.merge_settings(DEFAULTS, base())
    logic.check_replica(settings, {"Master_Host": "10.0.0.1"})
    with pytest.raises(logic.BackupError, match="not a replica"):
        logic.check_replica(settings, None)
    logic.check_replica(logic.merge_settings(DEFAULTS, base(require_replica=False)), None)


SERVER_ROW = ("/srv/mysql/data/", "./", "", 1, "10.11.6-MariaDB", "/srv/mysql/data/mysql-bin")


def test_check_server_accepts_the_described_server():
    settings = logic.merge_settings(DEFAULTS, base())
    assert logic.check_server(settings, SERVER_ROW) == {
        "version": "10.11.6-MariaDB",
        "flush_engine_logs": False,
        "binlog_basename": "mysql-bin",
    }
    row = SERVER_ROW[:3] + (2,) + SERVER_ROW[4:5] + ("/var/log/mysql/bin",)
    assert logic.check_server(settings, row) == {
        "version": "10.11.6-MariaDB",
        "flush_engine_logs": True,  # innodb_flush_log_at_trx_commit != 1
        "binlog_basename": None,  # binlogs outside the datadir: not in the snapshot
    }


def test_check_server_resolves_links_with_the_given_resolver():
    """The execution module passes os.path.realpath; here a mapping stands for the links."""
    links = {"/var/lib/mysql": "/srv/mysql/data"}
    settings = logic.merge_settings(DEFAULTS, base())
    row = ("/var/lib/mysql",) + SERVER_ROW[1:]
    with pytest.raises(logic.BackupError, match="the server's datadir is /var/lib/mysql"):
        logic.check_server(settings, row)
    checked = logic.check_server(settings, row, resolve=lambda p: links.get(p.rstrip("/"), p))
    assert checked["binlog_basename"] == "mysql-bin"


@pytest.mark.parametrize(
    "index, path, match",
    [
        (1, "/var/log/innodb", "innodb_log_group_home_dir /var/log/innodb is outside the datadir"),
        (2, "/ibdata", "innodb_data_home_dir /ibdata is outside the datadir"),
    ],
)
def test_check_server_refuses_innodb_files_outside_the_datadir(index, path, match):
    row = list(SERVER_ROW)
    row[index] = path
    with pytest.raises(logic.BackupError, match=match):
        logic.check_server(logic.merge_settings(DEFAULTS, base()), tuple(row))


REPLICA_ROW = {
    "Master_Host": "10.0.0.1",
    "Master_Port": 3306,
    "Relay_Master_Log_File": "bin.000007",
    "Exec_Master_Log_Pos": 1234,
    "Gtid_IO_Pos": "0-1-99",
    "Using_Gtid": "Slave_Pos",
}


def test_positions_of_a_replica():
    source, replica = logic.positions(
        {"File": "mysql-bin.000003", "Position": "555"}, "0-2-5,0-1-99", "0-1-99", REPLICA_ROW
    )
    assert source == {"binlog_file": "mysql-bin.000003", "binlog_pos": 555, "gtid": "0-2-5,0-1-99"}
    assert replica == {
        "master_host": "10.0.0.1",
        "master_port": 3306,
        "master_log_file": "bin.000007",
        "master_log_pos": 1234,
        "gtid_slave_pos": "0-1-99",
        "gtid_io_pos": "0-1-99",
        "using_gtid": "Slave_Pos",
    }


def test_positions_without_binlog_or_replication():
    source, replica = logic.positions(None, None, None, None)
    assert source == {"binlog_file": None, "binlog_pos": None, "gtid": ""}
    assert replica is None


def test_command_error_keeps_the_last_lines():
    message = logic.command_error(["rsync", "-a", "x", "y"], 23, "out", "a\nb\nc\nd\n")
    assert message == "rsync -a x y exited 23: b c d"
    assert logic.command_error(["false"], 1, "only stdout", "") == "false exited 1: only stdout"
    assert logic.command_error(["false"], 1, None, None) == "false exited 1: "


# ---------------------------------------------------------------- listing, freshness


def test_summarize_and_freshness():
    now = datetime.datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
    manifest = {"bytes": 9, "lock_ms": 4.5, "replica": {"gtid_slave_pos": "0-1-7"}}
    summary = logic.summarize(NAME, f"/b/{NAME}", manifest, now)
    assert summary == {
        "name": NAME,
        "backup_dir": f"/b/{NAME}",
        "created": "2026-11-25T02:00:00+00:00",
        "age_s": 3600.0,
        "bytes": 9,
        "lock_ms": 4.5,
        "gtid_slave_pos": "0-1-7",
    }
    assert logic.summarize(NAME, "/b", {"replica": None}, now)["gtid_slave_pos"] is None
    assert logic.freshness([summary], 3600) == {"newest": summary, "max_age_s": 3600, "fresh": True}
    assert logic.freshness([summary], 3599)["fresh"] is False
    assert logic.freshness([], 3600) == {"newest": None, "max_age_s": 3600, "fresh": False}


@pytest.mark.parametrize(
    ("mode", "owner", "group", "uid", "gids", "want"),
    [
        (0o750, 0, 0, 105, {107}, False),  # root:root 0750, mysql in neither
        (0o750, 0, 107, 105, {107}, True),  # group mysql may enter
        (0o700, 0, 107, 105, {107}, False),  # group has no x
        (0o751, 0, 0, 105, {107}, True),  # o+x
        (0o070, 105, 107, 105, {107}, False),  # the owner's bits win over the group's
        (0o000, 105, 105, 0, set(), True),  # root enters anything
    ],
)
def test_searchable(mode, owner, group, uid, gids, want):
    assert logic.searchable(mode, owner, group, uid, gids) is want
