"""Benchmark of rolling app upgrades on the lab topology (2 sites x 2 farms x 2 members).

Anchors (issue 8, issue 19): rollout time of the lab vs the sum of the inherent waits
(HAProxy drain + health checks); Salt round trips per farm step (goal <= 3); the per-farm
overhead in seconds; the planned rollout time of a 4-site x 8-farm x 16-member topology (512
members) from the measured per-step costs and a 60 s drain.

Starts, without pytest, the lab of tests/integration/test_upgrade.py: a real salt-master and
12 salt-minions on 127.0.0.1 (``lab.salt_cluster``: 8 web members, 2 site LBs, the preprod
host and the tests' rogue minion, whose grains claim a free member slot of s1/f1 that no
topology names, so the runner's plan sees it and leaves it out), and through
``lab.upgrade.FarmLab`` memcached per farm, a PHP app per member and on preprod (release
1.0.0, 2 workers each) and both HAProxy tiers, all on loopback. Every minion gets the repo's
pillar by role, the lab's ``webfarm:topology`` and its own paths, URLs and sockets (a
file_tree ext_pillar). It tests each release on preprod (``state.orchestrate
upgrade.preprod``), runs several app rollouts (``state.orchestrate upgrade``) under live
traffic (sites concurrently, the default) and prints, per rollout and as medians:

- total: wall time of ``salt-run state.orchestrate upgrade`` and the runner's own time;
- inherent: per wave, the longest drain wait plus the longest health wait of its farms
  (farms of one wave run at once), summed over the waves;
- overhead: what the waves took beyond their inherent waits, per wave and per farm step
  (``lab.upgrade.rollout_summary``; the plan before the first wave is outside it); round
  trips per farm step;
- Salt job latency per step function (median / max of the runner's LocalClient calls);
- the 512-member plan: waves from ``webfarm_upgrade.plan`` and, per wave, 60 s of drain plus
  the measured cost of the drain call, the member job and the ready call.

Every daemon (salt, PHP, memcached, HAProxy) is started by this script and stopped by PID
when it is done, on an exception and on SIGTERM or Ctrl-C.

Run from the repo root: ``.venv/bin/python bench/upgrade.py`` (about 3-4 minutes).
"""

import json
import logging
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import lab as _lab  # noqa: E402, F401 - salt/_utils on sys.path too (lab/__init__.py)
from lab import salt_cluster  # noqa: E402
from lab.net import free_port  # noqa: E402
from lab.pillar_tree import PillarOverrides  # noqa: E402
from lab.upgrade import (  # noqa: E402
    LAB_FARMS,
    LAB_MEMBERS,
    LAB_PREPROD,
    LAB_SITES,
    FarmLab,
    build_release,
    lab_minion_id,
    lab_minions,
    orchestrate_report,
)

ROLLOUTS = ("2.0.1", "3.0.0", "3.0.1", "3.0.2")
RESULTS = {}
DRAIN_512 = 60.0
INITIAL = "1.0.0"  # the release every member and the preprod host start at
SITES, FARMS, MEMBERS = LAB_SITES, LAB_FARMS, LAB_MEMBERS  # the upgrade tests' lab
WORKERS = 2  # php -S workers per app
GROUP = 4  # minions started at a time (each waits seconds for its key exchange)


minion_id = lab_minion_id


def lab_topology():
    """The lab's ``webfarm:topology`` before :class:`FarmLab` gives it addresses and ports."""
    return {
        "primary_lb": [{"id": "u-lb-primary"}],
        "sites": {
            site: {
                "lbs": [{"id": f"u-lb-{site}"}],
                "farms": {
                    farm: {"members": {m: {"id": minion_id(site, farm, m)} for m in MEMBERS}}
                    for farm in FARMS
                },
            }
            for site in SITES
        },
        "preprod": [{"id": LAB_PREPROD}],
    }


def start_salt(root, farm_lab):
    """The master (the repo's pillar top, the lab's topology first in pillar_roots, per-minion
    pillar through file_tree) and every minion, answering and synced: the master's config."""
    import salt.client
    import salt.config

    pillar = root / "pillar"  # no top.sls: the repo's pillar/top.sls applies
    salt_cluster.write_yaml(
        pillar / "webfarm" / "topology.sls", {"webfarm": {"topology": farm_lab.topology}}
    )
    tree = PillarOverrides(root / "pillar-tree")
    for ident, data in farm_lab.pillars().items():
        tree.set(ident, data)
    ports = (free_port(), free_port())
    mconf = salt_cluster.master_conf(root, pillar, ports, ext_pillar=tree.ext_pillar())
    logs = root / "logs"
    logs.mkdir()
    salt_cluster.spawn("salt-master", mconf, open(logs / "master.log", "w"))  # noqa: SIM115
    time.sleep(4)
    client = salt.client.LocalClient(mopts=salt.config.client_config(str(mconf)))
    grains = lab_minions()
    ids = sorted(grains)
    started = time.perf_counter()
    for first in range(0, len(ids), GROUP):
        group = ids[first : first + GROUP]
        for ident in group:
            conf = salt_cluster.minion_conf(root, ident, grains[ident], ports)
            salt_cluster.spawn("salt-minion", conf, open(logs / f"{ident}.log", "w"))  # noqa: SIM115
        salt_cluster.wait_ping(client, group, timeout=180)
    print(f"{len(ids)} minions up in {time.perf_counter() - started:.1f} s", flush=True)
    ret = client.cmd(ids, "saltutil.sync_all", tgt_type="list", timeout=300)
    missing = [ident for ident in ids if not ret.get(ident)]
    if missing:
        raise RuntimeError(f"saltutil.sync_all: no answer from {missing}")
    code, data = salt_cluster.salt_run(mconf, "saltutil.sync_all")
    if code != 0:
        raise RuntimeError(f"salt-run saltutil.sync_all: {str(data)[:600]}")
    return mconf


def bench(root):
    """Start the lab, test and roll out each release of ROLLOUTS; the figures in RESULTS."""
    dist = root / "dist"
    for version in (INITIAL, *ROLLOUTS):
        build_release(dist, version)
    farm_lab = FarmLab(lab_topology(), root / "farms", dist, initial=INITIAL, workers=WORKERS)
    try:
        farm_lab.start()
        print(
            f"lab in {root}: {len(farm_lab.apps)} PHP apps, {len(farm_lab.caches)} memcached,"
            f" {len(farm_lab.instances)} HAProxy",
            flush=True,
        )
        mconf = start_salt(root, farm_lab)
        runs = []
        with farm_lab.traffic() as traffic:
            for version in ROLLOUTS:
                pillar = json.dumps({"upgrade": {"kind": "app", "version": version}})
                code, data = salt_cluster.salt_run(
                    mconf, "state.orchestrate", "upgrade.preprod", f"pillar={pillar}"
                )
                if code != 0:
                    raise RuntimeError(f"upgrade.preprod {version}: {str(data)[:1200]}")
                started = time.monotonic()
                code, data = salt_cluster.salt_run(
                    mconf, "state.orchestrate", "upgrade", f"pillar={pillar}"
                )
                wall = time.monotonic() - started
                report = orchestrate_report(data)
                if code != 0 or not report or not report["result"]:
                    raise RuntimeError(f"upgrade {version}: {str(report or data)[:1500]}")
                print(f"rolled out {version} in {wall:.1f} s", flush=True)
                runs.append((version, wall, report))
        RESULTS["runs"] = runs
        RESULTS["failures"] = len(traffic.failures)
        RESULTS["requests"] = traffic.requests()
        RESULTS["regressions"] = len(traffic.regressions())
    finally:
        farm_lab.stop()


def _plan_512(costs):
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
        print("benchmark did not complete; see the error above")
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
    member = median_latency(latency, "upgrade.upgrade_step")
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


def main():
    base = Path(tempfile.mkdtemp(prefix="wfu", dir="/tmp"))

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    interrupted = None
    try:
        bench(base)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: stop everything, report no figures
        interrupted = str(exc) or "Ctrl-C"
    except Exception:  # noqa: BLE001 - reported, then the daemons are stopped
        traceback.print_exc()
    finally:
        left = salt_cluster.stop_everything(base)
        shutil.rmtree(base, ignore_errors=True)
        if left:
            print(f"WARNING: pids that would not stop: {left}")
    # Salt's log handlers flush into closed streams at exit; that noise is not a result.
    logging.raiseExceptions = False
    if interrupted:
        print(f"interrupted ({interrupted}): every daemon it started is stopped", flush=True)
        return 130
    return _print()


if __name__ == "__main__":
    sys.exit(main())
