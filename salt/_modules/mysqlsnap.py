"""Online snapshot backups of a MariaDB/MySQL replica.

FLUSH TABLES WITH READ LOCK is held on one connection only while the replication positions
are read and the snapshot (btrfs, or LVM) is taken; then the snapshot is copied with rsync,
``manifest.json`` records positions and row counts, and the snapshot is removed. Whatever
fails, every step done so far is undone.

Pillar ``mysqlsnap`` (every key can be overridden as a keyword argument):

.. code-block:: yaml

    mysqlsnap:
      connection: {host: 127.0.0.1, port: 3306, user: backup, password: ...}
      # or {unix_socket: /run/mysqld/mysqld.sock, defaults_file: /root/.my.cnf}
      datadir: /srv/mysql/data
      backend: btrfs            # or lvm
      btrfs: {subvolume: /srv/mysql, snapshot_dir: /srv/.snapshots}
      lvm: {vg: vg0, lv: mysql, snapshot_size: 10G, mount_point: /mnt/mysqlsnap,
            fstype: xfs, origin_mount: /srv/mysql}
      freeze: auto              # lvm: fsfreeze the origin around lvcreate; btrfs: never needed
      destination: /backup/mysql  # or backuphost:/backup/mysql (rsync over ssh)
      keep: 7
      lock_timeout: 10
      require_replica: true
      verify: false

The module is sectioned: the system (commands, SQL), the backup sequence (undo stack, the
watchdog that releases the read lock, SIGTERM handling, lock -> snapshot -> unlock -> copy
-> manifest), then the public functions. Plans, parsers and checks of plain data are in
``salt/_utils/webfarm_mysqlsnap.py``. :func:`_run_backup` talks to the system only through
the two callables it is given, ``run(cmd, timeout)`` and ``connect()``: :func:`backup`
passes the real ones (:func:`_run`, PyMySQL), tests and the benchmark wrap them to inject
failures or time the copy.
"""

import contextlib
import datetime
import fcntl
import grp
import json
import logging
import math
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

import webfarm_events
import webfarm_mysqlsnap as logic

try:
    import pymysql

    HAS_PYMYSQL = True
except ImportError:
    HAS_PYMYSQL = False

log = logging.getLogger(__name__)

__virtualname__ = "mysqlsnap"
__func_alias__ = {"list_": "list"}

MARIADBD_PATHS = ("/usr/sbin/mariadbd", "/usr/sbin/mysqld")


def __virtual__():
    if not HAS_PYMYSQL:
        return (
            False,
            "mysqlsnap needs PyMySQL: pip install PyMySQL (or apt install python3-pymysql)",
        )
    return __virtualname__


def _fire(action, outcome, data):
    webfarm_events.fire(__salt__, "mysqlsnap", action, outcome, data)


def _defaults():
    """salt/states/mysqlsnap/defaults.yaml, through webfarm.defaults."""
    return __salt__["webfarm.defaults"]("mysqlsnap")


def _settings(overrides):
    pillar = __pillar__.get("mysqlsnap", {}) or {}
    try:
        return logic.merge_settings(_defaults(), pillar, overrides)
    except logic.SettingsError as exc:
        raise SaltInvocationError(f"mysqlsnap settings: {exc}") from None


def _destination(destination):
    dest = destination or (__pillar__.get("mysqlsnap", {}) or {}).get("destination")
    if not dest:
        raise SaltInvocationError(
            "no destination: set pillar mysqlsnap:destination or pass destination="
        )
    if logic.is_remote(dest):
        raise SaltInvocationError(
            f"{dest} is a remote destination: list, prune and verify work on the backup host's local path"
        )
    if not os.path.isabs(dest):
        raise SaltInvocationError(f"destination must be an absolute path, got {dest!r}")
    return dest


# ---------------------------------------------------------------- the system: commands, SQL


class _Proc:
    def __init__(self, returncode, stdout="", stderr=""):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _run(cmd, timeout):
    """The one command runner: an argument list, captured output, a timeout (raises
    ``subprocess.TimeoutExpired``, which kills the command)."""
    log.debug("mysqlsnap: running %s", cmd)
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        return _Proc(127, stderr=f"{cmd[0]}: command not found (install it)")


class CommandFailed(RuntimeError):
    pass


def _check(run, cmd, timeout, ok_rcs=(0,)):
    proc = run(cmd, timeout)
    if proc.returncode not in ok_rcs:
        raise CommandFailed(logic.command_error(cmd, proc.returncode, proc.stdout, proc.stderr))
    return proc


def _connector(conn):
    kwargs = {
        "user": conn.get("user"),
        "connect_timeout": conn["connect_timeout"],
        "autocommit": True,
        "charset": "utf8mb4",
    }
    if conn.get("unix_socket"):
        kwargs["unix_socket"] = conn["unix_socket"]
    else:
        kwargs["host"], kwargs["port"] = conn.get("host"), conn["port"]
    if conn.get("password") is not None:
        kwargs["password"] = conn["password"]
    if conn.get("defaults_file"):
        kwargs["read_default_file"] = conn["defaults_file"]
    kwargs = {k: v for k, v in kwargs.items() if v is not None}

    def connect():
        try:
            return pymysql.connect(**kwargs)
        except pymysql.MySQLError as exc:
            where = conn.get("unix_socket") or f"{conn.get('host')}:{conn['port']}"
            raise logic.BackupError(f"cannot connect to MariaDB at {where}: {exc}") from None

    return connect


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


def _user_tables(conn):
    """``[(schema, table, engine)]`` of the base tables outside the system schemas."""
    rows = _query(
        conn,
        "SELECT TABLE_SCHEMA, TABLE_NAME, ENGINE FROM information_schema.TABLES "
        "WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN %s "
        "ORDER BY TABLE_SCHEMA, TABLE_NAME",
        (logic.SYSTEM_SCHEMAS,),
    )
    return [(r[0], r[1], r[2] or "") for r in rows]


def _count_rows(conn, tables):
    return {
        f"{schema}.{table}": int(_query(conn, logic.count_sql(schema, table))[0][0])
        for schema, table, _engine in tables
    }


def _replica_status(conn):
    return _dict_row(conn, "SHOW SLAVE STATUS")


def _read_positions(conn):
    """Source and replica positions; called with the read lock held, so nothing moves."""
    master = _dict_row(conn, "SHOW MASTER STATUS")
    gtid_binlog, gtid_slave = _query(
        conn, "SELECT @@GLOBAL.gtid_binlog_pos, @@GLOBAL.gtid_slave_pos"
    )[0]
    return logic.positions(master, gtid_binlog, gtid_slave, _replica_status(conn))


def _inspect(admin, settings):
    """Refuse a server that is not what the settings describe, before locking anything."""
    logic.check_replica(settings, _replica_status(admin))
    variables = _query(
        admin,
        "SELECT @@datadir, @@innodb_log_group_home_dir, @@innodb_data_home_dir, "
        "@@innodb_flush_log_at_trx_commit, @@version, @@log_bin_basename",
    )[0]
    return logic.check_server(settings, variables, resolve=os.path.realpath)


def _read_manifest(backup_dir):
    with open(os.path.join(backup_dir, logic.MANIFEST), encoding="utf-8") as handle:
        return json.load(handle)


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
        """Undo everything; a SIGTERM arriving meanwhile waits until the undo is complete.

        The signal is held back by a handler that only notes it (then re-raised once the
        stack is empty), not by blocking it: a process-directed signal that the main thread
        blocks is delivered to another thread (Salt's and pytest's helpers run some), and
        Python would still run the handler in the main thread, in the middle of the undo.
        """
        main = threading.current_thread() is threading.main_thread()
        held = []
        previous = None
        if main:
            previous = signal.signal(signal.SIGTERM, lambda signum, _frame: held.append(signum))
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
                signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
                if held:
                    signal.raise_signal(signal.SIGTERM)
        return report


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


@contextlib.contextmanager
def _interruptible():
    """Turn SIGTERM into :class:`BackupInterrupted` for the duration (main thread only), so
    a job timeout still runs the undo steps."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _raise(signum, _frame):
        raise logic.BackupInterrupted(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_backup(settings, run, connect, now=None, clock=time.monotonic):
    """Take one backup; returns the manifest dict. Raises :class:`BackupError` after undoing
    whatever it had done (lock, freeze, snapshot, mount, partial copy).

    ``run(cmd, timeout)`` returns an object with ``returncode``, ``stdout``, ``stderr``;
    ``connect()`` returns a fresh DB-API (PyMySQL) connection in autocommit mode.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    started = clock()
    backend = logic.make_backend(settings)
    name = logic.backup_name(now)
    undo = Undo()
    conns = []
    result = {"result": False, "name": name, "backend": backend.name}
    try:
        admin = connect()
        conns.append(admin)
        server = _inspect(admin, settings)
        result["stale_removed"] = _remove_stale(settings, backend, run)
        tables = _user_tables(admin) if settings["row_counts"] else []
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
            counts.update(_count_rows(counter, innodb))
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
    except (Exception, logic.BackupInterrupted) as exc:
        cleanup = undo.unwind()
        message = (
            str(exc)
            if isinstance(exc, (logic.BackupError, CommandFailed))
            else f"{type(exc).__name__}: {exc}"
        )
        if isinstance(exc, logic.BackupInterrupted):
            message = f"interrupted ({exc}); everything undone"
        raise logic.BackupError(
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
        for stale in logic.parse_stale(probe.stdout):
            for step in backend.stale_cleanup(stale):
                _check(run, step.cmd, 120, step.undo_ok_rcs)
            removed.append(stale)
    dest = settings["destination"]
    if not logic.is_remote(dest) and os.path.isdir(dest):
        for entry in logic.stale_partials(os.listdir(dest)):
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
                raise logic.BackupError(
                    f"could not take the read lock within lock_timeout={timeout}s (long-running queries?)"
                ) from exc
            raise
        source, replica = _read_positions(lock_conn)
        counts = {}
        if counter is not None:
            # The read view opened under the lock is the replica's state at lock time; InnoDB
            # rows are counted in it after UNLOCK, so counting does not lengthen the lock.
            _query(counter, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            _query(counter, "START TRANSACTION WITH CONSISTENT SNAPSHOT")
            other = [t for t in tables if t[2].lower() != "innodb"]
            counts = _count_rows(counter, other)
        if server["flush_engine_logs"]:
            _query(lock_conn, "FLUSH NO_WRITE_TO_BINLOG ENGINE LOGS")
        for step in backend.locked_steps(name):
            remaining = timeout - (clock() - t_lock)
            if remaining <= 0 or watchdog.fired:
                raise logic.BackupError(
                    f"lock_timeout={timeout}s exceeded before {step.label}; lock released by the watchdog"
                )
            try:
                _check(run, step.cmd, remaining)
            except BaseException as exc:
                if step.undo:
                    # The command may have half-done its work: undo it, tolerating "not there".
                    undo.push(step.label, lambda c=step.undo: run(c, 120))
                if "Timeout" in type(exc).__name__:
                    raise logic.BackupError(
                        f"{step.label} exceeded lock_timeout={timeout}s and was killed; lock released by the watchdog"
                    ) from exc
                raise
            if step.settles:
                undo.settle(step.settles)
            if step.undo:
                undo.push(step.label, lambda c=step.undo: _check(run, c, 120))
        if watchdog.fired:
            raise logic.BackupError(
                f"lock_timeout={timeout}s exceeded while taking the snapshot; lock released by the watchdog, snapshot discarded"
            )
        try:
            _query(lock_conn, "SELECT 1")
        except Exception as exc:
            raise logic.BackupError(
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
        raise logic.BackupError(
            f"lock_timeout={timeout}s exceeded; lock released by the watchdog, snapshot discarded"
        )
    return {
        "lock_ms": round(lock_ms, 3),
        "positions": {"source": source, "replica": replica},
        "counts": counts,
    }


def _copy(settings, source_dir, name, run, undo, clock):
    dest = settings["destination"]
    paths = logic.copy_paths(dest, name)
    partial = paths["partial"]
    if partial is not None:
        os.makedirs(dest, exist_ok=True)
        os.makedirs(partial)
        undo.push("remove partial copy", lambda: shutil.rmtree(partial))
    t0 = clock()
    proc = _check(run, logic.rsync_cmd(source_dir, paths["target"]), settings["copy_timeout"])
    return logic.copy_summary(paths["backup_dir"], proc.stdout, clock() - t0)


def _finish(settings, name, result, run, undo):
    """Write ``manifest.json`` last: a backup without one is incomplete and is ignored."""
    dest = settings["destination"]
    text = logic.manifest_json(result)
    if logic.is_remote(dest):
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            handle.write(text)
        try:
            _check(run, logic.manifest_push_cmd(handle.name, result["backup_dir"]), 300)
        finally:
            os.unlink(handle.name)
        return
    partial = logic.copy_paths(dest, name)["partial"]
    with open(os.path.join(partial, logic.MANIFEST), "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(partial, result["backup_dir"])
    undo.settle("remove partial copy")


@contextlib.contextmanager
def _host_lock(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - held for the whole backup
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CommandExecutionError(
                f"another mysqlsnap backup is running on this host (lock file {path} is held); "
                "wait for it to finish"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


# ---------------------------------------------------------------- public functions


def backup(**kwargs):
    """
    Take an online snapshot backup of this replica and return its manifest.

    Settings come from pillar ``mysqlsnap``; any of them can be given as a keyword argument
    (connection keys ``host``, ``port``, ``unix_socket``, ``user``, ``password``,
    ``defaults_file`` may be given flat). Returns ``result``, ``lock_ms``, ``snapshot``,
    ``backup_dir``, ``bytes``, ``duration_s``, ``source`` (this server's binlog file/pos and
    GTID), ``replica`` (its position on its primary), ``tables`` (row counts at lock time);
    the same is written to ``<backup_dir>/manifest.json``. Fires
    ``webfarm/mysqlsnap/backup/done`` or ``.../failed``.

    CLI Example:

    .. code-block:: bash

        salt 'db*' mysqlsnap.backup
        salt 'db*' mysqlsnap.backup keep=3 verify=True
    """
    settings = _settings(kwargs)
    if settings["backend"] == "btrfs" and not shutil.which("btrfs"):
        raise CommandExecutionError("btrfs backend needs btrfs-progs: apt install btrfs-progs")
    if not shutil.which("rsync"):
        raise CommandExecutionError("mysqlsnap copies with rsync: apt install rsync")
    try:
        with _host_lock(settings["lock_file"]), _interruptible():
            result = _run_backup(settings, _run, _connector(settings["connection"]))
    except (logic.BackupError, logic.BackupInterrupted) as exc:
        failure = {"result": False, "error": str(exc), "cleanup": getattr(exc, "cleanup", [])}
        log.error("mysqlsnap backup failed: %s", exc)
        _fire("backup", "failed", failure)
        raise CommandExecutionError(
            f"{exc}. Fix the cause and run mysqlsnap.backup again."
        ) from None
    if not logic.is_remote(settings["destination"]):
        result["pruned"] = prune(keep=settings["keep"], destination=settings["destination"])[
            "removed"
        ]
        if settings["verify"]:
            try:
                result["verify"] = verify(result["backup_dir"], timeout=settings["verify_timeout"])
            except (SaltInvocationError, CommandExecutionError) as exc:
                result["verify"] = {"result": False, "error": str(exc)}
            result["result"] = result["verify"]["result"]
    _fire("backup", "done" if result["result"] else "failed", result)
    return result


def _backups(destination):
    if not os.path.isdir(destination):
        return []
    names = []
    for entry in os.listdir(destination):
        path = os.path.join(destination, entry)
        if logic.name_time(entry) and os.path.isfile(os.path.join(path, logic.MANIFEST)):
            names.append(entry)
    return sorted(names, key=logic.name_time)


def list_(destination=None):
    """
    List the complete backups (those with a ``manifest.json``) in the destination, oldest
    first: name, backup_dir, created, age_s, bytes, lock_ms, gtid_slave_pos.

    CLI Example:

    .. code-block:: bash

        salt 'db*' mysqlsnap.list
        salt 'db*' mysqlsnap.list destination=/backup/mysql
    """
    destination = _destination(destination)
    now = datetime.datetime.now(datetime.UTC)
    out = []
    for name in _backups(destination):
        path = os.path.join(destination, name)
        try:
            manifest = _read_manifest(path)
        except (OSError, ValueError) as exc:
            log.warning("mysqlsnap: unreadable manifest in %s: %s", path, exc)
            continue
        out.append(logic.summarize(name, path, manifest, now))
    return out


def newest(max_age=None, destination=None):
    """
    The newest complete backup in the destination (as in ``mysqlsnap.list``, or None) and
    whether it is at most ``max_age`` old (seconds, or ``90s``/``30m``/``24h``/``7d``; default
    pillar ``mysqlsnap:schedule:max_age``, else 24h): ``newest``, ``max_age_s``, ``fresh``.
    The ``mysqlsnap.backed_up`` state asks this.

    CLI Example:

    .. code-block:: bash

        salt 'db*' mysqlsnap.newest max_age=24h
    """
    if max_age is None:
        schedule = (__pillar__.get("mysqlsnap", {}) or {}).get("schedule") or {}
        if "max_age" in schedule:
            max_age = schedule["max_age"]
        else:
            max_age = _defaults()["schedule"]["max_age"]
    try:
        limit = logic.parse_duration(max_age)
    except logic.SettingsError as exc:
        raise SaltInvocationError(str(exc)) from None
    return logic.freshness(list_(destination=destination), limit)


def prune(keep=None, destination=None):
    """
    Delete the oldest complete backups so that the newest ``keep`` stay.

    CLI Example:

    .. code-block:: bash

        salt 'db*' mysqlsnap.prune keep=3
    """
    destination = _destination(destination)
    if keep is None:
        pillar = __pillar__.get("mysqlsnap", {}) or {}
        keep = pillar["keep"] if "keep" in pillar else _defaults()["keep"]
    try:
        doomed = logic.plan_prune(_backups(destination), keep)
    except (logic.SettingsError, TypeError, ValueError) as exc:
        raise SaltInvocationError(f"keep must be an integer >= 1, got {keep!r}") from exc
    removed = []
    for name in doomed:
        try:
            shutil.rmtree(os.path.join(destination, name))
        except OSError as exc:
            raise CommandExecutionError(
                f"cannot remove backup {name}: {exc}; removed so far: {removed}"
            ) from exc
        removed.append(name)
    return {"removed": removed, "kept": _backups(destination)}


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_server(proc, port, log_file, deadline):
    while True:
        if proc.poll() is not None:
            tail = ""
            if os.path.exists(log_file):
                with open(log_file, errors="replace") as handle:
                    tail = handle.read()[-1500:]
            raise CommandExecutionError(
                f"throw-away server exited {proc.returncode} during recovery:\n{tail}"
            )
        try:
            return pymysql.connect(
                host="127.0.0.1", port=port, user="root", autocommit=True, connect_timeout=5
            )
        except pymysql.MySQLError:
            if time.monotonic() > deadline:
                raise CommandExecutionError(
                    "throw-away server did not come up in time (raise verify_timeout)"
                ) from None
            time.sleep(0.2)


def _check_tables(conn):
    rows = _query(
        conn,
        "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' "
        "AND TABLE_SCHEMA NOT IN ('information_schema', 'performance_schema', 'sys')",
    )
    errors = []
    for schema, table in rows:
        ident = f"{logic.quote_ident(schema)}.{logic.quote_ident(table)}"
        problem = logic.table_check_problem(schema, table, _query(conn, f"CHECK TABLE {ident}"))
        if problem:
            errors.append(problem)
    return len(rows), errors


def _reachable_by(user, path):
    """Raise unless ``user`` may enter every directory down to ``path`` (the throw-away
    server drops to that user; it would only say it exited during recovery)."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise CommandExecutionError(
            f"verify runs its server as {user}, a user this host lacks"
        ) from None
    gids = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    current = os.sep
    for part in os.path.abspath(path).split(os.sep)[1:]:
        current = os.path.join(current, part)
        st = os.stat(current)
        if not logic.searchable(st.st_mode, st.st_uid, st.st_gid, entry.pw_uid, gids):
            owner = f"{_name(pwd.getpwuid, st.st_uid)}:{_name(grp.getgrgid, st.st_gid)}"
            raise CommandExecutionError(
                f"verify runs its server as {user}, which cannot enter {current} "
                f"({oct(st.st_mode & 0o7777)} {owner}): give it group {user} or o+x "
                "(mysqlsnap.schedule creates the destination so)"
            )


def _name(lookup, number):
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)


def verify(backup_dir, timeout=300):
    """
    Check a backup: start a throw-away mariadbd on a copy of it (free loopback port, no
    grants, no replication), let InnoDB recover, run ``CHECK TABLE`` on every table, compare
    the row counts with the manifest, stop the server and remove the copy.

    CLI Example:

    .. code-block:: bash

        salt 'db*' mysqlsnap.verify /backup/mysql/mysqlsnap-20261125T020000.000Z
    """
    started = time.monotonic()
    if not backup_dir or not os.path.isdir(os.path.join(backup_dir, logic.DATA_SUBDIR)):
        raise SaltInvocationError(f"{backup_dir!r} is not a mysqlsnap backup (no data/ inside)")
    try:
        manifest = _read_manifest(backup_dir)
    except (OSError, ValueError) as exc:
        raise SaltInvocationError(f"{backup_dir} has no readable manifest.json: {exc}") from None
    binary = shutil.which("mariadbd") or next(
        (p for p in MARIADBD_PATHS if os.path.exists(p)), None
    )
    if binary is None:
        raise CommandExecutionError("verify needs the server binary: apt install mariadb-server")
    run_as = "mysql" if os.geteuid() == 0 else None
    work = tempfile.mkdtemp(prefix=".verify-", dir=os.path.dirname(os.path.abspath(backup_dir)))
    proc = None
    report = {"result": False, "backup_dir": backup_dir}
    try:
        os.chmod(work, 0o755)
        datadir = os.path.join(work, "data")
        copy = _run(
            ["cp", "-a", "--reflink=auto", os.path.join(backup_dir, logic.DATA_SUBDIR), datadir],
            timeout,
        )
        if copy.returncode != 0:
            raise CommandExecutionError(f"cannot copy the backup for verify: {copy.stderr.strip()}")
        if run_as:
            _reachable_by(run_as, work)
            chown = _run(["chown", "-R", f"{run_as}:", work], timeout)
            if chown.returncode != 0:
                raise CommandExecutionError(f"cannot chown the verify copy: {chown.stderr.strip()}")
        port = _free_port()
        log_file = os.path.join(work, "server.err")
        cmd = logic.verify_server_cmd(
            binary,
            datadir,
            port,
            os.path.join(work, "server.sock"),
            os.path.join(work, "server.pid"),
            log_file,
            run_as,
            manifest.get("binlog_basename"),
        )
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        conn = _wait_server(proc, port, log_file, started + timeout)
        try:
            checked, errors = _check_tables(conn)
            expected = manifest.get("tables") or {}
            tables = [tuple(t.split(".", 1)) + ("",) for t in expected]
            actual = {}
            for schema, table, _ in tables:
                try:
                    actual.update(_count_rows(conn, [(schema, table, "")]))
                except pymysql.MySQLError as exc:
                    errors.append({"table": f"{schema}.{table}", "messages": [["error", str(exc)]]})
            mismatches = logic.compare_counts(expected, actual)
            with contextlib.suppress(pymysql.MySQLError):
                _query(conn, "SHUTDOWN")
        finally:
            conn.close()
        report.update(
            {
                "result": not errors and not mismatches,
                "tables_checked": checked,
                "rows_compared": len(expected),
                "check_errors": errors,
                "row_count_mismatches": mismatches,
            }
        )
    finally:
        if proc is not None:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    report["duration_s"] = round(time.monotonic() - started, 3)
    _fire("verify", "done" if report["result"] else "failed", report)
    return report
