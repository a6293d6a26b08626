"""MariaDB lab: a primary and a GTID replica on loopback ports, the replica's datadir in a btrfs
subvolume on a loop device, and a writer thread that keeps inserting into the primary.

Everything lives under one temporary directory (mode 0755 so ``mysql`` can traverse it); the
servers run as ``mysql`` (``--user``) with their own sockets, pid files and logs, and are
stopped by PID. The helpers are plain functions so the demo and the benchmark reuse them.
"""

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pymysql

from lab.loops import Loops
from lab.net import free_port
from lab.proc import stop_process

MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
INSTALL_DB = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
BACKUP_USER = "backup"
BACKUP_PASSWORD = "Bk-s3cret-9f2c"  # a lab secret; tests check it never leaks
REPL_PASSWORD = "repl-pw-lab"


def _run(cmd, timeout=120):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def _chown_mysql(path):
    entry = pwd.getpwnam("mysql")
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.chown(name, entry.pw_uid, entry.pw_gid)


# ---------------------------------------------------------------- btrfs on a loop device


@dataclass
class Btrfs:
    image: Path
    loop: str
    mount: Path

    def destroy(self):
        for _ in range(20):
            if (
                subprocess.run(
                    ["umount", str(self.mount)], capture_output=True, check=False
                ).returncode
                == 0
            ):
                break
            time.sleep(0.25)
        subprocess.run(["losetup", "--detach", self.loop], capture_output=True, check=False)
        with contextlib.suppress(FileNotFoundError):
            self.image.unlink()


def make_btrfs(base, size_mb=1024):
    """A fresh btrfs on a sparse file through a loop device, mounted at ``base/btrfs``."""
    base = Path(base)
    image = base / "btrfs.img"
    with open(image, "wb") as handle:
        handle.truncate(size_mb * 1024 * 1024)
    loop = _run(["losetup", "--find", "--show", str(image)]).strip()
    mount = base / "btrfs"
    mount.mkdir(mode=0o755)
    try:
        _run(["mkfs.btrfs", "-q", "-f", loop])
        _run(["mount", "-t", "btrfs", loop, str(mount)])
    except Exception:
        subprocess.run(["losetup", "--detach", loop], check=False)
        raise
    return Btrfs(image=image, loop=loop, mount=mount)


def mounts_under(path):
    """Mount points at or below ``path`` (from /proc/self/mountinfo)."""
    path = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            point = line.split()[4].replace("\\040", " ")
            if point == path or point.startswith(path.rstrip("/") + "/"):
                found.append(point)
    return found


def fs_writable(directory, timeout=3.0):
    """Whether a file can be written and fsynced in ``directory`` within ``timeout``
    (a frozen filesystem blocks the write)."""
    done = threading.Event()

    def write():
        target = os.path.join(directory, f".probe-{os.getpid()}-{threading.get_ident()}")
        with open(target, "w") as handle:
            handle.write("x")
            handle.flush()
            os.fsync(handle.fileno())
        os.unlink(target)
        done.set()

    threading.Thread(target=write, daemon=True).start()
    return done.wait(timeout)


# ---------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    datadir: Path
    port: int
    socket: str
    pid_file: Path
    log_file: Path
    server_id: int
    proc: subprocess.Popen = field(repr=False)

    @property
    def pid(self):
        return self.proc.pid

    def connect(self, user="root", password="", database=None, **kwargs):
        return pymysql.connect(
            unix_socket=self.socket,
            user=user,
            password=password,
            database=database,
            autocommit=True,
            connect_timeout=10,
            **kwargs,
        )

    def query(self, sql, args=None):
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def stop(self, timeout=60):
        stop_process(self.proc, timeout)


def install_datadir(datadir):
    """``mariadb-install-db`` into ``datadir`` (root@localhost without password, no test db)."""
    datadir = Path(datadir)
    datadir.mkdir(parents=True, exist_ok=True)
    _chown_mysql(datadir)
    _run(
        [
            INSTALL_DB,
            "--no-defaults",
            f"--datadir={datadir}",
            "--user=mysql",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            "--skip-name-resolve",
        ],
        timeout=180,
    )
    _chown_mysql(datadir)


def start_server(
    name, rundir, datadir, server_id, port=None, extra=(), timeout=60, bind="127.0.0.1", wrap=()
):
    """Start ``mariadbd`` as ``mysql`` on ``bind``:``port`` with binlog + GTID, wait until
    it answers, return a :class:`Server`. ``rundir`` holds its socket, pid file and log;
    ``wrap`` prefixes the command (the demo's ``ip netns exec <ns>``, which execs it)."""
    rundir = Path(rundir)
    rundir.mkdir(mode=0o755, parents=True, exist_ok=True)
    _chown_mysql(rundir)
    port = port or free_port(bind)
    sock = str(rundir / f"{name}.sock")
    pid_file = rundir / f"{name}.pid"
    log_file = rundir / f"{name}.err"
    cmd = [
        *wrap,
        MARIADBD,
        "--no-defaults",
        f"--datadir={datadir}",
        f"--port={port}",
        f"--bind-address={bind}",
        f"--socket={sock}",
        f"--pid-file={pid_file}",
        f"--log-error={log_file}",
        "--user=mysql",
        f"--server-id={server_id}",
        "--log-bin=mysql-bin",
        "--log-slave-updates",
        "--binlog-format=ROW",
        "--gtid-strict-mode=1",
        "--skip-name-resolve",
        "--skip-slave-start",
        "--relay-log=relay-bin",
        "--innodb-buffer-pool-size=64M",
        "--innodb-log-file-size=16M",
        "--max-connections=60",
        "--skip-external-locking",
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = Server(name, Path(datadir), port, sock, pid_file, log_file, server_id, proc)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            log = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
            raise RuntimeError(f"mariadbd {name} exited {proc.returncode}:\n{log}")
        try:
            server.connect().close()
            return server
        except pymysql.err.OperationalError:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"mariadbd {name} did not answer within {timeout}s") from None
            time.sleep(0.1)


def create_users(primary, repl_host="127.0.0.1"):
    for host in ("127.0.0.1", "localhost"):
        primary.query(
            f"CREATE USER IF NOT EXISTS '{BACKUP_USER}'@'{host}' IDENTIFIED BY %s",
            (BACKUP_PASSWORD,),
        )
        primary.query(f"GRANT ALL PRIVILEGES ON *.* TO '{BACKUP_USER}'@'{host}'")
    primary.query(
        f"CREATE USER IF NOT EXISTS 'repl'@'{repl_host}' IDENTIFIED BY %s", (REPL_PASSWORD,)
    )
    primary.query(f"GRANT REPLICATION SLAVE ON *.* TO 'repl'@'{repl_host}'")


def create_app_schema(primary):
    primary.query("CREATE DATABASE IF NOT EXISTS app")
    primary.query(
        "CREATE TABLE IF NOT EXISTS app.events (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
        "payload VARCHAR(255) NOT NULL, created TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB"
    )
    primary.query(
        "CREATE TABLE IF NOT EXISTS app.audit (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
        "note VARCHAR(64) NOT NULL) ENGINE=Aria"
    )


def start_replication(replica, primary, gtid_slave_pos=None, host="127.0.0.1"):
    """Point ``replica`` at ``primary`` (reached at ``host``) with GTID (from
    ``gtid_slave_pos`` when given)."""
    replica.query("STOP SLAVE")
    replica.query("RESET SLAVE ALL")
    if gtid_slave_pos is not None:
        replica.query("SET GLOBAL gtid_slave_pos = %s", (gtid_slave_pos,))
    replica.query(
        "CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER='repl', "
        "MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
        (host, primary.port, REPL_PASSWORD),
    )
    replica.query("START SLAVE")


def slave_status(server):
    conn = server.connect(cursorclass=pymysql.cursors.DictCursor)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW SLAVE STATUS")
            return cur.fetchone()
    finally:
        conn.close()


def wait_caught_up(replica, primary, timeout=60):
    """Wait until ``replica`` has applied everything ``primary`` has binlogged so far."""
    target = primary.query("SELECT @@GLOBAL.gtid_binlog_pos")[0][0]
    got = replica.query("SELECT MASTER_GTID_WAIT(%s, %s)", (target, timeout))[0][0]
    if got != 0:
        status = slave_status(replica) or {}
        raise RuntimeError(
            f"replica did not reach {target} in {timeout}s: "
            f"IO={status.get('Slave_IO_Running')} SQL={status.get('Slave_SQL_Running')} "
            f"error={status.get('Last_Error') or status.get('Last_IO_Error')}"
        )


def writes_proceed(server, timeout=2):
    """Whether a write on ``server`` commits within ``timeout`` s (a held FLUSH TABLES WITH
    READ LOCK makes it wait). Not binlogged, so replication positions do not move."""
    conn = server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_log_bin = 0")
            cur.execute("SET SESSION lock_wait_timeout = %s", (max(1, int(timeout)),))
            cur.execute("CREATE DATABASE IF NOT EXISTS probe")
            cur.execute(
                "CREATE TABLE IF NOT EXISTS probe.t (id INT AUTO_INCREMENT PRIMARY KEY) ENGINE=InnoDB"
            )
            cur.execute("INSERT INTO probe.t VALUES ()")
        return True
    except pymysql.err.OperationalError as exc:
        if exc.args and exc.args[0] == 1205:  # lock wait timeout
            return False
        raise
    finally:
        conn.close()


class Writer(Loops):
    """Keeps inserting into ``app.events`` (InnoDB) on the primary, one row per commit, and
    every 20th commit a row into ``app.audit`` (Aria), until stopped."""

    def __init__(self, primary, pause=0.0):
        self.primary = primary
        self.pause = pause
        self.rows = 0
        self.errors = []
        super().__init__(name="mariadb-writer", daemon=True)

    def _loop(self, _index):
        conn = self.primary.connect()
        try:
            with conn.cursor() as cur:
                while not self._stop.is_set():
                    cur.execute(
                        "INSERT INTO app.events (payload) VALUES (%s)",
                        (f"event {self.rows} " + "x" * 100,),
                    )
                    self.rows += 1
                    if self.rows % 20 == 0:
                        cur.execute("INSERT INTO app.audit (note) VALUES (%s)", (f"n{self.rows}",))
                    if self.pause:
                        time.sleep(self.pause)
        except Exception as exc:  # noqa: BLE001 - reported by stop()
            self.errors.append(exc)
        finally:
            conn.close()

    def stop(self):
        super().stop()
        if self.errors:
            raise RuntimeError(f"writer failed: {self.errors[0]}")
        return self.rows


@dataclass
class Lab:
    base: Path
    btrfs: Btrfs
    subvolume: Path
    snapshot_dir: Path
    primary: Server
    replica: Server

    def settings(self, destination, **overrides):
        """mysqlsnap settings for the replica (TCP as the backup user, btrfs backend)."""
        settings = {
            "connection": {
                "host": "127.0.0.1",
                "port": self.replica.port,
                "user": BACKUP_USER,
                "password": BACKUP_PASSWORD,
            },
            "datadir": str(self.replica.datadir),
            "backend": "btrfs",
            "btrfs": {"subvolume": str(self.subvolume), "snapshot_dir": str(self.snapshot_dir)},
            "destination": str(destination),
            "lock_file": str(self.base / "mysqlsnap.lock"),
            "lock_timeout": 10,
            "keep": 5,
        }
        settings.update(overrides)
        return settings

    def snapshots(self):
        return sorted(p.name for p in self.snapshot_dir.iterdir())

    def stop(self):
        for server in (self.replica, self.primary):
            with contextlib.suppress(Exception):
                server.stop()
        self.btrfs.destroy()
        shutil.rmtree(self.base, ignore_errors=True)


def prepare_datadirs(base, btrfs):
    """A fresh primary datadir ``base/primary`` and its copy as the replica's, in the
    subvolume ``<btrfs>/mysql``; snapshots go to ``<btrfs>/snapshots``. Returns
    ``(subvolume, snapshot_dir, primary_dir, replica_dir)``."""
    subvolume = btrfs.mount / "mysql"
    _run(["btrfs", "subvolume", "create", str(subvolume)])
    snapshot_dir = btrfs.mount / "snapshots"
    snapshot_dir.mkdir(mode=0o755)
    primary_dir = Path(base) / "primary"
    install_datadir(primary_dir)
    replica_dir = subvolume / "data"
    shutil.copytree(primary_dir, replica_dir, symlinks=True)
    _chown_mysql(subvolume)
    return subvolume, snapshot_dir, primary_dir, replica_dir


def start_lab(btrfs_mb=1024, seed_rows=2000, prefix="webfarm-mariadb-"):
    """Primary + replica (GTID, caught up, ``app`` schema seeded) with the replica's datadir
    in the btrfs subvolume ``<btrfs>/mysql``; snapshots go to ``<btrfs>/snapshots``."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)
    btrfs = None
    servers = []
    try:
        btrfs = make_btrfs(base, btrfs_mb)
        subvolume, snapshot_dir, primary_dir, replica_dir = prepare_datadirs(base, btrfs)
        primary = start_server("primary", base / "run", primary_dir, 1)
        servers.append(primary)
        replica = start_server("replica", base / "run", replica_dir, 2)
        servers.append(replica)
        create_users(primary)
        create_app_schema(primary)
        if seed_rows:
            primary.query(
                "INSERT INTO app.events (payload) SELECT CONCAT('seed ', seq, ' ', REPEAT('s', 100)) "
                f"FROM app.seq_1_to_{int(seed_rows)}"
            )
        start_replication(replica, primary)
        wait_caught_up(replica, primary)
        return Lab(base, btrfs, subvolume, snapshot_dir, primary, replica)
    except Exception:
        for server in servers:
            server.stop()
        if btrfs:
            btrfs.destroy()
        shutil.rmtree(base, ignore_errors=True)
        raise


def can_run_lab():
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (loop devices, mount)"
    for tool in (MARIADBD, INSTALL_DB, shutil.which("mkfs.btrfs"), shutil.which("losetup")):
        if not tool or not os.path.exists(tool):
            return "needs mariadb-server and btrfs-progs (scripts/apt-packages.txt)"
    return None
