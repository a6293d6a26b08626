"""Benchmark: mysqlsnap vs mariabackup on the same replica under the same write load.

Starts the MariaDB lab of lab/mariadb.py (primary + GTID replica, replica datadir on
btrfs on a loop device), seeds it, keeps a writer inserting into the primary, and measures in
one run, side by side:

- ``lock_ms`` median of >= 5 mysqlsnap backups vs the time ``mariabackup --backup`` blocks
  writes. Both are also measured from outside by a probe that commits tiny writes on the
  replica in a loop: the longest gap between two commits during a run is how long writes
  were blocked (the FTWRL for mysqlsnap, the BACKUP STAGE locks for mariabackup);
- total backup time, mysqlsnap vs mariabackup;
- copy throughput of mysqlsnap vs a raw ``rsync -a`` of the same snapshot (timed right
  after or before mysqlsnap's copy, alternately, while the snapshot still exists; not
  counted in its total; both read the snapshot from the page cache).

Anchors (issue 3): lock <= 50 ms median; copy >= 0.9x raw rsync.

Run as root from the repository root: ``.venv/bin/python bench/mysqlsnap.py``
(``MYSQLSNAP_BENCH_ROWS`` sets the seed size, default 600000 rows ~ 150 MB).
"""

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import pymysql  # noqa: E402

import lab as _lab  # noqa: E402, F401 - salt/_utils on sys.path too (lab/__init__.py)
import webfarm_mysqlsnap as logic  # noqa: E402
from lab import defaults  # noqa: E402
from lab.loops import Loops  # noqa: E402
from lab.mariadb import BACKUP_PASSWORD, Writer, can_run_lab, start_lab, wait_caught_up  # noqa: E402
from lab.modload import load_file  # noqa: E402


def load_module():
    """The execution module as plain Python: its backup sequence takes ``run``/``connect``."""
    return load_file("mysqlsnap_bench", REPO / "salt" / "_modules" / "mysqlsnap.py")


snap = load_module()

RUNS = 5
MARIABACKUP_RUNS = 3


class StallProbe(Loops):
    """Commits tiny unlogged writes on the replica in a loop and keeps each commit's time."""

    def __init__(self, server):
        self.server = server
        self.times = []
        super().__init__(daemon=True)

    def _loop(self, _index):
        conn = self.server.connect()
        with conn.cursor() as cur:
            cur.execute("SET SESSION sql_log_bin = 0")
            cur.execute("CREATE DATABASE IF NOT EXISTS probe")
            cur.execute(
                "CREATE TABLE IF NOT EXISTS probe.stall (id INT AUTO_INCREMENT PRIMARY KEY) ENGINE=InnoDB"
            )
            while not self._stop.is_set():
                cur.execute("INSERT INTO probe.stall VALUES ()")
                self.times.append(time.perf_counter())
                time.sleep(0.001)
        conn.close()

    def max_gap_ms(self, start, end):
        inside = [t for t in self.times if start <= t <= end]
        if len(inside) < 2:
            return float("nan")
        return max(b - a for a, b in zip(inside, inside[1:], strict=False)) * 1000.0


def run(cmd, timeout):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def du_bytes(path):
    return int(
        subprocess.run(
            ["du", "-sb", str(path)], capture_output=True, text=True, check=True
        ).stdout.split()[0]
    )


def seed(lab, rows):
    step = 100_000
    done = 0
    while done < rows:
        n = min(step, rows - done)
        lab.primary.query(
            "INSERT INTO app.events (payload) SELECT CONCAT('bench ', seq, ' ', REPEAT('b', 120)) "
            f"FROM app.seq_1_to_{n}"
        )
        done += n
    wait_caught_up(lab.replica, lab.primary, timeout=300)


def warm(directory):
    """Read every file under ``directory`` once, so that both copies of a snapshot read it
    from the page cache: the ratio then measures the copy, not which copy ran first (a fresh
    snapshot's files are new inodes, and the loop device's backing file is cached too)."""
    for root, _dirs, files in os.walk(directory):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                while handle.read(1 << 20):
                    pass


def settle(dest):
    """Write back the destination filesystem's dirty pages (syncfs), so that a copy does not
    pay for the previous one's writeback."""
    subprocess.run(["sync", "--file-system", str(dest)], check=True)


def with_raw_rsync(raws, extra, ours, dest):
    """A command runner that, around mysqlsnap's rsync of its snapshot (alternately after and
    before it), times a raw ``rsync -a`` of the same snapshot directory (MB/s appended to
    ``raws``); both read a warm snapshot."""

    def runner(cmd, timeout):
        if cmd[0] != "rsync":
            return run(cmd, timeout)
        source, target = cmd[-2], dest / "raw"
        # Alternate the order as well (cache and writeback state differ for the second copy).
        raw_first = len(raws) % 2 == 1
        began = time.perf_counter()
        warm(source)
        settle(dest)
        spent = time.perf_counter() - began

        def raw():
            settle(dest)
            started = time.perf_counter()
            subprocess.run(["rsync", "-a", source, f"{target}/"], check=True)
            seconds = time.perf_counter() - started
            raws.append(du_bytes(target) / seconds / 1e6)
            shutil.rmtree(target)
            return time.perf_counter() - started

        if raw_first:
            spent += raw()
        began = time.perf_counter()
        settle(dest)
        spent += time.perf_counter() - began
        started = time.perf_counter()
        proc = run(cmd, timeout)
        ours.append(time.perf_counter() - started)
        if not raw_first and proc.returncode == 0:
            spent += raw()
        extra.append(spent)
        return proc

    return runner


def mariabackup(lab, dest, i):
    """One ``mariabackup --backup``; returns (start, end, bytes, block window) where the block
    window is the time between its BACKUP STAGE BLOCK_COMMIT and BACKUP STAGE END log lines,
    timed here as the lines arrive."""
    target = dest / f"mariabackup-{i}"
    cmd = [
        "mariabackup", "--no-defaults", "--backup", f"--target-dir={target}",
        f"--socket={lab.replica.socket}", "--user=root", f"--datadir={lab.replica.datadir}",
    ]  # fmt: skip
    lines = []
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        lines.append((time.perf_counter(), line.rstrip()))
    proc.wait(600)
    ended = time.perf_counter()
    if proc.returncode != 0:
        raise RuntimeError("mariabackup failed:\n" + "\n".join(line for _, line in lines[-20:]))
    block = [t for t, line in lines if "BLOCK_COMMIT" in line.upper()]
    end = [t for t, line in lines if "STAGE END" in line.upper() and block and t >= block[0]]
    window = (block[0], end[0]) if block and end else None
    size = du_bytes(target)
    shutil.rmtree(target)
    return started, ended, size, window


def main():
    reason = can_run_lab()
    if reason:
        sys.exit(f"cannot run the benchmark: {reason}")
    if not shutil.which("mariabackup"):
        sys.exit("cannot run the benchmark: mariabackup missing (apt install mariadb-backup)")
    rows = int(os.environ.get("MYSQLSNAP_BENCH_ROWS", "600000"))
    t0 = time.perf_counter()
    lab = start_lab(btrfs_mb=4096, seed_rows=0, prefix="webfarm-bench-mysqlsnap-")
    try:
        seed(lab, rows)
        print(f"lab up, {rows} rows seeded and replicated in {time.perf_counter() - t0:.1f}s")
        dest = lab.base / "backups"
        dest.mkdir()
        settings = logic.merge_settings(
            defaults.load("mysqlsnap"), lab.settings(dest, keep=1, lock_timeout=5)
        )
        conn = settings["connection"]

        def connect():
            return pymysql.connect(
                host=conn["host"],
                port=conn["port"],
                user=conn["user"],
                password=BACKUP_PASSWORD,
                autocommit=True,
            )

        writer = Writer(lab.primary).start()
        probe = StallProbe(lab.replica).start()
        time.sleep(1)
        shutil.rmtree(snap._run_backup(settings, run, connect)["backup_dir"])  # warm the page cache
        snaps, raws = [], []
        extra, ours = [], []
        # The runner's extra work sits inside run_backup's own copy timer, so mysqlsnap's copy
        # rate is taken from the runner's timing of its rsync alone.
        runner = with_raw_rsync(raws, extra, ours, dest)
        for _ in range(RUNS):
            start = time.perf_counter()
            result = snap._run_backup(settings, runner, connect)
            end = time.perf_counter()
            shutil.rmtree(result["backup_dir"])
            result["copy_mb_s"] = result["bytes"] / ours[-1] / 1e6
            snaps.append((result, end - start - extra[-1], probe.max_gap_ms(start, end)))
        mbs = []
        for i in range(MARIABACKUP_RUNS):
            start, end, size, window = mariabackup(lab, dest, i)
            stage_ms = (window[1] - window[0]) * 1000 if window else float("nan")
            mbs.append((end - start, probe.max_gap_ms(start, end), size, stage_ms))
        probe.stop()
        written = writer.stop()
    finally:
        lab.stop()

    med = statistics.median
    lock = med(r["lock_ms"] for r, _, _ in snaps)
    snap_gap = med(g for _, _, g in snaps)
    mb_gap = med(m[1] for m in mbs)
    mb_stage = med(m[3] for m in mbs)
    snap_total = med(d for _, d, _ in snaps)
    mb_total = med(m[0] for m in mbs)
    copy = med(r["copy_mb_s"] for r, _, _ in snaps)
    raw = med(raws)
    size_mb = snaps[0][0]["bytes"] / 1e6
    print(
        f"\nmysqlsnap benchmark: {size_mb:.0f} MB datadir, writer inserted {written} rows during the run"
    )
    print(f"{'figure':58} {'measured':>22}  anchor")
    print(f"{'mysqlsnap lock_ms, median of ' + str(RUNS):58} {lock:>19.1f} ms  <= 50 ms median")
    every = ", ".join(f"{r['lock_ms']:.1f}" for r, _, _ in snaps)
    print(f"{'  all runs':58} {every:>22}")
    print(
        f"{'mariabackup BLOCK_COMMIT..END (writes blocked), median of ' + str(MARIABACKUP_RUNS):58} {mb_stage:>19.1f} ms  (vs mysqlsnap lock_ms)"
    )
    print(
        f"{'longest write stall on the replica during a run, mysqlsnap':58} {snap_gap:>19.1f} ms  (probe: lock + I/O contention)"
    )
    print(
        f"{'longest write stall on the replica during a run, mariabackup':58} {mb_gap:>19.1f} ms  (probe: lock + I/O contention)"
    )
    print(f"{'total backup time, mysqlsnap, median':58} {snap_total:>20.2f} s")
    print(
        f"{'total backup time, mariabackup --backup, median':58} {mb_total:>20.2f} s  ratio {snap_total / mb_total:.2f}x"
    )
    print(f"{'copy throughput, mysqlsnap (rsync of its snapshot)':58} {copy:>16.1f} MB/s")
    print(
        f"{'copy throughput, raw rsync -a of the same snapshot, median':58} {raw:>16.1f} MB/s  ratio {copy / raw:.2f}x (>= 0.9x)"
    )
    ours_runs = ", ".join(f"{r['copy_mb_s']:.0f}" for r, _, _ in snaps)
    print(
        f"{'  per run, MB/s: mysqlsnap | raw rsync':58} {ours_runs} | {', '.join(f'{x:.0f}' for x in raws)}"
    )
    ok = lock <= 50 and copy >= 0.9 * raw
    print(
        f"\nanchors {'met' if ok else 'NOT met'}; total bench time {time.perf_counter() - t0:.0f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
