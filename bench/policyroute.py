"""Benchmark: policyroute.apply (pyroute2, batched netlink) vs the seed's loop of `ip` commands.

1000 source rules across 10 tables (plus each table's default route), in one network
namespace, same run. Anchors (issue 4): apply >= 10x faster than the `ip` loop; a no-op
re-apply <= 100 ms. Run from the repo root as root: .venv/bin/python bench/policyroute.py
"""

import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import lab as _lab  # noqa: E402, F401 - salt/_utils on sys.path too (lab/__init__.py)
from lab.modload import load_file  # noqa: E402
from lab.netns import NetnsLab, ip, unique_prefix  # noqa: E402

TABLES = 10
SOURCES_PER_TABLE = 100
RUNS = 3
NOOP_RUNS = 10


def load_module():
    """The execution module as Salt would load it, with the dunders it uses."""
    module = load_file("policyroute_bench", REPO / "salt" / "_modules" / "policyroute.py")
    module.__pillar__ = {}
    module.__salt__ = {"event.send": lambda *args, **kwargs: True}
    return module


def config(netns, iproute2_dir):
    tables = {
        f"uplink{t}": {
            "id": t,
            "gateway": f"10.200.0.{t}",
            "dev": "eth0",
            "priority": 1000 + t,
            "sources": [f"172.16.{t}.{i}" for i in range(1, SOURCES_PER_TABLE + 1)],
        }
        for t in range(1, TABLES + 1)
    }
    return {"tables": tables, "netns": netns, "iproute2_dir": iproute2_dir}


def ip_batch_loop(netns, conf, seed_style):
    """The seed's bash loop as subprocesses: per table the default route, per source the rule.

    ``seed_style`` deletes before adding (what the seed's script does on every run); otherwise
    only the adds are run (the least an `ip` loop can do).
    """
    quiet = {"capture_output": True, "check": False}
    for spec in conf["tables"].values():
        table = str(spec["id"])
        if seed_style:
            subprocess.run(["ip", "-n", netns, "route", "del", "default", "table", table], **quiet)
        subprocess.run(
            ["ip", "-n", netns, "route", "add", "default", "via", spec["gateway"], "dev",
             spec["dev"], "table", table],
            check=True,
        )  # fmt: skip
        for src in spec["sources"]:
            if seed_style:
                subprocess.run(
                    ["ip", "-n", netns, "rule", "del", "from", src, "table", table], **quiet
                )
            subprocess.run(
                ["ip", "-n", netns, "rule", "add", "from", src, "table", table, "priority",
                 str(spec["priority"])],
                check=True,
            )  # fmt: skip


def clear(netns):
    """Remove every rule and route the runs made (both kinds use tables 1..TABLES)."""
    for t in range(1, TABLES + 1):
        ip(netns, "route", "flush", "table", str(t), check=False)
    rules = ip(netns, "rule").stdout.splitlines()
    for line in rules:
        prio = line.split(":", 1)[0]
        if prio.isdigit() and 1000 <= int(prio) <= 9999:
            ip(netns, "rule", "del", "priority", prio, check=False)
    leftover = [line for line in ip(netns, "rule").stdout.splitlines() if "lookup" in line]
    assert len(leftover) == 3, leftover


def timed(func, *args, **kwargs):
    start = time.perf_counter()
    result = func(*args, **kwargs)
    return time.perf_counter() - start, result


def main():
    logging.disable(logging.WARNING)
    if os.geteuid() != 0:
        sys.exit("run as root (network namespaces)")
    module = load_module()
    rules_expected = TABLES * SOURCES_PER_TABLE
    with NetnsLab(unique_prefix("bench")) as lab, tempfile.TemporaryDirectory() as etc:
        web, gw = lab.ns("web"), lab.ns("gw")
        lab.veth(web, "eth0", gw, "eth0", ["10.200.0.100/24"], ["10.200.0.1/24"])
        conf = config(web, etc)
        ip_seed, ip_adds, ours, noop, diff_noop = [], [], [], [], []
        for _ in range(RUNS):
            clear(web)
            ip_seed.append(timed(ip_batch_loop, web, conf, True)[0])
            clear(web)
            ip_adds.append(timed(ip_batch_loop, web, conf, False)[0])
            clear(web)
            elapsed, changes = timed(module.apply, **conf)
            assert len(changes["rules"]["added"]) == rules_expected, changes.keys()
            ours.append(elapsed)
            for _ in range(NOOP_RUNS):
                elapsed, changes = timed(module.apply, **conf)
                assert changes == {}
                noop.append(elapsed)
                diff_noop.append(timed(module.diff, **conf)[0])
        rules = ip(web, "rule").stdout.count("proto 77")
        clear(web)
    seed, adds, apply_, noop_ = map(statistics.median, (ip_seed, ip_adds, ours, noop))
    print(f"policyroute: {rules_expected} source rules across {TABLES} tables, medians of {RUNS}")
    print(f"  ip loop, seed style (del+add per entry) : {seed * 1000:8.1f} ms")
    print(f"  ip loop, adds only                      : {adds * 1000:8.1f} ms")
    print(f"  policyroute.apply (pyroute2, batched)   : {apply_ * 1000:8.1f} ms")
    print(
        f"  speed-up vs ip loop: {seed / apply_:5.1f}x (seed style), {adds / apply_:5.1f}x "
        f"(adds only)   anchor: >= 10x   {'OK' if adds / apply_ >= 10 else 'MISSED'}"
    )
    print(
        f"  no-op re-apply: median {noop_ * 1000:6.1f} ms, max {max(noop) * 1000:6.1f} ms, "
        f"diff only {statistics.median(diff_noop) * 1000:6.1f} ms   anchor: <= 100 ms   "
        f"{'OK' if noop_ <= 0.100 else 'MISSED'}"
    )
    print(f"  (webfarm rules in the namespace after the runs: {rules})")


if __name__ == "__main__":
    main()
