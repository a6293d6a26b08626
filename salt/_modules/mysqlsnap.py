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
"""

import contextlib
import datetime
import fcntl
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time

import webfarm_events
import webfarm_mysqlsnap as logic
from salt.exceptions import CommandExecutionError, SaltInvocationError

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


def _settings(overrides):
    pillar = __pillar__.get("mysqlsnap", {}) or {}
    try:
        return logic.merge_settings(pillar, overrides)
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


class _Proc:
    def __init__(self, returncode, stdout="", stderr=""):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def _run(cmd, timeout):
    log.debug("mysqlsnap: running %s", cmd)
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        return _Proc(127, stderr=f"{cmd[0]}: command not found (install it)")


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
        with _host_lock(settings["lock_file"]), logic.interruptible():
            result = logic.run_backup(settings, _run, _connector(settings["connection"]))
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
            manifest = logic.read_manifest(path)
        except (OSError, ValueError) as exc:
            log.warning("mysqlsnap: unreadable manifest in %s: %s", path, exc)
            continue
        out.append(logic.summarize(name, path, manifest, now))
    return out


def prune(keep=None, destination=None):
    """
    Delete the oldest complete backups so that the newest ``keep`` stay.

    CLI Example:

    .. code-block:: bash

        salt 'db*' mysqlsnap.prune keep=3
    """
    destination = _destination(destination)
    if keep is None:
        keep = (__pillar__.get("mysqlsnap", {}) or {}).get("keep", logic.DEFAULTS["keep"])
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
    rows = logic._query(
        conn,
        "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' "
        "AND TABLE_SCHEMA NOT IN ('information_schema', 'performance_schema', 'sys')",
    )
    errors = []
    for schema, table in rows:
        ident = f"{logic.quote_ident(schema)}.{logic.quote_ident(table)}"
        result = logic._query(conn, f"CHECK TABLE {ident}")
        final = result[-1] if result else None
        if (
            not final
            or final[2].lower() == "error"
            or final[3] not in ("OK", "Table is already up to date")
        ):
            errors.append(
                {"table": f"{schema}.{table}", "messages": [list(r[2:4]) for r in result]}
            )
    return len(rows), errors


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
        manifest = logic.read_manifest(backup_dir)
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
                    actual.update(logic.count_rows(conn, [(schema, table, "")]))
                except pymysql.MySQLError as exc:
                    errors.append({"table": f"{schema}.{table}", "messages": [["error", str(exc)]]})
            mismatches = logic.compare_counts(expected, actual)
            with contextlib.suppress(pymysql.MySQLError):
                logic._query(conn, "SHUTDOWN")
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
