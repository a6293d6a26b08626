"""How webfarm's costs grow with the number of real minions, and what 512 members cost.

Issue 20. Usage: ``bench/scale.py [N ...]`` (default ``10 30 100``; N=100 keeps this 2-core
machine busy for about half an hour). For each N it starts a real salt-master and N real
salt-minion daemons on 127.0.0.1 (started in groups of ``GROUP`` so key exchange does not
time out), with the ``webfarm`` grains of a cluster of that size (``demo.cluster.sized``:
sites x farms x members + a primary LB, one LB per site and a monitor) and that cluster's
``webfarm:topology`` pillar, and prints:

- minion RSS (median per minion, total; a minion's process and its children);
- ``saltutil.sync_all`` to all; ``state.apply`` converging all, then again as a no-op (no
  changes), with the bench's own state top (motd + less, their files under the bench's dir;
  the repo's by-role top would configure this machine's /etc for every role at once); the
  by-role top itself (``state.top``) with ``test=True`` on one minion of each role;
- pillar render per minion on the master (``salt.pillar.get_pillar(...).compile_pillar()``
  in this process with the master's config, median over the minions) and ``pillar.items``
  to all (the master renders every minion's pillar at once);
- ``mine.update`` on all, then ``mine.get '*'`` of the nagios and haproxy mine functions;
- HAProxy: primary + every site config rendered (webfarm_haproxy.render) and ``haproxy -c``
  in this process, and ``haproxy_tier.validate`` through Salt on every LB minion;
- Nagios: the server config rendered from the real mine (demo.cluster.render_nagios) and
  ``nagios4 -v`` (if installed);
- Salt round trip of a farm step: ``test.ping`` and ``upgrade.version`` to one farm's members
  (LocalClient, as the upgrade runner calls them), median of ``REPEAT``;
- an app rollout of every farm under live traffic (lab.upgrade.FarmLab: memcached per farm,
  a PHP app per member and on the preprod host, a site HAProxy per site and the primary
  HAProxy, all on loopback, the topology pillar naming them; per-minion paths and sockets
  through a file_tree ext_pillar): ``state.orchestrate upgrade.preprod`` then
  ``state.orchestrate upgrade`` as an operator runs them, browser sessions through the
  primary tier meanwhile: wall time, waves, inherent waits, overhead per wave, Salt round
  trips and job latency per step, failed requests and version regressions (both must be 0).

Then it fits each figure against N (power law: exponent ~0 constant, ~1 linear, more is
worse), projects it to the seed's 512 members (518 minions), and prints the budgets: no-op
highstate of the whole cluster <= 5 min, master pillar render <= 0.5 s per minion, a full
32-farm rollout <= 8 x (drain + health) + 10 % (projected from the step round trip and from
the measured rollouts' overhead per wave).
The pillar render of the 512-member topology is also measured directly (no daemons needed).

Every daemon is started by this script in its own session and stopped by PID (SIGTERM, then
SIGKILL) when a size is done, on an exception and on Ctrl-C.
"""

import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import lab as _lab  # noqa: E402, F401 - salt/_utils on sys.path too (lab/__init__.py)
from demo import cluster  # noqa: E402
from lab import defaults  # noqa: E402
from lab.nagios import server_paths  # noqa: E402
from lab.net import free_port  # noqa: E402
from lab.pillar_tree import PillarOverrides  # noqa: E402
from lab.salt_cluster import (  # noqa: E402
    BENCH_TOP,
    BYROLE_TOP,
    STARTED,
    master_conf,
    minion_conf,
    salt_run,
    session_pids,
    spawn,
    stop_everything,
    wait_ping,
    write_pillar,
)
from lab.upgrade import (  # noqa: E402
    FarmLab,
    build_release,
    median_latency,
    orchestrate_report,
    rollout_summary,
)

DEFAULT_NS = (10, 30, 100)
GROUP = 10
REPEAT = 3
N_512 = 518  # 4 x 8 x 16 members + primary LB + 4 site LBs + monitor
# Rollout budget inputs (issue 8 / bench/upgrade.py): a 60 s drain, health = rise 2 x inter 2s.
DRAIN_S, HEALTH_S = 60.0, 4.0
CALLS_PER_STEP = 3  # drain (site LB), the member job, ready (site LB)
INITIAL, ROLLOUT = "1.0.0", "2.0.0"  # the app release every member starts at, the one rolled out


# --------------------------------------------------------------------------- daemons


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def cpu_s(pids):
    """CPU seconds (user + system, with reaped children) of ``pids`` so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])
    return total / ticks


# --------------------------------------------------------------------------- measuring


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    value = fn(*args, **kwargs)
    return time.perf_counter() - started, value


def expect_all(ret, ids, what, check=lambda v: v is not None and v is not False):
    bad = sorted(m for m in ids if m not in ret or not check(ret[m]))
    if bad:
        sample = {m: ret.get(m) for m in bad[:3]}
        raise RuntimeError(f"{what}: {len(bad)} minions failed: {bad[:5]} {str(sample)[:600]}")


def states_ok(ret):
    return (
        isinstance(ret, dict)
        and ret
        and all(isinstance(s, dict) and s.get("result") is True for s in ret.values())
    )


def states_changed(ret):
    return sum(1 for s in ret.values() if s.get("changes"))


def pillar_render(master_opts, grains_by_minion, sample=None):
    """Median and max seconds of ``compile_pillar`` per minion with the master's opts."""
    import salt.pillar

    times = []
    ids = sorted(grains_by_minion)
    if sample and len(ids) > sample:
        step = len(ids) / sample
        ids = [ids[int(i * step)] for i in range(sample)]
    size = 0
    for minion_id in ids:
        grains = {**grains_by_minion[minion_id], "id": minion_id}
        started = time.perf_counter()
        pillar = salt.pillar.get_pillar(master_opts, grains, minion_id, saltenv="base")
        data = pillar.compile_pillar()
        times.append(time.perf_counter() - started)
        if data.get("_errors"):
            raise RuntimeError(f"pillar of {minion_id}: {data['_errors']}")
        size = max(size, len(json.dumps(data, default=str)))  # file_tree values may be bytes
    return statistics.median(times), max(times), size


def haproxy_check(topology, workdir):
    """Render the primary and every site config, ``haproxy -c`` each: (render s, check s)."""
    import webfarm_haproxy as wh

    valid = wh.validate_topology(topology)
    started = time.perf_counter()
    configs = {
        "primary": wh.render(
            valid,
            wh.tier_settings(None, "primary", defaults.load("haproxy")),
            binds=[("10.0.0.10", 80)],
        )
    }
    for site, data in valid["sites"].items():
        lb = data["lbs"][0]
        configs[site] = wh.render(
            valid,
            wh.tier_settings(None, "site", defaults.load("haproxy")),
            site=site,
            binds=[(lb["address"], lb["port"])],
        )
    render_s = time.perf_counter() - started
    started = time.perf_counter()
    for name, text in configs.items():
        path = workdir / f"haproxy-{name}.cfg"
        path.write_text(text)
        proc = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"haproxy -c {name}: {proc.stdout}{proc.stderr}")
    return render_s, time.perf_counter() - started


def nagios_pillar(workdir):
    pillar = yaml.safe_load((REPO / "pillar" / "nagios.sls").read_text())
    var = workdir / "nagios-var"
    (var / "rw").mkdir(parents=True, exist_ok=True)
    (var / "checkresults").mkdir(parents=True, exist_ok=True)
    for path in (var, var / "rw", var / "checkresults"):
        try:
            shutil.chown(path, "nagios", "nagios")  # nagios4 -v checks it can write there
        except (LookupError, PermissionError):
            pass
    pillar["nagios"]["server"].update(
        {
            "config_dir": str(workdir / "nagios"),
            "staging_dir": str(workdir / "nagios-staging"),
            **server_paths(var),
        }
    )
    return pillar


def nagios_check(mine, topology, workdir):
    """Render the Nagios config from ``mine``; ``nagios4 -v`` it: (render s, verify s | None)."""
    # nagios4 -v reads the object files as the nagios user: a world-readable dir of its own.
    workdir = Path(tempfile.mkdtemp(prefix="nagios-", dir=workdir))
    workdir.chmod(0o755)
    for parent in (workdir.parent, workdir.parent.parent):
        parent.chmod(0o711)
    render_s, out = timed(cluster.render_nagios, mine, nagios_pillar(workdir), topology)
    conf = workdir / "nagios-staging"
    conf.mkdir(parents=True, exist_ok=True)
    for name, text in out["files"].items():
        (conf / name).write_text(text)
    if not Path("/usr/sbin/nagios4").exists():
        return render_s, None
    started = time.perf_counter()
    proc = subprocess.run(
        ["/usr/sbin/nagios4", "-v", str(conf / "nagios.cfg")], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"nagios4 -v: {proc.stdout[-2000:]}")
    return render_s, time.perf_counter() - started


def run_size(n, base):
    """Start the cluster of ``n`` minions, measure, stop it; the figures."""
    import salt.client
    import salt.config

    sites, farms, counts = cluster.sized(n - 1)  # one of the n is the preprod host
    topology = cluster.cluster(sites, farms, counts)
    topology["preprod"] = [{"id": "preprod", "address": "10.0.0.40"}]
    root = Path(tempfile.mkdtemp(prefix=f"n{n}-", dir=base))
    figures = {"shape": f"{sites}x{farms} farms, {min(counts)}-{max(counts)} members"}
    dist = root / "dist"
    for version in (INITIAL, ROLLOUT):
        build_release(dist, version)
    farm_lab = FarmLab(topology, root / "farms", dist, initial=INITIAL)
    logs = root / "logs"
    logs.mkdir()
    try:
        started = time.perf_counter()
        topology = farm_lab.start().topology
        figures["farms_start_s"] = time.perf_counter() - started
        grains = cluster.minions(topology)
        ids = sorted(grains)
        assert len(ids) == n
        print(
            f"\n=== N={n}: {figures['shape']} + preprod ({len(ids)} minions), dir {root};"
            f" {len(farm_lab.apps)} PHP apps, {len(farm_lab.caches)} memcached,"
            f" {len(farm_lab.instances)} HAProxy up in {figures['farms_start_s']:.1f} s",
            flush=True,
        )
        ports = (free_port(), free_port())
        pillar = write_pillar(root, topology)
        tree = PillarOverrides(root / "pillar-tree")
        for minion_id, data in farm_lab.pillars().items():
            tree.set(minion_id, data)
        mconf = master_conf(root, pillar, ports, ext_pillar=tree.ext_pillar())
        spawn("salt-master", mconf, open(logs / "master.log", "w"))  # noqa: SIM115
        time.sleep(4)
        master_opts = salt.config.master_config(str(mconf))
        client = salt.client.LocalClient(mopts=salt.config.client_config(str(mconf)))
        minion_procs = {}
        started = time.perf_counter()
        for first in range(0, n, GROUP):
            group = ids[first : first + GROUP]
            for mid in group:
                conf = minion_conf(root, mid, grains[mid], ports)
                minion_procs[mid] = spawn("salt-minion", conf, open(logs / f"{mid}.log", "w"))  # noqa: SIM115
            wait_ping(client, group, timeout=180)
        figures["start_s"] = time.perf_counter() - started
        print(f"  {n} minions up in {figures['start_s']:.1f} s", flush=True)

        master = STARTED[0]

        def master_cpu():
            return cpu_s(session_pids(master))

        cpu0 = master_cpu()
        t, ret = timed(client.cmd, "*", "saltutil.sync_all", timeout=600)
        figures["sync_all_master_cpu_s"] = (master_cpu() - cpu0) / n
        expect_all(ret, ids, "saltutil.sync_all")
        figures["sync_all_s"] = t
        # A highstate here must be the bench's top: the by-role one would configure this host.
        tops = client.cmd("*", "state.show_top", timeout=120)
        expect_all(tops, ids, "state.show_top is the bench's", lambda v: v == BENCH_TOP)
        t, ret = timed(client.cmd, "*", "state.apply", timeout=900)
        expect_all(ret, ids, "state.apply (converge)", states_ok)
        figures["highstate_first_s"] = t
        cpu0 = master_cpu()
        minion_cpu0 = sum(cpu_s(session_pids(p)) for p in minion_procs.values())
        t, ret = timed(client.cmd, "*", "state.apply", timeout=900)
        figures["highstate_master_cpu_s"] = (master_cpu() - cpu0) / n
        minion_cpu = sum(cpu_s(session_pids(p)) for p in minion_procs.values()) - minion_cpu0
        figures["highstate_minion_cpu_s"] = minion_cpu / n
        expect_all(ret, ids, "state.apply (no-op)", states_ok)
        changed = sum(states_changed(r) for r in ret.values())
        if changed:
            which = {
                k: v.get("changes") for r in ret.values() for k, v in r.items() if v.get("changes")
            }
            raise RuntimeError(f"the no-op highstate changed {changed} states: {str(which)[:1500]}")
        figures["highstate_noop_s"] = t
        # The repo's by-role top, test=True (rendered, compiled, checked, nothing changed) on
        # one minion of each role: its cost per minion, without N more highstates here.
        sample = sorted({grains[m]["webfarm"]["role"]: m for m in reversed(ids)}.values())
        cpu0 = master_cpu()
        minion_cpu0 = sum(cpu_s(session_pids(minion_procs[m])) for m in sample)
        t, ret = timed(
            client.cmd, sample, "state.top", [BYROLE_TOP], kwarg={"test": True},
            tgt_type="list", timeout=900,
        )  # fmt: skip
        figures["byrole_master_cpu_s"] = (master_cpu() - cpu0) / len(sample)
        minion_cpu = sum(cpu_s(session_pids(minion_procs[m])) for m in sample) - minion_cpu0
        figures["byrole_minion_cpu_s"] = minion_cpu / len(sample)
        expect_all(ret, sample, f"state.top {BYROLE_TOP} test=True", lambda v: isinstance(v, dict))
        figures["byrole_test_s"] = t
        figures["byrole_states"] = statistics.median(len(r) for r in ret.values())

        med, worst, size = pillar_render(master_opts, grains)
        figures["pillar_render_s"], figures["pillar_render_max_s"] = med, worst
        figures["pillar_bytes"] = size
        cpu0 = master_cpu()
        t, ret = timed(client.cmd, "*", "pillar.items", timeout=600)
        figures["pillar_items_master_cpu_s"] = (master_cpu() - cpu0) / n
        expect_all(ret, ids, "pillar.items", lambda v: isinstance(v, dict) and "webfarm" in v)
        figures["pillar_items_s"] = t

        t, ret = timed(client.cmd, "*", "mine.update", timeout=600)
        expect_all(ret, ids, "mine.update")
        figures["mine_update_s"] = t
        time.sleep(2)
        t, ret = timed(client.cmd, "monitor", "mine.get", ["*", "webfarm_nagios_host"], timeout=120)
        mine = ret.get("monitor") or {}
        if len(mine) != n:
            raise RuntimeError(f"mine.get webfarm_nagios_host: {len(mine)} of {n} minions")
        figures["mine_get_s"] = t
        t, ret = timed(client.cmd, "lb-s1", "mine.get", ["*", "webfarm_grains"], timeout=120)
        if len(ret.get("lb-s1") or {}) != n:
            raise RuntimeError(f"mine.get webfarm_grains: {len(ret.get('lb-s1') or {})} of {n}")
        figures["mine_get_haproxy_s"] = t

        figures["haproxy_render_s"], figures["haproxy_check_s"] = haproxy_check(topology, root)
        lbs = [m for m in ids if grains[m]["webfarm"]["role"] in ("lb-primary", "lb-site")]
        t, ret = timed(
            client.cmd, "G@webfarm:role:lb-site", "haproxy_tier.validate", ["site"],
            tgt_type="compound", timeout=120,
        )  # fmt: skip
        ret.update(client.cmd("lb-primary", "haproxy_tier.validate", ["primary"], timeout=120))
        expect_all(
            ret, lbs, "haproxy_tier.validate", lambda v: isinstance(v, dict) and v.get("valid")
        )
        figures["haproxy_validate_salt_s"] = t
        figures["nagios_render_s"], figures["nagios_verify_s"] = nagios_check(mine, topology, root)

        farm = "G@webfarm:site:s1 and G@webfarm:farm:f1"
        members = [m for m in ids if m.startswith("web-s1-f1-")]
        pings, versions = [], []
        app_root = root / "app"
        for _ in range(REPEAT):
            t, ret = timed(client.cmd, farm, "test.ping", tgt_type="compound", timeout=60)
            expect_all(ret, members, "test.ping (farm)", lambda v: v is True)
            pings.append(t)
            t, ret = timed(
                client.cmd, farm, "upgrade.version", kwarg={"root": str(app_root)},
                tgt_type="compound", timeout=60,
            )  # fmt: skip
            expect_all(ret, members, "upgrade.version", lambda v: v is None)
            versions.append(t)
        member = members[0]
        singles = []
        for _ in range(REPEAT):
            t, ret = timed(
                client.cmd, member, "upgrade.version", kwarg={"root": str(app_root)}, timeout=60
            )
            expect_all(ret, [member], "upgrade.version (one member)", lambda v: v is None)
            singles.append(t)
        figures["member_call_s"] = statistics.median(singles)
        figures["farm_ping_s"] = statistics.median(pings)
        figures["farm_call_s"] = statistics.median(versions)
        t, ret = timed(client.cmd, "*", "test.ping", timeout=120)
        expect_all(ret, ids, "test.ping (all)", lambda v: v is True)
        figures["ping_all_s"] = t

        per = sorted(rss_kib(session_pids(p)) for p in minion_procs.values())
        figures["rss_median_mib"] = statistics.median(per) / 1024
        figures["rss_total_mib"] = sum(per) / 1024
        figures["master_rss_mib"] = rss_kib(session_pids(STARTED[0])) / 1024
        figures.update(app_rollout(farm_lab, mconf))
        figures["load1"] = os.getloadavg()[0]
    finally:
        farm_lab.stop()
        left = stop_everything(root)
        if left:
            print(f"  WARNING: pids that would not stop: {left}", flush=True)
        shutil.rmtree(root, ignore_errors=True)
        for key, value in figures.items():
            print(f"  {key}: {value:.3f}" if isinstance(value, float) else f"  {key}: {value}")
    return figures


def app_rollout(farm_lab, mconf):
    """Release ROLLOUT tested on preprod, then rolled over every farm under live traffic
    through both HAProxy tiers (``state.orchestrate upgrade``); the figures."""
    code, data = salt_run(mconf, "saltutil.sync_all")
    if code != 0:
        raise RuntimeError(f"salt-run saltutil.sync_all: {str(data)[:600]}")
    pillar = json.dumps({"upgrade": {"kind": "app", "version": ROLLOUT}})
    t, (code, data) = timed(
        salt_run, mconf, "state.orchestrate", "upgrade.preprod", f"pillar={pillar}"
    )
    if code != 0:
        raise RuntimeError(f"upgrade.preprod {ROLLOUT}: {str(data)[:1200]}")
    figures = {"preprod_s": t}
    with farm_lab.traffic() as traffic:
        time.sleep(2)  # sessions exist before the first drain
        t, (code, data) = timed(salt_run, mconf, "state.orchestrate", "upgrade", f"pillar={pillar}")
        time.sleep(1)
    report = orchestrate_report(data)
    if code != 0 or not report or not report.get("result"):
        raise RuntimeError(f"upgrade {ROLLOUT}: {str(report or data)[:1500]}")
    summary = rollout_summary(report, t)
    apps = farm_lab.apps.values()  # every member and the preprod host
    behind = [app.member for app in apps if (app.root / "current").readlink().name != ROLLOUT]
    figures.update(
        {
            "rollout_s": t,
            "rollout_waves": summary["waves"],
            "rollout_farms": summary["steps"],
            "rollout_inherent_s": summary["drain"] + summary["health"],
            "rollout_fixed_s": summary["fixed_s"],
            "rollout_overhead_wave_s": summary["overhead_per_wave"],
            "rollout_round_trips": max(summary["round_trips"]),
            "drain_call_s": median_latency(summary["latency"], "haproxy_tier.drain"),
            "step_call_s": median_latency(summary["latency"], "upgrade.upgrade_step"),
            "ready_call_s": median_latency(summary["latency"], "haproxy_tier.ready"),
            "requests": traffic.requests(),
            "failed_requests": len(traffic.failures),
            "regressions": len(traffic.regressions()),
            "members_not_upgraded": len(behind),
        }
    )
    print(
        f"  app rollout {INITIAL} -> {ROLLOUT}: {summary['steps']} farms in {summary['waves']}"
        f" waves, {t:.1f} s; {traffic.requests()} requests, {len(traffic.failures)} failed,"
        f" {figures['regressions']} version regressions, {len(behind)} members not upgraded",
        flush=True,
    )
    return figures


def pillar_render_512(base, fmt="yaml", n=N_512, by_role=False):
    """Per-minion pillar render of the ``n``-minion topology, on the master's code path:
    the bench's own pillar top, or (``by_role``) the repo's pillar/top.sls by role, whose
    capability files also read the topology (pillar/webfarm/members.jinja, for secrets)."""
    import salt.config

    topology = cluster.cluster(*cluster.sized(n))
    grains = cluster.minions(topology)
    root = Path(tempfile.mkdtemp(prefix=f"p{n}-", dir=base))
    try:
        pillar = write_pillar(root, topology, fmt)
        if by_role:
            (pillar / "top.sls").unlink()  # the repo's top (second in pillar_roots) then applies
        conf = master_conf(root, pillar, (free_port(), free_port()))
        opts = salt.config.master_config(str(conf))
        return pillar_render(opts, grains, sample=24)
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- fitting


def fit(ns, values):
    """``(exponent, class, projection to N_512)`` of a power law through (n, value)."""
    pts = [(n, v) for n, v in zip(ns, values, strict=True) if v and v > 0]
    if len(pts) < 2:
        return None, "n/a", None
    xs = [math.log(n) for n, _ in pts]
    ys = [math.log(v) for _, v in pts]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    a = my - b * mx
    kind = "constant" if b < 0.35 else "linear" if b < 1.25 else "WORSE than linear"
    return b, kind, math.exp(a + b * math.log(N_512))


ROWS = [
    ("rss_median_mib", "minion RSS median (MiB)", None),
    ("rss_total_mib", "minion RSS total (MiB)", None),
    ("master_rss_mib", "master RSS (MiB)", None),
    ("start_s", "start + accept all minions (s)", None),
    ("sync_all_s", "saltutil.sync_all, all (s)", None),
    ("sync_all_master_cpu_s", "  master CPU per minion, sync_all (s)", None),
    ("highstate_first_s", "highstate converge, all (s)", None),
    ("highstate_noop_s", "highstate no-op, all, this machine (s)", None),
    ("highstate_master_cpu_s", "  master CPU per minion, no-op highstate (s)", None),
    ("highstate_minion_cpu_s", "  minion CPU per minion, no-op highstate (s)", None),
    ("byrole_test_s", "by-role highstate test=True, one minion per role (s)", None),
    ("byrole_states", "  states per minion, by-role top (median)", None),
    ("byrole_master_cpu_s", "  master CPU per minion, by-role test=True (s)", None),
    ("byrole_minion_cpu_s", "  minion CPU per minion, by-role test=True (s)", None),
    ("pillar_render_s", "pillar render per minion, master (s)", ("<= 0.5 s", 0.5)),
    ("pillar_bytes", "pillar size per minion (bytes)", None),
    ("pillar_items_s", "pillar.items, all (s)", None),
    ("pillar_items_master_cpu_s", "  master CPU per minion, pillar.items (s)", None),
    ("mine_update_s", "mine.update, all (s)", None),
    ("mine_get_s", "mine.get nagios host data (s)", None),
    ("mine_get_haproxy_s", "mine.get haproxy grains (s)", None),
    ("haproxy_render_s", "HAProxy render primary+sites (s)", None),
    ("haproxy_check_s", "haproxy -c primary+sites (s)", None),
    ("haproxy_validate_salt_s", "haproxy_tier.validate on site LBs (s)", None),
    ("nagios_render_s", "Nagios config render (s)", None),
    ("nagios_verify_s", "nagios4 -v (s)", None),
    ("farm_ping_s", "test.ping to one farm (s)", None),
    ("farm_call_s", "upgrade.version to one farm (s)", None),
    ("member_call_s", "upgrade.version to one member (s)", None),
    ("ping_all_s", "test.ping to all (s)", None),
    ("farms_start_s", "start the farms' apps, memcached, HAProxy (s)", None),
    ("preprod_s", "upgrade.preprod orchestration (s)", None),
    ("rollout_s", "app rollout of all farms, live traffic (s)", None),
    ("rollout_waves", "  waves", None),
    ("rollout_inherent_s", "  inherent waits (drain + health) (s)", None),
    ("rollout_fixed_s", "  outside the waves: salt-run, plan (grains, versions) (s)", None),
    ("rollout_overhead_wave_s", "  overhead per wave beyond its waits (s)", None),
    ("rollout_round_trips", "  Salt round trips per farm step (max)", ("<= 3", 3)),
    ("drain_call_s", "  haproxy_tier.drain call (median s)", None),
    ("step_call_s", "  upgrade.upgrade_step call (median s)", None),
    ("ready_call_s", "  haproxy_tier.ready call (median s)", None),
    ("requests", "  requests during the rollout", None),
    ("failed_requests", "  failed requests", ("0", 0)),
    ("regressions", "  sessions with a version regression", ("0", 0)),
    ("members_not_upgraded", "  members not on the new release", ("0", 0)),
]


MEASURED_BUDGETS = {"rollout_round_trips", "failed_requests", "regressions", "members_not_upgraded"}


def report(ns, results, direct_512):
    print("\n## Scale: figures per N, fit, projection to 512 members (518 minions)\n")
    header = (
        "| figure | " + " | ".join(f"N={n}" for n in ns) + " | growth (exponent) | 512 | budget |"
    )
    print(header)
    print("|" + "---|" * (len(ns) + 4))
    projected = {}
    for key, label, budget in ROWS:
        values = [r.get(key) for r in results]
        b, kind, proj = fit(ns, values)
        projected[key] = proj
        cells = " | ".join("-" if v is None else f"{v:.3g}" for v in values)
        growth = f"{kind} ({b:.2f})" if b is not None else kind
        proj_s = "-" if proj is None else f"{proj:.3g}"
        verdict = ""
        if key == "pillar_render_s" and direct_512:
            proj_s += f" (measured: {direct_512[0]:.3g})"
            proj = direct_512[0]
        if budget and key in MEASURED_BUDGETS:  # counts: every run must meet it
            worst = max((v for v in values if v is not None), default=None)
            if worst is not None:
                verdict = f"{budget[0]}: {'OK' if worst <= budget[1] else 'FAILED'}"
        elif budget and proj is not None:
            verdict = f"{budget[0]}: {'OK' if proj <= budget[1] else 'OVER'}"
        print(f"| {label} | {cells} | {growth} | {proj_s} | {verdict} |")
    loads = " | ".join(f"{r.get('load1', 0):.2f}" for r in results)
    print(f"| load average (1 min) at the end | {loads} | | | |")
    master_cpu = projected.get("highstate_master_cpu_s")
    minion_cpu = projected.get("highstate_minion_cpu_s")
    if master_cpu is not None and minion_cpu is not None:
        cores = os.cpu_count() or 1
        whole = master_cpu * N_512 / cores + minion_cpu
        print(
            f"\nNo-op highstate of the whole 512-member cluster (every minion on its own host, a"
            f" master with {cores} cores like this one): {master_cpu:.3f} s master CPU per minion"
            f" x {N_512} / {cores} cores + {minion_cpu:.2f} s on each minion = {whole:.0f} s;"
            f" budget 300 s: {'OK' if whole <= 300 else 'OVER'}. (All {N_512} minions on this"
            f" machine instead: {projected.get('highstate_noop_s') or 0:.0f} s, the wall-time fit.)"
        )
    inherent = 8 * (DRAIN_S + HEALTH_S)
    for key, what in (
        ("member_call_s", "one member's round trip (members on their own hosts)"),
        ("farm_call_s", "one farm's round trip on this machine (its members share 2 cores)"),
    ):
        step = projected.get(key)
        if step is None:
            continue
        overhead = 8 * CALLS_PER_STEP * step
        print(
            f"\nFull 32-farm app rollout at 512 (8 waves, sites concurrently) from {what}:"
            f" 8 x ({DRAIN_S:.0f} s drain + {HEALTH_S:.0f} s health) = {inherent:.0f} s inherent"
            f" + 8 waves x {CALLS_PER_STEP} Salt round trips x {step:.2f} s (projected to 512)"
            f" = {inherent + overhead:.0f} s; budget {inherent * 1.1:.0f} s:"
            f" {'OK' if overhead <= inherent * 0.1 else 'OVER'}"
        )
    wave, fixed = projected.get("rollout_overhead_wave_s"), projected.get("rollout_fixed_s")
    if wave is not None and fixed is not None:
        total = fixed + inherent + 8 * wave
        print(
            f"\nFull 32-farm app rollout at 512 from the measured rollouts (fitted and projected"
            f" to 512: {fixed:.1f} s outside the waves, {wave:.2f} s overhead per wave):"
            f" {fixed:.1f} s + {inherent:.0f} s inherent + 8 x {wave:.2f} s = {total:.0f} s;"
            f" budget {inherent * 1.1:.0f} s: {'OK' if total <= inherent * 1.1 else 'OVER'}"
        )
    if direct_512:
        print(
            f"Pillar render of the 512-member topology, master code path: median {direct_512[0]:.3f} s,"
            f" max {direct_512[1]:.3f} s per minion ({direct_512[2]} bytes); x {N_512} minions ="
            f" {direct_512[0] * N_512:.0f} s of master CPU per full pillar refresh"
        )


def main(argv):
    ns = [int(a) for a in argv] or list(DEFAULT_NS)
    if any(n < 8 for n in ns):
        raise SystemExit("N must be >= 8 (2 sites of 2 farms + LBs + monitor)")
    base = Path(tempfile.mkdtemp(prefix="wfs", dir="/tmp"))

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    results = []
    try:
        direct_512 = pillar_render_512(base)
        print(
            f"pillar render, 512-member topology: median {direct_512[0]:.3f} s per minion",
            flush=True,
        )
        # Without daemons, smallest size and 512: YAML (as pillar/webfarm/topology.sls) vs #!json.
        for fmt in ("yaml", "json"):
            cells = [
                f"N={size}: {pillar_render_512(base, fmt, size)[0]:.3f} s"
                for size in (min(ns), N_512)
            ]
            print(f"pillar render per minion, {fmt} topology: {', '.join(cells)}", flush=True)
        cells = [
            f"N={size}: {pillar_render_512(base, 'yaml', size, by_role=True)[0]:.3f} s"
            for size in (*ns, N_512)
        ]
        print(f"pillar render per minion, the repo's by-role top: {', '.join(cells)}", flush=True)
        for n in ns:
            results.append(run_size(n, base))
    finally:
        left = stop_everything(base)
        shutil.rmtree(base, ignore_errors=True)
        if left:
            print(f"WARNING: pids that would not stop: {left}")
    report(ns, results, direct_512)


if __name__ == "__main__":
    main(sys.argv[1:])
