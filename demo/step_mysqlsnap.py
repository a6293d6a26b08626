"""Step 3: a snapshot backup of the replica under write load, then its verification.

:func:`setup` runs before the minions start (``ip netns exec`` gives each daemon a private
copy of the mount table, so the btrfs must be mounted first): a btrfs on a loop device under
``$WEBFARM_DEMO_DIR/db``, MariaDB on db-primary (10.77.0.20:3306, its own namespace) and on
db-replica (10.77.0.21) with the replica's datadir in a btrfs subvolume, GTID replication
between them over the lab network. :func:`run` keeps a writer inserting into the primary
while ``salt db-replica mysqlsnap.backup`` runs, then ``mysqlsnap.verify`` on the result.
The server helpers are lab/mariadb.py, which the tests also use, so both run the same lab.
"""

import subprocess
import time

from demo import netlab, salt_lab, topology
from lab import mariadb

TITLE = "step 3: snapshot backup of db-replica under write load (salt db-replica mysqlsnap.backup)"
PRIMARY, REPLICA = "db-primary", "db-replica"
SEED_ROWS = 50000
_LAB = {}


def _db_dir():
    return salt_lab.STATE_DIR / "db"


def _paths():
    base = _db_dir()
    mount = base / "btrfs"  # lab/mariadb.py's layout
    return {
        "base": base,
        "run": base / "run",
        "subvolume": mount / "mysql",
        "replica_data": mount / "mysql" / "data",
        "snapshots": mount / "snapshots",
        "destination": salt_lab.STATE_DIR / "backups" / "mysql",
    }


def _address(minion_id):
    return next(h.address for h in topology.hosts() if h.id == minion_id)


def pillar():
    """db-replica's ``mysqlsnap`` pillar: its socket, the btrfs backend, a demo destination."""
    paths = _paths()
    return {
        REPLICA: {
            "mysqlsnap": {
                "connection": {
                    "unix_socket": str(paths["run"] / "replica.sock"),
                    "user": mariadb.BACKUP_USER,
                    "password": mariadb.BACKUP_PASSWORD,
                },
                "datadir": str(paths["replica_data"]),
                "backend": "btrfs",
                "btrfs": {
                    "subvolume": str(paths["subvolume"]),
                    "snapshot_dir": str(paths["snapshots"]),
                },
                "destination": str(paths["destination"]),
                "lock_file": str(paths["base"] / "mysqlsnap.lock"),
                "keep": 3,
            }
        }
    }


def setup():
    """Mount the btrfs, start both servers in their namespaces, replicate; a summary line."""
    reason = mariadb.can_run_lab()
    if reason:
        raise RuntimeError(f"the MariaDB lab cannot run here: {reason}")
    paths = _paths()
    paths["base"].mkdir(mode=0o755, parents=True)
    for directory in (salt_lab.STATE_DIR, paths["base"]):
        directory.chmod(0o755)  # mariadbd runs as mysql
    btrfs = mariadb.make_btrfs(paths["base"], size_mb=1024)
    datadirs = mariadb.prepare_datadirs(paths["base"], btrfs)[2:]
    servers = {}
    for server_id, (minion_id, datadir) in enumerate(
        zip((PRIMARY, REPLICA), datadirs, strict=True), 1
    ):
        servers[minion_id] = mariadb.start_server(
            minion_id.split("-")[1], paths["run"], datadir, server_id, port=3306,
            bind=_address(minion_id), wrap=netlab.exec_argv(netlab.PREFIX + minion_id, []),
        )  # fmt: skip
    primary, replica = servers[PRIMARY], servers[REPLICA]
    mariadb.create_users(primary, repl_host=_address(REPLICA))
    mariadb.create_app_schema(primary)
    primary.query(
        "INSERT INTO app.events (payload) SELECT CONCAT('seed ', seq, ' ', REPEAT('s', 100)) "
        f"FROM app.seq_1_to_{SEED_ROWS}"
    )
    mariadb.start_replication(replica, primary, host=_address(PRIMARY))
    mariadb.wait_caught_up(replica, primary)
    _LAB.update(primary=primary, replica=replica, btrfs=btrfs)
    return (
        f"{PRIMARY} {_address(PRIMARY)} -> {REPLICA} {_address(REPLICA)}: GTID replication; "
        f"replica datadir in a btrfs subvolume on {btrfs.loop}; {SEED_ROWS} rows seeded"
    )


def run():
    primary, replica = _LAB["primary"], _LAB["replica"]
    writer = mariadb.Writer(primary, pause=0.002).start()
    try:
        time.sleep(1)
        print(f"    $ salt {REPLICA} mysqlsnap.backup   (writer inserting into {PRIMARY})")
        before = writer.rows
        result = salt_lab.call(REPLICA, "mysqlsnap.backup")
        during = writer.rows - before
    finally:
        rows = writer.stop()
    if result.get("result") is not True:
        raise RuntimeError(f"mysqlsnap.backup: {result}")
    position = result.get("replica") or {}
    source = result.get("source") or {}
    tables = ", ".join(f"{t} {n}" for t, n in sorted((result.get("tables") or {}).items()))
    print(
        f"    read lock held {result['lock_ms']:.1f} ms; snapshot {result['snapshot']}\n"
        f"    copied {result['bytes'] / 1e6:.1f} MB in {result['copy_s']:.2f}s; "
        f"backup took {result['duration_s']:.2f}s; {during} rows committed on {PRIMARY} meanwhile\n"
        f"    replica of {position.get('master_host')}:{position.get('master_port')} at gtid "
        f"{position.get('gtid_slave_pos')} ({position.get('master_log_file')}:"
        f"{position.get('master_log_pos')}); own binlog {source.get('binlog_file')}:"
        f"{source.get('binlog_pos')}\n"
        f"    rows at lock time: {tables}"
    )
    print(f"    $ salt {REPLICA} mysqlsnap.verify {result['backup_dir']}")
    report = salt_lab.call(REPLICA, "mysqlsnap.verify", result["backup_dir"])
    if report.get("result") is not True:
        raise RuntimeError(f"mysqlsnap.verify: {report}")
    print(
        f"    verify: a throw-away mariadbd on a copy; {report['tables_checked']} tables "
        f"checked, row counts of {report['rows_compared']} tables match the manifest "
        f"({report['duration_s']:.1f}s)"
    )
    mariadb.wait_caught_up(replica, primary)
    left = sorted(p.name for p in _paths()["snapshots"].iterdir())
    print(
        f"    writer: {rows} rows, 0 errors; replica caught up again; snapshots left: {len(left)}"
    )
    if left:
        raise RuntimeError(f"snapshots left behind: {left}")
    return (
        f"lock {result['lock_ms']:.1f} ms, backup {result['duration_s']:.2f}s "
        f"({result['bytes'] / 1e6:.0f} MB), verify ok, {during} rows written meanwhile"
    )


def cleanup():
    """After the daemons are stopped: unmount what is mounted under the demo dir, detach its
    loop devices."""
    for point in sorted(mariadb.mounts_under(salt_lab.STATE_DIR), reverse=True):
        for _ in range(20):
            if subprocess.run(["umount", point], capture_output=True).returncode == 0:
                break
            time.sleep(0.25)
    listing = subprocess.run(
        ["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    for line in listing.stdout.splitlines():
        name, _, back = line.strip().partition(" ")
        if back.strip().startswith(str(salt_lab.STATE_DIR) + "/"):
            subprocess.run(["losetup", "--detach", name], capture_output=True, check=False)
    _LAB.clear()
