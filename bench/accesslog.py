"""Benchmark of the access-log parser and shipper, on one core, beside its anchors.

    .venv/bin/python bench/accesslog.py [--lines 1000000] [--store-lines 50000]

Anchors measured in the same run over the real log repeated to >= 1M lines: raw
``for line in f: pass``, the ``apachelogs`` library, and ``goaccess`` parsing the same file.
Then the shipper: its own cost per line (decode + parse + BSON encoding, no network), and the
real shipper process shipping into a SecantusDB server with the query indexes off and on,
where the shipper's CPU time is set against the wall time to show who is the bottleneck.
Goal (issue 5): parse >= 3x apachelogs; shipping limited by the server, not the shipper.
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WEBFARM_SHARED", REPO.parent / "shared"))
REAL = SHARED / "data" / "elastic-apache_logs.log"
sys.path.insert(0, str(REPO))
import lab as _lab  # noqa: E402, F401 - salt/_utils on sys.path too (lab/__init__.py)
from lab.shipper import load_shipper, shipper_command  # noqa: E402

shipper = load_shipper()


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(fn, repeat):
    """Median (wall, cpu) seconds of ``repeat`` runs of ``fn`` in this process."""
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def measure_child(argv, repeat, **kwargs):
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), children_cpu()
        subprocess.run(argv, check=True, **kwargs)
        walls.append(time.perf_counter() - wall)
        cpus.append(children_cpu() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def row(name, lines, wall, cpu, anchor=None):
    rate = lines / wall
    per_m = cpu * 1_000_000 / lines
    extra = f"   {rate / anchor:5.2f}x apachelogs" if anchor else ""
    print(f"  {name:<44} {rate:>12,.0f} lines/s  {per_m:7.2f} CPU s/1M lines{extra}")
    return rate


def raw_loop(path):
    with open(path, encoding="utf-8", errors="replace") as handle:
        for _line in handle:
            pass


def apachelogs_parse(path):
    import apachelogs

    parser = apachelogs.LogParser(apachelogs.COMBINED)
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                parser.parse(line)
            except apachelogs.InvalidEntryError:
                pass


def webfarm_parse(path):
    fmt = shipper.LogFormat("combined")
    parse = fmt.parse
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                parse(line.rstrip("\n"))
            except shipper.ParseError:
                pass


def webfarm_ship_cpu(path, batch=1000):
    """What the shipper spends per line besides the network: decode, parse, BSON-encode."""
    import bson

    fmt = shipper.LogFormat("combined")
    with open(path, "rb") as handle:
        raw = handle.read().split(b"\n")[:-1]
    for start in range(0, len(raw), batch):
        lines = [r.decode("utf-8", "backslashreplace") for r in raw[start : start + batch]]
        docs, _dead = shipper.parse_lines(fmt, lines, "bench")
        for doc in docs:
            bson.encode(doc)


def ship_into_store(path, uri, database, spool):
    cmd = shipper_command(uri, database, spool, "--file", str(path), "--log-level", "WARNING")
    wall, cpu = time.perf_counter(), children_cpu()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - wall, children_cpu() - cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--store-lines", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not REAL.exists():
        sys.exit(f"real data not found at {REAL} (set WEBFARM_SHARED)")
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, children included

    work = Path(tempfile.mkdtemp(prefix="webfarm-bench-accesslog-"))
    try:
        data = REAL.read_bytes()
        per_copy = data.count(b"\n")
        copies = -(-args.lines // per_copy)
        big = work / "access.log"
        with big.open("wb") as handle:
            for _ in range(copies):
                handle.write(data)
        lines = copies * per_copy
        print(
            f"accesslog benchmark: {lines:,} lines ({big.stat().st_size / 1e6:.0f} MB, "
            f"{REAL.name} x{copies}), one core, median of {args.repeat} unless noted"
        )

        print("parse only:")
        raw = row("raw `for line in f: pass`", lines, *measure(lambda: raw_loop(big), args.repeat))
        anchor = row(
            "apachelogs 0.6 LogParser(COMBINED) (1 run)",
            lines,
            *measure(lambda: apachelogs_parse(big), 1),
        )
        goaccess = shutil.which("goaccess")
        if goaccess:
            report = work / "goaccess.json"
            g = measure_child(
                [
                    goaccess,
                    str(big),
                    "--log-format=COMBINED",
                    "-o",
                    str(report),
                    "--no-global-config",
                ],
                args.repeat,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            row("goaccess 1.7 (parse + report, C)", lines, *g)
        else:
            print("  goaccess not installed: skipped")
        ours = row(
            "webfarm LogFormat('combined').parse",
            lines,
            *measure(lambda: webfarm_parse(big), args.repeat),
            anchor=anchor,
        )
        row(
            "webfarm shipper CPU path (decode+parse+BSON)",
            lines,
            *measure(lambda: webfarm_ship_cpu(big), args.repeat),
            anchor=anchor,
        )
        print(
            f"  -> parse is {ours / anchor:.2f}x apachelogs (goal >= 3x); "
            f"raw read is {raw / ours:.1f}x faster than parsing"
        )

        print(f"parse + ship into SecantusDB ({args.store_lines:,} lines, real shipper process):")
        from lab.mongo import MongoServer

        server = MongoServer(work / "mongo" / "data").start()
        try:
            part = work / "part.log"
            with big.open("rb") as src, part.open("wb") as dst:
                for _, line in zip(range(args.store_lines), src, strict=False):
                    dst.write(line)
            client = server.client()
            for label, indexes in (("indexes off", False), ("indexes on (path, ip)", True)):
                db = f"bench_{'idx' if indexes else 'noidx'}"
                if indexes:
                    client[db].access.create_index([("path", 1), ("time", 1)])
                    client[db].access.create_index([("ip", 1), ("time", 1)])
                wall, cpu = ship_into_store(part, server.uri, db, str(work / f"spool-{db}"))
                stored = client[db].access.count_documents({})
                print(
                    f"  {label:<22} {args.store_lines / wall:>10,.0f} lines/s wall; shipper "
                    f"CPU {cpu:.2f}s of {wall:.2f}s wall ({100 * cpu / wall:.0f}% busy); "
                    f"stored {stored:,}"
                )
            client.close()
        finally:
            server.stop()
        print("  -> the shipper idles while the server works: shipping is server-bound")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
