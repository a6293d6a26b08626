"""mysqlsnap logic, pure: settings, names and retention, backend command plans, rsync and
verify command lines, parsers of what the server and the tools answer, manifests.

No I/O here (no commands, SQL, files, threads or signals; tests/unit/test_layering.py checks
the imports): every function takes plain data and returns plain data, so
tests/unit/test_mysqlsnap.py tests it without a server. The execution module
(salt/_modules/mysqlsnap.py) runs the backup sequence with these plans and parsers.
"""

import copy
import datetime
import json
import os
import re
from dataclasses import dataclass, field

import webfarm_values

NAME_PREFIX = "mysqlsnap-"
NAME_RE = re.compile(r"^mysqlsnap-(\d{8}T\d{6})\.(\d{3})Z$")
MANIFEST = "manifest.json"
DATA_SUBDIR = "data"
PARTIAL_SUFFIX = ".partial"
SYSTEM_SCHEMAS = ("mysql", "information_schema", "performance_schema", "sys")
BACKENDS = ("btrfs", "lvm")
FREEZE_MODES = ("auto", "none")
CONNECTION_KEYS = ("host", "port", "unix_socket", "user", "password", "defaults_file")

# The defaults are salt/states/mysqlsnap/defaults.yaml (webfarm.defaults mysqlsnap on a
# minion): the functions that need them take them as ``defaults``.


class SettingsError(ValueError):
    """Bad settings; the message says which key and what is wanted."""


class BackupError(RuntimeError):
    """The backup failed; everything it had done was undone (see ``cleanup``). Raised here by
    :func:`check_server`, and by the execution module's backup sequence."""

    def __init__(self, message, cleanup=None):
        super().__init__(message)
        self.cleanup = cleanup or []


class BackupInterrupted(BaseException):
    """SIGTERM arrived during a backup (a job timeout or kill): undo, then stop."""


# ---------------------------------------------------------------- settings


def _deep_merge(base, extra):
    out = copy.deepcopy(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _unknown(given, allowed, where):
    bad = sorted(set(given) - set(allowed))
    if bad:
        raise SettingsError(f"unknown {where} setting(s): {', '.join(bad)}")


def merge_settings(defaults, pillar=None, overrides=None):
    """``defaults`` (salt/states/mysqlsnap/defaults.yaml) <- pillar ``mysqlsnap`` <- keyword
    overrides, validated.

    Flat connection keys (``host=``, ``user=`` ...) in ``overrides`` go into ``connection``.
    Raises :class:`SettingsError` naming the bad key.
    """
    pillar = dict(pillar or {})
    overrides = {k: v for k, v in (overrides or {}).items() if not str(k).startswith("__")}
    conn_flat = {k: overrides.pop(k) for k in list(overrides) if k in CONNECTION_KEYS}
    if conn_flat:
        overrides["connection"] = {**(overrides.get("connection") or {}), **conn_flat}
    for where, layer in (("pillar mysqlsnap", pillar), ("argument", overrides)):
        _unknown(layer, defaults, where)
        for sub in ("connection", "btrfs", "lvm"):
            if layer.get(sub) is not None and not isinstance(layer[sub], dict):
                raise SettingsError(f"{sub} must be a mapping")
            _unknown(layer.get(sub) or {}, defaults[sub], sub)
    return validate(_deep_merge(_deep_merge(defaults, pillar), overrides))


def _bool(value, key):
    return webfarm_values.as_bool(value, key, SettingsError)


def _number(value, key, minimum, kind=float):
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{key} must be a number, got {value!r}") from None
    if isinstance(value, bool) or number < minimum:
        raise SettingsError(f"{key} must be >= {minimum}, got {value!r}")
    return number


def _abspath(value, key):
    if not value or not isinstance(value, str) or not os.path.isabs(value):
        raise SettingsError(f"{key} must be an absolute path, got {value!r}")
    return os.path.normpath(value)


def _inside(path, parent):
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def is_remote(destination):
    """``host:path`` (rsync over ssh) as opposed to a local directory."""
    return not destination.startswith("/") and ":" in destination


def validate(settings):
    s = copy.deepcopy(settings)
    conn = s["connection"]
    if not conn.get("unix_socket") and not conn.get("host") and not conn.get("defaults_file"):
        raise SettingsError("connection needs unix_socket, host or defaults_file")
    conn["port"] = _number(conn.get("port") or 3306, "connection:port", 1, int)
    conn["connect_timeout"] = _number(
        conn.get("connect_timeout"), "connection:connect_timeout", 1, int
    )
    if conn.get("password") is not None and conn.get("defaults_file"):
        raise SettingsError("give connection:password or connection:defaults_file, not both")
    s["datadir"] = _abspath(s["datadir"], "datadir")
    if s["backend"] not in BACKENDS:
        raise SettingsError(f"backend must be one of {', '.join(BACKENDS)}, got {s['backend']!r}")
    if s["freeze"] not in FREEZE_MODES:
        raise SettingsError(f"freeze must be auto or none, got {s['freeze']!r}")
    if s["backend"] == "btrfs":
        b = s["btrfs"]
        b["subvolume"] = _abspath(b.get("subvolume"), "btrfs:subvolume")
        b["snapshot_dir"] = _abspath(b.get("snapshot_dir"), "btrfs:snapshot_dir")
        if not _inside(s["datadir"], b["subvolume"]):
            raise SettingsError(
                f"datadir {s['datadir']} is not inside btrfs:subvolume {b['subvolume']}"
            )
        if _inside(b["snapshot_dir"], b["subvolume"]):
            raise SettingsError("btrfs:snapshot_dir must not be inside btrfs:subvolume")
    else:
        v = s["lvm"]
        for key in ("vg", "lv", "snapshot_size", "fstype"):
            if not v.get(key) or not re.fullmatch(r"[A-Za-z0-9+_.\-]+", str(v[key])):
                raise SettingsError(f"lvm:{key} must be a plain name, got {v.get(key)!r}")
        v["mount_point"] = _abspath(v.get("mount_point"), "lvm:mount_point")
        v["origin_mount"] = _abspath(v.get("origin_mount"), "lvm:origin_mount")
        if not _inside(s["datadir"], v["origin_mount"]):
            raise SettingsError(
                f"datadir {s['datadir']} is not inside lvm:origin_mount {v['origin_mount']}"
            )
    dest = s.get("destination")
    if not dest or not isinstance(dest, str):
        raise SettingsError("destination must be a local directory or host:path")
    if not is_remote(dest):
        s["destination"] = _abspath(dest, "destination")
        if _inside(s["destination"], s["datadir"]):
            raise SettingsError("destination must not be inside datadir")
    s["keep"] = _number(s["keep"], "keep", 1, int)
    s["lock_timeout"] = _number(s["lock_timeout"], "lock_timeout", 0.01)
    s["copy_timeout"] = _number(s["copy_timeout"], "copy_timeout", 1)
    s["verify_timeout"] = _number(s["verify_timeout"], "verify_timeout", 1)
    for key in ("require_replica", "verify", "row_counts"):
        s[key] = _bool(s[key], key)
    s["lock_file"] = _abspath(s["lock_file"], "lock_file")
    return s


def redacted(settings):
    """Settings safe to show: the password replaced."""
    out = copy.deepcopy(settings)
    if out.get("connection", {}).get("password") is not None:
        out["connection"]["password"] = "********"
    return out


def parse_duration(value):
    """Seconds from ``3600``, ``"90s"``, ``"30m"``, ``"24h"``, ``"7d"``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(value))
    if not match:
        raise SettingsError(f"duration must look like 3600, 90s, 30m, 24h or 7d, got {value!r}")
    scale = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return float(match.group(1)) * scale


# ---------------------------------------------------------------- names, retention


def backup_name(now):
    """``mysqlsnap-20261125T153612.123Z`` for an aware UTC datetime (sorts by time)."""
    now = now.astimezone(datetime.UTC)
    return f"{NAME_PREFIX}{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}Z"


def name_time(name):
    """The UTC time in a backup name, or None when the name is not one of ours."""
    match = NAME_RE.match(name)
    if not match:
        return None
    stamp = datetime.datetime.strptime(match.group(1), "%Y%m%dT%H%M%S")
    return stamp.replace(microsecond=int(match.group(2)) * 1000, tzinfo=datetime.UTC)


def plan_prune(names, keep):
    """Names to delete so that the newest ``keep`` stay, oldest first."""
    keep = int(keep)
    if keep < 1:
        raise SettingsError("keep must be >= 1")
    ours = sorted((n for n in names if name_time(n)), key=name_time)
    return ours[: max(0, len(ours) - keep)]


def newest_age(names, now):
    """Seconds since the newest backup in ``names``, or None when there is none."""
    times = [t for t in map(name_time, names) if t]
    if not times:
        return None
    return (now - max(times)).total_seconds()


# ---------------------------------------------------------------- backends


@dataclass
class Step:
    """One command of a plan; ``undo`` reverts it, ``settles`` names an earlier step whose
    undo it performs (thaw settles freeze)."""

    label: str
    cmd: list
    undo: list | None = None
    settles: str | None = None
    undo_ok_rcs: tuple = field(default=(0,))


class BtrfsBackend:
    """Read-only ``btrfs subvolume snapshot`` of the subvolume holding the datadir; the
    snapshot is a directory, so no mount is needed. btrfs snapshots are atomic: no freeze."""

    name = "btrfs"

    def __init__(self, settings):
        self.subvolume = settings["btrfs"]["subvolume"]
        self.snapshot_dir = settings["btrfs"]["snapshot_dir"]
        self.datadir = settings["datadir"]
        self.freeze = False

    def snapshot_path(self, name):
        return os.path.join(self.snapshot_dir, name)

    def locked_steps(self, name):
        path = self.snapshot_path(name)
        return [
            Step(
                "snapshot",
                ["btrfs", "subvolume", "snapshot", "-r", self.subvolume, path],
                undo=["btrfs", "subvolume", "delete", path],
            )
        ]

    def mount_steps(self, name):
        return []

    def source_dir(self, name):
        rel = os.path.relpath(self.datadir, self.subvolume)
        return os.path.normpath(os.path.join(self.snapshot_path(name), rel))

    def stale_probe(self):
        return [
            "find",
            self.snapshot_dir,
            "-mindepth",
            "1",
            "-maxdepth",
            "1",
            "-name",
            f"{NAME_PREFIX}*",
            "-printf",
            "%f\\n",
        ]

    def stale_cleanup(self, name):
        return [
            Step(
                "remove stale snapshot", ["btrfs", "subvolume", "delete", self.snapshot_path(name)]
            )
        ]


class LvmBackend:
    """``lvcreate --snapshot`` of the LV holding the datadir, mounted read-only for the copy.

    ``freeze: auto`` freezes the origin filesystem around the snapshot (xfs/ext4 get a clean
    journal that way, so the snapshot mounts without log replay); xfs mounts need ``nouuid``.
    """

    name = "lvm"
    MOUNT_OPTIONS = {"xfs": "ro,nouuid,norecovery", "ext4": "ro,noload", "ext3": "ro,noload"}

    def __init__(self, settings):
        lvm = settings["lvm"]
        self.vg, self.lv = lvm["vg"], lvm["lv"]
        self.size = lvm["snapshot_size"]
        self.mount_point = lvm["mount_point"]
        self.fstype = lvm["fstype"]
        self.origin_mount = lvm["origin_mount"]
        self.datadir = settings["datadir"]
        self.freeze = settings["freeze"] == "auto"

    def snapshot_path(self, name):
        return f"/dev/{self.vg}/{name}"

    def locked_steps(self, name):
        steps = []
        if self.freeze:
            steps.append(
                Step(
                    "freeze",
                    ["fsfreeze", "--freeze", self.origin_mount],
                    undo=["fsfreeze", "--unfreeze", self.origin_mount],
                )
            )
        steps.append(
            Step(
                "snapshot",
                [
                    "lvcreate",
                    "--snapshot",
                    "--permission",
                    "r",
                    "--size",
                    self.size,
                    "--name",
                    name,
                    f"/dev/{self.vg}/{self.lv}",
                ],
                undo=["lvremove", "--yes", f"{self.vg}/{name}"],
            )
        )
        if self.freeze:
            steps.append(
                Step("thaw", ["fsfreeze", "--unfreeze", self.origin_mount], settles="freeze")
            )
        return steps

    def mount_steps(self, name):
        options = self.MOUNT_OPTIONS.get(self.fstype, "ro")
        return [
            Step(
                "mount",
                [
                    "mount",
                    "-t",
                    self.fstype,
                    "-o",
                    options,
                    self.snapshot_path(name),
                    self.mount_point,
                ],
                undo=["umount", self.mount_point],
            )
        ]

    def source_dir(self, name):
        rel = os.path.relpath(self.datadir, self.origin_mount)
        return os.path.normpath(os.path.join(self.mount_point, rel))

    def stale_probe(self):
        return ["lvs", "--noheadings", "--options", "lv_name", self.vg]

    def stale_cleanup(self, name):
        return [
            # Not mounted is fine (umount exits 32 then).
            Step("unmount stale snapshot", ["umount", self.mount_point], undo_ok_rcs=(0, 32)),
            Step("remove stale snapshot", ["lvremove", "--yes", f"{self.vg}/{name}"]),
        ]


def make_backend(settings):
    return {"btrfs": BtrfsBackend, "lvm": LvmBackend}[settings["backend"]](settings)


def parse_stale(output):
    """Our snapshot names in the output of a backend's ``stale_probe``."""
    return sorted(n.strip() for n in output.splitlines() if NAME_RE.match(n.strip()))


# ---------------------------------------------------------------- rsync


def rsync_cmd(source_dir, target):
    """Copy the snapshot's datadir into ``target`` (local dir or host:path)."""
    cmd = ["rsync", "--archive", "--whole-file", "--numeric-ids", "--stats"]
    if is_remote(target):
        cmd += ["--rsh", "ssh -o BatchMode=yes"]
    return cmd + [source_dir.rstrip("/") + "/", target.rstrip("/") + "/"]


def parse_rsync_bytes(stats):
    """``Total file size`` from ``rsync --stats`` output."""
    match = re.search(r"^Total file size: ([\d,.]+) bytes", stats, re.MULTILINE)
    return int(re.sub(r"[,.]", "", match.group(1))) if match else None


# ---------------------------------------------------------------- the copy and the manifest


def copy_paths(destination, name):
    """Where backup ``name`` goes: ``backup_dir`` (its final name), ``partial`` (the local
    directory it is copied into and renamed from once complete; None for host:path) and
    ``target`` (the rsync target for the datadir)."""
    if is_remote(destination):
        backup_dir = f"{destination.rstrip('/')}/{name}"
        return {"backup_dir": backup_dir, "partial": None, "target": f"{backup_dir}/{DATA_SUBDIR}"}
    backup_dir = os.path.join(destination, name)
    partial = backup_dir + PARTIAL_SUFFIX
    return {
        "backup_dir": backup_dir,
        "partial": partial,
        "target": os.path.join(partial, DATA_SUBDIR),
    }


def copy_summary(backup_dir, stats, copy_s):
    """The manifest's copy figures from ``rsync --stats`` output and the copy's seconds."""
    size = parse_rsync_bytes(stats or "")
    return {
        "backup_dir": backup_dir,
        "bytes": size,
        "copy_s": round(copy_s, 3),
        "copy_mb_s": round(size / copy_s / 1e6, 1) if size and copy_s > 0 else None,
    }


def stale_partials(entries):
    """The partial copies of ours among a destination's entries (left by a killed run)."""
    return [
        entry
        for entry in sorted(entries)
        if entry.endswith(PARTIAL_SUFFIX) and name_time(entry[: -len(PARTIAL_SUFFIX)])
    ]


def manifest_json(result):
    """The text of ``manifest.json`` for a backup's result dict."""
    return json.dumps(result, indent=2, sort_keys=True) + "\n"


def manifest_push_cmd(local_file, backup_dir):
    """Send the manifest, written last, to a remote (host:path) backup."""
    return ["rsync", "--rsh", "ssh -o BatchMode=yes", local_file, f"{backup_dir}/{MANIFEST}"]


# ---------------------------------------------------------------- what the server answers


def quote_ident(name):
    return "`" + str(name).replace("`", "``") + "`"


def count_sql(schema, table):
    return f"SELECT COUNT(*) FROM {quote_ident(schema)}.{quote_ident(table)}"


def check_replica(settings, replica_status):
    """Refuse a server that is not a replica (``replica_status``: the ``SHOW SLAVE STATUS``
    row as a dict, None on a primary) unless ``require_replica`` is off."""
    if settings["require_replica"] and not replica_status:
        raise BackupError(
            "this server is not a replica (SHOW SLAVE STATUS is empty): back up a replica, "
            "or pass require_replica=False to lock a primary on purpose"
        )


def check_server(settings, variables, resolve=os.path.normpath):
    """Refuse a server whose files are not where the settings say, before locking anything.

    ``variables`` is the row of ``@@datadir, @@innodb_log_group_home_dir,
    @@innodb_data_home_dir, @@innodb_flush_log_at_trx_commit, @@version,
    @@log_bin_basename``; ``resolve`` turns a path into the one it really is (the execution
    module passes ``os.path.realpath``). Returns what the backup needs to know of the server;
    raises :class:`BackupError` naming what is wrong.
    """
    datadir, log_dir, data_home, flush_at_commit, version, binlog_base = variables
    real = resolve(datadir)
    if real.rstrip("/") != resolve(settings["datadir"]).rstrip("/"):
        raise BackupError(f"the server's datadir is {datadir}, settings say {settings['datadir']}")
    for what, path in (("innodb_log_group_home_dir", log_dir), ("innodb_data_home_dir", data_home)):
        if path and os.path.isabs(path) and not _inside(resolve(path), real.rstrip("/")):
            raise BackupError(
                f"{what} {path} is outside the datadir: a snapshot would not include it"
            )
    binlog = None
    if binlog_base and _inside(resolve(binlog_base), real.rstrip("/")):
        binlog = os.path.relpath(resolve(binlog_base), real)
    return {
        "version": version,
        "flush_engine_logs": int(flush_at_commit) != 1,
        "binlog_basename": binlog,
    }


def positions(master_status, gtid_binlog, gtid_slave, replica_status):
    """Source (this server's binlog) and replica (its position on its primary) positions from
    the rows read under the read lock: ``SHOW MASTER STATUS`` (dict or None),
    ``@@GLOBAL.gtid_binlog_pos``, ``@@GLOBAL.gtid_slave_pos`` and ``SHOW SLAVE STATUS``
    (dict, or None on a primary)."""
    master = master_status or {}
    source = {
        "binlog_file": master.get("File"),
        "binlog_pos": int(master["Position"]) if master.get("Position") is not None else None,
        "gtid": gtid_binlog or "",
    }
    replica = None
    if replica_status:
        status = replica_status
        replica = {
            "master_host": status.get("Master_Host"),
            "master_port": int(status.get("Master_Port") or 0),
            "master_log_file": status.get("Relay_Master_Log_File"),
            "master_log_pos": int(status.get("Exec_Master_Log_Pos") or 0),
            "gtid_slave_pos": gtid_slave or "",
            "gtid_io_pos": status.get("Gtid_IO_Pos") or "",
            "using_gtid": status.get("Using_Gtid"),
        }
    return source, replica


def command_error(cmd, returncode, stdout, stderr):
    """The message of a failed command: the command, its exit code, its last output lines."""
    detail = (stderr or stdout or "").strip().splitlines()
    return f"{' '.join(cmd)} exited {returncode}: {' '.join(detail[-3:])}"


# ---------------------------------------------------------------- listing, verify planning


def summarize(name, backup_dir, manifest, now):
    created = name_time(name)
    return {
        "name": name,
        "backup_dir": backup_dir,
        "created": created.isoformat(),
        "age_s": round((now - created).total_seconds(), 1),
        "bytes": manifest.get("bytes"),
        "lock_ms": manifest.get("lock_ms"),
        "gtid_slave_pos": (manifest.get("replica") or {}).get("gtid_slave_pos"),
    }


def freshness(backups, max_age_s):
    """Whether the newest of ``backups`` (summaries, oldest first) is at most ``max_age_s``
    seconds old: ``{"newest": summary or None, "max_age_s": seconds, "fresh": bool}``."""
    newest = backups[-1] if backups else None
    return {
        "newest": newest,
        "max_age_s": max_age_s,
        "fresh": bool(newest) and newest["age_s"] <= max_age_s,
    }


def searchable(mode, owner, group, uid, gids):
    """Whether a user (``uid``, group ids ``gids``) may enter a directory of ``mode`` owned by
    ``owner``:``group`` (the owner bits win over the group's, the group's over the others')."""
    if uid == 0:
        return True
    if uid == owner:
        return bool(mode & 0o100)
    if group in gids:
        return bool(mode & 0o010)
    return bool(mode & 0o001)


def verify_server_cmd(binary, datadir, port, socket, pid_file, log_file, run_as=None, binlog=None):
    """A throw-away server on a copy of a backup: loopback only, no grants, no replication,
    small buffers; InnoDB runs its crash recovery on start. ``binlog`` (the binlog basename
    relative to the datadir) lets recovery resolve transactions the snapshot caught between
    prepare and commit exactly as the real server would after a crash."""
    cmd = [
        binary,
        "--no-defaults",
        f"--datadir={datadir}",
        f"--port={port}",
        "--bind-address=127.0.0.1",
        "--skip-networking=0",
        f"--socket={socket}",
        f"--pid-file={pid_file}",
        f"--log-error={log_file}",
        "--skip-grant-tables",
        "--skip-slave-start",
        f"--log-bin={os.path.join(datadir, binlog)}" if binlog else "--skip-log-bin",
        "--skip-name-resolve",
        "--server-id=4294967295",
        "--innodb-buffer-pool-size=64M",
        "--innodb-fast-shutdown=1",
        "--skip-external-locking",
        "--relay-log=throwaway-relay",
        "--master-info-file=throwaway-master.info",
        "--relay-log-info-file=throwaway-relay.info",
    ]
    if run_as:
        cmd.append(f"--user={run_as}")
    return cmd


def table_check_problem(schema, table, result):
    """None when the rows of ``CHECK TABLE`` say the table is fine, else what they say."""
    final = result[-1] if result else None
    if (
        not final
        or final[2].lower() == "error"
        or final[3] not in ("OK", "Table is already up to date")
    ):
        return {"table": f"{schema}.{table}", "messages": [list(r[2:4]) for r in result]}
    return None


def compare_counts(expected, actual):
    """Differences between manifest row counts and the restored ones: ``{table: [exp, got]}``."""
    return {
        table: [count, actual.get(table)]
        for table, count in sorted(expected.items())
        if actual.get(table) != count
    }
