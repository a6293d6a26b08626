"""mysqlsnap logic: settings, backend command plans, the locked snapshot sequence, manifests
and retention.

Nothing here imports Salt. The backup sequence (:func:`run_backup`) talks to the outside world
only through two callables it is given — ``run(cmd, timeout)`` for commands and ``connect()``
for DB-API connections — so the exec module passes real ones (subprocess, PyMySQL) and tests
can wrap them to inject failures.
"""

import contextlib
import copy
import datetime
import json
import math
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field

NAME_PREFIX = "mysqlsnap-"
NAME_RE = re.compile(r"^mysqlsnap-(\d{8}T\d{6})\.(\d{3})Z$")
MANIFEST = "manifest.json"
DATA_SUBDIR = "data"
PARTIAL_SUFFIX = ".partial"
SYSTEM_SCHEMAS = ("mysql", "information_schema", "performance_schema", "sys")
BACKENDS = ("btrfs", "lvm")
FREEZE_MODES = ("auto", "none")
CONNECTION_KEYS = ("host", "port", "unix_socket", "user", "password", "defaults_file")

DEFAULTS = {
    "connection": {
        "host": None,
        "port": 3306,
        "unix_socket": None,
        "user": None,
        "password": None,
        "defaults_file": None,
        "connect_timeout": 10,
    },
    "datadir": "/var/lib/mysql",
    "backend": "btrfs",
    "btrfs": {"subvolume": None, "snapshot_dir": None},
    "lvm": {
        "vg": None,
        "lv": None,
        "snapshot_size": "10G",
        "mount_point": "/mnt/mysqlsnap",
        "fstype": "xfs",
        "origin_mount": None,
    },
    "freeze": "auto",
    "destination": None,
    "keep": 7,
    "lock_timeout": 10,
    "require_replica": True,
    "verify": False,
    "row_counts": True,
    "lock_file": "/run/mysqlsnap.lock",
    "copy_timeout": 6 * 3600,
    "verify_timeout": 300,
    # Read by the mysql/backup SLS only.
    "schedule": {"hours": 1, "splay": 600, "max_age": "24h"},
}


class SettingsError(ValueError):
    """Bad settings; the message says which key and what is wanted."""


class BackupError(RuntimeError):
    """The backup failed; everything it had done was undone (see ``cleanup``)."""

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


def merge_settings(pillar=None, overrides=None):
    """Defaults <- pillar ``mysqlsnap`` <- keyword overrides, validated.

    Flat connection keys (``host=``, ``user=`` ...) in ``overrides`` go into ``connection``.
    Raises :class:`SettingsError` naming the bad key.
    """
    pillar = dict(pillar or {})
    overrides = {k: v for k, v in (overrides or {}).items() if not str(k).startswith("__")}
    conn_flat = {k: overrides.pop(k) for k in list(overrides) if k in CONNECTION_KEYS}
    if conn_flat:
        overrides["connection"] = {**(overrides.get("connection") or {}), **conn_flat}
    for where, layer in (("pillar mysqlsnap", pillar), ("argument", overrides)):
        _unknown(layer, DEFAULTS, where)
        for sub in ("connection", "btrfs", "lvm"):
            if layer.get(sub) is not None and not isinstance(layer[sub], dict):
                raise SettingsError(f"{sub} must be a mapping")
            _unknown(layer.get(sub) or {}, DEFAULTS[sub], sub)
    return validate(_deep_merge(_deep_merge(DEFAULTS, pillar), overrides))


def _bool(value, key):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.lower() in ("true", "yes", "1")
    raise SettingsError(f"{key} must be true or false, got {value!r}")


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


# ---------------------------------------------------------------- SQL helpers


def _query(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall()) if cur.description else []


def _dict_row(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([d[0] for d in cur.description], row, strict=True))


def quote_ident(name):
    return "`" + str(name).replace("`", "``") + "`"


def user_tables(conn):
    """``[(schema, table, engine)]`` of the base tables outside the system schemas."""
    rows = _query(
        conn,
        "SELECT TABLE_SCHEMA, TABLE_NAME, ENGINE FROM information_schema.TABLES "
        "WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN %s "
        "ORDER BY TABLE_SCHEMA, TABLE_NAME",
        (SYSTEM_SCHEMAS,),
    )
    return [(r[0], r[1], r[2] or "") for r in rows]


def count_rows(conn, tables):
    return {
        f"{schema}.{table}": int(
            _query(conn, f"SELECT COUNT(*) FROM {quote_ident(schema)}.{quote_ident(table)}")[0][0]
        )
        for schema, table, _engine in tables
    }


def replica_status(conn):
    return _dict_row(conn, "SHOW SLAVE STATUS")


def read_positions(conn):
    """Source (this server's binlog) and replica (its position on its primary) positions;
    called with the read lock held, so nothing moves."""
    master = _dict_row(conn, "SHOW MASTER STATUS") or {}
    gtid_binlog, gtid_slave = _query(
        conn, "SELECT @@GLOBAL.gtid_binlog_pos, @@GLOBAL.gtid_slave_pos"
    )[0]
    source = {
        "binlog_file": master.get("File"),
        "binlog_pos": int(master["Position"]) if master.get("Position") is not None else None,
        "gtid": gtid_binlog or "",
    }
    status = replica_status(conn)
    replica = None
    if status:
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


# ---------------------------------------------------------------- the backup sequence


class Undo:
    """A stack of undo actions; :meth:`unwind` runs them newest first and reports each."""

    def __init__(self):
        self._stack = []

    def push(self, label, action):
        self._stack.append((label, action))

    def settle(self, label):
        self._stack = [(lbl, act) for lbl, act in self._stack if lbl != label]

    def pending(self):
        return [label for label, _ in self._stack]

    def unwind(self):
        """Undo everything; a SIGTERM arriving meanwhile waits until the undo is complete."""
        main = threading.current_thread() is threading.main_thread()
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}) if main else None
        report = []
        try:
            while self._stack:
                label, action = self._stack.pop()
                try:
                    action()
                    report.append(f"{label}: done")
                except Exception as exc:  # noqa: BLE001 - report and go on undoing the rest
                    report.append(f"{label}: FAILED ({exc}) - do it by hand")
        finally:
            if main:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        return report


class CommandFailed(RuntimeError):
    pass


def _check(run, cmd, timeout, ok_rcs=(0,)):
    proc = run(cmd, timeout)
    if proc.returncode not in ok_rcs:
        detail = (proc.stderr or proc.stdout or "").strip().splitlines()
        raise CommandFailed(f"{' '.join(cmd)} exited {proc.returncode}: {' '.join(detail[-3:])}")
    return proc


class Watchdog:
    """Releases the read lock if the locked phase outlives ``timeout``: KILLs the lock's
    connection from ``admin`` (and closes it, should the KILL fail)."""

    def __init__(self, timeout, admin, lock_conn, lock_conn_id):
        self.timeout = timeout
        self.admin = admin
        self.lock_conn = lock_conn
        self.lock_conn_id = int(lock_conn_id)
        self.fired = False
        self._done = False
        self._mutex = threading.Lock()
        self._timer = threading.Timer(timeout, self._fire)
        self._timer.daemon = True

    def start(self):
        self._timer.start()

    def _fire(self):
        with self._mutex:
            if self._done:
                return
            self.fired = True
        try:
            _query(self.admin, f"KILL CONNECTION {self.lock_conn_id}")
        except Exception:  # noqa: BLE001 - fall back to dropping the socket
            with contextlib.suppress(Exception):
                self.lock_conn.close()

    def finish(self):
        """Stop the timer; returns whether it had fired (the lock was lost)."""
        with self._mutex:
            self._done = True
        self._timer.cancel()
        return self.fired


def _inspect(admin, settings):
    """Refuse a server that is not what the settings describe, before locking anything."""
    status = replica_status(admin)
    if settings["require_replica"] and not status:
        raise BackupError(
            "this server is not a replica (SHOW SLAVE STATUS is empty): back up a replica, "
            "or pass require_replica=False to lock a primary on purpose"
        )
    datadir, log_dir, data_home, flush_at_commit, version, binlog_base = _query(
        admin,
        "SELECT @@datadir, @@innodb_log_group_home_dir, @@innodb_data_home_dir, "
        "@@innodb_flush_log_at_trx_commit, @@version, @@log_bin_basename",
    )[0]
    real = os.path.realpath(datadir)
    if real.rstrip("/") != os.path.realpath(settings["datadir"]).rstrip("/"):
        raise BackupError(f"the server's datadir is {datadir}, settings say {settings['datadir']}")
    for what, path in (("innodb_log_group_home_dir", log_dir), ("innodb_data_home_dir", data_home)):
        if path and os.path.isabs(path) and not _inside(os.path.realpath(path), real.rstrip("/")):
            raise BackupError(
                f"{what} {path} is outside the datadir: a snapshot would not include it"
            )
    binlog = None
    if binlog_base and _inside(os.path.realpath(binlog_base), real.rstrip("/")):
        binlog = os.path.relpath(os.path.realpath(binlog_base), real)
    return {
        "version": version,
        "flush_engine_logs": int(flush_at_commit) != 1,
        "binlog_basename": binlog,
    }


def run_backup(settings, run, connect, now=None, clock=time.monotonic):
    """Take one backup; returns the manifest dict. Raises :class:`BackupError` after undoing
    whatever it had done (lock, freeze, snapshot, mount, partial copy).

    ``run(cmd, timeout)`` returns an object with ``returncode``, ``stdout``, ``stderr``;
    ``connect()`` returns a fresh DB-API (PyMySQL) connection in autocommit mode.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    started = clock()
    backend = make_backend(settings)
    name = backup_name(now)
    undo = Undo()
    conns = []
    result = {"result": False, "name": name, "backend": backend.name}
    try:
        admin = connect()
        conns.append(admin)
        server = _inspect(admin, settings)
        result["stale_removed"] = _remove_stale(settings, backend, run)
        tables = user_tables(admin) if settings["row_counts"] else []
        lock_conn = connect()
        conns.append(lock_conn)
        counter = None
        if settings["row_counts"]:
            counter = connect()
            conns.append(counter)
        locked = _locked_snapshot(
            settings, backend, name, run, admin, lock_conn, counter, tables, server, undo, clock
        )
        result.update(locked["positions"])
        result["lock_ms"] = locked["lock_ms"]
        result["snapshot"] = backend.snapshot_path(name)
        counts = dict(locked["counts"])
        if counter is not None:
            innodb = [t for t in tables if f"{t[0]}.{t[1]}" not in counts]
            counts.update(count_rows(counter, innodb))
            _query(counter, "COMMIT")
        result["tables"] = counts
        for step in backend.mount_steps(name):
            _check(run, step.cmd, 120)
            undo.push(step.label, lambda c=step.undo: _check(run, c, 120))
        copied = _copy(settings, backend.source_dir(name), name, run, undo, clock)
        result.update(copied)
        result.update(
            {
                "result": True,
                "created": now.astimezone(datetime.UTC).isoformat(),
                "server_version": server["version"],
                "binlog_basename": server["binlog_basename"],
                "duration_s": round(clock() - started, 3),
            }
        )
        _finish(settings, name, result, run, undo)
        cleanup = undo.unwind()
        failed = [c for c in cleanup if "FAILED" in c]
        if failed:
            result["cleanup_warnings"] = failed
        return result
    except (Exception, BackupInterrupted) as exc:
        cleanup = undo.unwind()
        message = (
            str(exc)
            if isinstance(exc, (BackupError, CommandFailed))
            else f"{type(exc).__name__}: {exc}"
        )
        if isinstance(exc, BackupInterrupted):
            message = f"interrupted ({exc}); everything undone"
        raise BackupError(
            f"backup {name} failed: {message}; cleanup: {'; '.join(cleanup) or 'nothing to undo'}",
            cleanup,
        ) from exc
    finally:
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()


def _remove_stale(settings, backend, run):
    """Snapshots and partial copies left by a run that was killed (SIGKILL leaves no chance
    to clean up). Safe because the caller holds the host's backup lock file."""
    removed = []
    probe = run(backend.stale_probe(), 60)
    if probe.returncode == 0:
        for stale in parse_stale(probe.stdout):
            for step in backend.stale_cleanup(stale):
                _check(run, step.cmd, 120, step.undo_ok_rcs)
            removed.append(stale)
    dest = settings["destination"]
    if not is_remote(dest) and os.path.isdir(dest):
        for entry in sorted(os.listdir(dest)):
            if entry.endswith(PARTIAL_SUFFIX) and name_time(entry[: -len(PARTIAL_SUFFIX)]):
                shutil.rmtree(os.path.join(dest, entry), ignore_errors=True)
                removed.append(entry)
    return removed


def _locked_snapshot(
    settings, backend, name, run, admin, lock_conn, counter, tables, server, undo, clock
):
    timeout = settings["lock_timeout"]
    _query(lock_conn, "SET SESSION lock_wait_timeout = %s", (max(1, math.ceil(timeout)),))
    lock_conn_id = _query(lock_conn, "SELECT CONNECTION_ID()")[0][0]
    watchdog = Watchdog(timeout, admin, lock_conn, lock_conn_id)
    undo.push("release read lock", lambda: lock_conn.close())
    watchdog.start()
    t_lock = clock()
    unlocked = False
    try:
        try:
            _query(lock_conn, "FLUSH TABLES WITH READ LOCK")
        except Exception as exc:
            if watchdog.fired:
                raise BackupError(
                    f"could not take the read lock within lock_timeout={timeout}s (long-running queries?)"
                ) from exc
            raise
        source, replica = read_positions(lock_conn)
        counts = {}
        if counter is not None:
            # The read view opened under the lock is the replica's state at lock time; InnoDB
            # rows are counted in it after UNLOCK, so counting does not lengthen the lock.
            _query(counter, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            _query(counter, "START TRANSACTION WITH CONSISTENT SNAPSHOT")
            other = [t for t in tables if t[2].lower() != "innodb"]
            counts = count_rows(counter, other)
        if server["flush_engine_logs"]:
            _query(lock_conn, "FLUSH NO_WRITE_TO_BINLOG ENGINE LOGS")
        for step in backend.locked_steps(name):
            remaining = timeout - (clock() - t_lock)
            if remaining <= 0 or watchdog.fired:
                raise BackupError(
                    f"lock_timeout={timeout}s exceeded before {step.label}; lock released by the watchdog"
                )
            try:
                _check(run, step.cmd, remaining)
            except BaseException as exc:
                if step.undo:
                    # The command may have half-done its work: undo it, tolerating "not there".
                    undo.push(step.label, lambda c=step.undo: run(c, 120))
                if "Timeout" in type(exc).__name__:
                    raise BackupError(
                        f"{step.label} exceeded lock_timeout={timeout}s and was killed; lock released by the watchdog"
                    ) from exc
                raise
            if step.settles:
                undo.settle(step.settles)
            if step.undo:
                undo.push(step.label, lambda c=step.undo: _check(run, c, 120))
        if watchdog.fired:
            raise BackupError(
                f"lock_timeout={timeout}s exceeded while taking the snapshot; lock released by the watchdog, snapshot discarded"
            )
        try:
            _query(lock_conn, "SELECT 1")
        except Exception as exc:
            raise BackupError(
                "the lock connection was lost while the snapshot was taken; the snapshot may be inconsistent and was discarded"
            ) from exc
        _query(lock_conn, "UNLOCK TABLES")
        unlocked = True
        lock_ms = (clock() - t_lock) * 1000.0
    finally:
        fired = watchdog.finish()
        if unlocked and not fired:
            undo.settle("release read lock")
    if fired:
        raise BackupError(
            f"lock_timeout={timeout}s exceeded; lock released by the watchdog, snapshot discarded"
        )
    return {
        "lock_ms": round(lock_ms, 3),
        "positions": {"source": source, "replica": replica},
        "counts": counts,
    }


def _copy(settings, source_dir, name, run, undo, clock):
    dest = settings["destination"]
    if is_remote(dest):
        backup_dir = f"{dest.rstrip('/')}/{name}"
        target = f"{backup_dir}/{DATA_SUBDIR}"
    else:
        backup_dir = os.path.join(dest, name)
        partial = backup_dir + PARTIAL_SUFFIX
        os.makedirs(dest, exist_ok=True)
        os.makedirs(partial)
        undo.push("remove partial copy", lambda: shutil.rmtree(partial))
        target = os.path.join(partial, DATA_SUBDIR)
    t0 = clock()
    proc = _check(run, rsync_cmd(source_dir, target), settings["copy_timeout"])
    copy_s = clock() - t0
    size = parse_rsync_bytes(proc.stdout or "")
    return {
        "backup_dir": backup_dir,
        "bytes": size,
        "copy_s": round(copy_s, 3),
        "copy_mb_s": round(size / copy_s / 1e6, 1) if size and copy_s > 0 else None,
    }


def manifest_json(result):
    return json.dumps(result, indent=2, sort_keys=True) + "\n"


def _finish(settings, name, result, run, undo):
    """Write ``manifest.json`` last: a backup without one is incomplete and is ignored."""
    dest = settings["destination"]
    if is_remote(dest):
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            handle.write(manifest_json(result))
        try:
            cmd = [
                "rsync",
                "--rsh",
                "ssh -o BatchMode=yes",
                handle.name,
                f"{result['backup_dir']}/{MANIFEST}",
            ]
            _check(run, cmd, 300)
        finally:
            os.unlink(handle.name)
        return
    partial = os.path.join(dest, name + PARTIAL_SUFFIX)
    with open(os.path.join(partial, MANIFEST), "w", encoding="utf-8") as handle:
        handle.write(manifest_json(result))
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(partial, result["backup_dir"])
    undo.settle("remove partial copy")


# ---------------------------------------------------------------- listing, verify planning


def read_manifest(backup_dir):
    with open(os.path.join(backup_dir, MANIFEST), encoding="utf-8") as handle:
        return json.load(handle)


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


def compare_counts(expected, actual):
    """Differences between manifest row counts and the restored ones: ``{table: [exp, got]}``."""
    return {
        table: [count, actual.get(table)]
        for table, count in sorted(expected.items())
        if actual.get(table) != count
    }


@contextlib.contextmanager
def interruptible():
    """Turn SIGTERM into :class:`BackupInterrupted` for the duration (main thread only), so
    a job timeout still runs the undo steps."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, _frame):
        raise BackupInterrupted(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
