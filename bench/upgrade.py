"""Benchmark of rolling app upgrades on the lab topology (2 sites x 2 farms x 2 members).

Anchors (issue 8): total upgrade time vs the sum of the inherent waits (HAProxy drain +
health checks) -> overhead ratio; Salt job latency per step.

Starts the same lab as tests/integration/test_upgrade.py (real salt-master, 10 salt-minions,
memcached per farm, a PHP app per member, both HAProxy tiers) through pytest's fixtures, runs
several app rollouts under live traffic and prints, per rollout and as medians:

- total: wall time of ``salt-run state.orchestrate upgrade`` and the runner's own time;
- inherent: sum over steps of the time HAProxy waited for sessions to drain plus the time the
  health checks waited for the new release to answer with its version;
- overhead ratio: total / inherent;
- Salt job latency per step function (median / max of the runner's LocalClient calls).

Run from the repo root: ``.venv/bin/python bench/upgrade.py`` (about 2-3 minutes).
"""

import json
import logging
import statistics
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROLLOUTS = ("2.0.1", "3.0.0", "3.0.1", "3.0.2")
RESULTS = {}


def test_bench_upgrade(upgrade_lab):
    from tests.support.upgrade_lab import build_release, orchestrate_report

    for version in ROLLOUTS:
        build_release(upgrade_lab.dist, version)
    runs = []
    with upgrade_lab.traffic() as traffic:
        for version in ROLLOUTS:
            pillar = json.dumps({"upgrade": {"kind": "app", "version": version}})
            started = time.monotonic()
            ret = upgrade_lab.salt_run_cli.run("state.orchestrate", "upgrade", f"pillar={pillar}")
            wall = time.monotonic() - started
            report = orchestrate_report(ret.data)
            assert ret.returncode == 0 and report and report["result"], ret
            runs.append((version, wall, report))
    # pytest imports this file as another module: hand the figures to the script's copy.
    results = getattr(sys.modules.get("__main__"), "RESULTS", RESULTS)
    results["runs"] = runs
    results["failures"] = len(traffic.failures)
    results["requests"] = traffic.requests()
    results["regressions"] = len(traffic.regressions())


def _print():
    runs = RESULTS.get("runs")
    if not runs:
        print("benchmark did not complete; see the pytest output above")
        return 1
    print()
    print("== rolling app upgrade, 2 sites x 2 farms x 2 members, 4 waves, live traffic")
    print(
        f"{'version':>8} {'total s':>8} {'runner s':>9} {'drain wait':>11} {'health wait':>12} {'ratio':>7}"
    )
    ratios, totals, inherents = [], [], []
    latency = {}
    for version, wall, report in runs:
        drain = sum(s["timings"].get("drain_wait", 0) for s in report["steps"])
        health = sum(s["timings"].get("health_wait", 0) for s in report["steps"])
        inherent = drain + health
        ratio = wall / inherent if inherent else float("inf")
        ratios.append(ratio)
        totals.append(wall)
        inherents.append(inherent)
        print(
            f"{version:>8} {wall:8.2f} {report['seconds']:9.2f} {drain:11.3f} {health:12.3f} {ratio:7.1f}"
        )
        for call in report["latency"]:
            latency.setdefault(call["fun"], []).append(call["seconds"])
    print(
        f"median: total {statistics.median(totals):.2f} s vs inherent waits"
        f" {statistics.median(inherents):.3f} s -> overhead ratio {statistics.median(ratios):.1f}x"
    )
    steps = statistics.median(len(r["steps"]) for _, _, r in runs)
    print(
        f"orchestration cost per farm step: {(statistics.median(totals) - statistics.median(inherents)) / steps:.2f} s"
        f" ({steps:.0f} steps per rollout; the lab's requests are short, so drains end at once)"
    )
    print("Salt job latency per step (runner LocalClient call, includes the step's own work):")
    for fun, values in sorted(latency.items()):
        print(
            f"  {fun:<22} n={len(values):3d} median {statistics.median(values):6.3f} s"
            f"  max {max(values):6.3f} s"
        )
    print(
        f"traffic: {RESULTS['requests']} requests, {RESULTS['failures']} failed,"
        f" {RESULTS['regressions']} sessions with a version regression"
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "salt" / "_utils"))
    code = pytest.main(
        [
            __file__,
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:logging",
            "--rootdir",
            str(REPO),
            "-p",
            "tests.support.salt_env",
            "-p",
            "tests.support.upgrade_lab",
            "--timeout",
            "900",
        ]
    )
    # Salt's log handlers flush into closed streams at exit; that noise is not a result.
    logging.raiseExceptions = False
    sys.exit(_print() or int(code))
