"""Benchmark of rolling app upgrades on the lab topology (2 sites x 2 farms x 2 members).

Anchors (issue 8, issue 19): rollout time of the lab vs the sum of the inherent waits
(HAProxy drain + health checks); Salt round trips per farm step (goal <= 3); the per-farm
overhead in seconds; the planned rollout time of a 4-site x 8-farm x 16-member topology (512
members) from the measured per-step costs and a 60 s drain.

Starts the same lab as tests/integration/test_upgrade.py (real salt-master, 11 salt-minions,
memcached per farm, a PHP app per member, both HAProxy tiers) through pytest's fixtures, tests
each release on preprod, runs several app rollouts under live traffic (sites concurrently, the
default) and prints, per rollout and as medians:

- total: wall time of ``salt-run state.orchestrate upgrade`` and the runner's own time;
- inherent: per wave, the longest drain wait plus the longest health wait of its farms
  (farms of one wave run at once), summed over the waves;
- overhead: what the waves took beyond their inherent waits, per wave and per farm step
  (``lab.upgrade.rollout_summary``; the plan before the first wave is outside it); round
  trips per farm step;
- Salt job latency per step function (median / max of the runner's LocalClient calls);
- the 512-member plan: waves from ``webfarm_upgrade.plan`` and, per wave, 60 s of drain plus
  the measured cost of the drain call, the member job and the ready call.

Run from the repo root: ``.venv/bin/python bench/upgrade.py`` (about 3-4 minutes).
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
DRAIN_512 = 60.0


def test_bench_upgrade(upgrade_lab):
    from lab.upgrade import build_release, orchestrate_report

    for version in ROLLOUTS:
        build_release(upgrade_lab.dist, version)
    runs = []
    with upgrade_lab.traffic() as traffic:
        for version in ROLLOUTS:
            pillar = json.dumps({"upgrade": {"kind": "app", "version": version}})
            ret = upgrade_lab.salt_run_cli.run(
                "state.orchestrate", "upgrade.preprod", f"pillar={pillar}"
            )
            assert ret.returncode == 0, ret
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


def _plan_512(costs):
    import lab  # noqa: F401 - salt/_utils on sys.path
    import webfarm_upgrade as wu

    grains = {
        f"web-s{s}-f{f}-m{m}": {
            "webfarm": {"role": "web", "site": f"s{s}", "farm": f"f{f}", "member": m}
        }
        for s in range(1, 5)
        for f in range(1, 9)
        for m in range(1, 17)
    }
    # The master-side topology names every one of them (trust from the master).
    topology = {"minions": {minion: "web" for minion in grains}}
    out = {}
    for label, batch in (("sites concurrently (default)", None), ("one farm at a time", 1)):
        _, waves = wu.plan_rollout(grains, wu.options("app", "9.9.9", batch=batch), topology)
        per_wave = DRAIN_512 + costs
        out[label] = (len(waves), max(len(w) for w in waves), len(waves) * per_wave)
    return out


def _print():
    from lab.upgrade import median_latency, rollout_summary

    runs = RESULTS.get("runs")
    if not runs:
        print("benchmark did not complete; see the pytest output above")
        return 1
    print()
    print("== rolling app upgrade, 2 sites x 2 farms x 2 members, sites concurrently, live traffic")
    print(
        f"{'version':>8} {'total s':>8} {'runner s':>9} {'waves':>6} {'drain wait':>11}"
        f" {'health wait':>12} {'overhead/wave s':>16} {'round trips/step':>17}"
    )
    totals, inherents, per_wave, per_step, trips = [], [], [], [], []
    latency = {}
    for version, wall, report in runs:
        summary = rollout_summary(report, wall)
        drain, health, waves = summary["drain"], summary["health"], summary["waves"]
        inherent = drain + health
        trips += summary["round_trips"]
        totals.append(wall)
        inherents.append(inherent)
        per_wave.append(summary["overhead_per_wave"])
        per_step.append(summary["overhead_per_step"])
        print(
            f"{version:>8} {wall:8.2f} {report['seconds']:9.2f} {waves:6d} {drain:11.3f}"
            f" {health:12.3f} {per_wave[-1]:16.2f} {max(summary['round_trips']):17d}"
        )
        for fun, values in summary["latency"].items():
            latency.setdefault(fun, []).extend(values)
    print(
        f"median: total {statistics.median(totals):.2f} s vs inherent waits"
        f" {statistics.median(inherents):.3f} s"
        f" -> overhead {statistics.median(totals) - statistics.median(inherents):.2f} s"
    )
    print(
        f"Salt round trips per farm step: max {max(trips)}, median {statistics.median(trips):.0f}"
        " (goal <= 3: drain / upgrade+health+check+flush on the members / ready)"
    )
    print(
        f"per-farm overhead: {statistics.median(per_step):.2f} s per farm step"
        f" ({statistics.median(per_wave):.2f} s per wave of 2 concurrent farms;"
        " the lab's requests are short, so drains end at once)"
    )
    print("Salt job latency per step (runner LocalClient call, includes the step's own work):")
    for fun, values in sorted(latency.items()):
        print(
            f"  {fun:<28} n={len(values):3d} median {statistics.median(values):6.3f} s"
            f"  max {max(values):6.3f} s"
        )
    drain_call = median_latency(latency, "haproxy_tier.drain")
    member = median_latency(latency, "farm.upgrade_step")
    ready = median_latency(latency, "haproxy_tier.ready")
    costs = drain_call + member + ready
    print(
        f"== 512 members on paper (4 sites x 8 farms x 16 members), {DRAIN_512:.0f} s drain + "
        f"{costs:.2f} s measured per farm step (drain call {drain_call:.2f} + member job"
        f" {member:.2f} + ready {ready:.2f})"
    )
    for label, (waves, width, seconds) in _plan_512(costs).items():
        print(
            f"  {label:<30} {waves:3d} waves of {width} farms -> planned {seconds:7.1f} s"
            f" ({seconds / 60:.1f} min)"
        )
    print(
        f"traffic: {RESULTS['requests']} requests, {RESULTS['failures']} failed,"
        f" {RESULTS['regressions']} sessions with a version regression"
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
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
