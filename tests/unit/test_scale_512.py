"""The seed's size on paper: 4 sites x 8 farms x 16 members (512) + LBs + a monitor.

Plans (upgrade waves, app and os) and renders (HAProxy primary and site configs, the Nagios
server config) with the pure functions and the repo's templates, and checks what must hold
at that size. The Nagios config lives in Jinja (salt/states/nagios/server.sls and files/):
it is rendered by Salt's own Jinja renderer (demo.cluster.render_nagios) from the mine data
512 members publish; the states around it (staging, ``nagios4 -v``, reload) are not covered
here (bench/scale.py runs ``nagios4 -v`` on a rendered config). Prints the time taken;
speed is measured in bench/scale.py, not asserted.
"""

import re
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

import webfarm_haproxy as wh
import webfarm_upgrade as wu
from demo import cluster
from lab import defaults

REPO = Path(__file__).resolve().parents[2]

SITES, FARMS, MEMBERS = 4, 8, 16


@pytest.fixture(scope="module")
def big():
    topo = cluster.cluster(SITES, FARMS, MEMBERS)
    return topo, cluster.minions(topo)


def servers_of(config, backend):
    """``{server_name: address:port}`` of ``backend`` in an HAProxy config text."""
    block = re.search(rf"^backend {re.escape(backend)}\n(.*?)(?:\n\n|\Z)", config, re.M | re.S)
    assert block, f"no backend {backend}"
    names = re.findall(r"^\s+server (\S+) (\S+)", block.group(1), re.M)
    counts = Counter(name for name, _ in names)
    assert all(c == 1 for c in counts.values()), f"{backend}: servers twice: {counts}"
    return dict(names)


def test_sized_fills_n_and_the_seed_size():
    for n in (10, 30, 100, 518):
        sites, farms, counts = cluster.sized(n)
        assert len(cluster.minions(cluster.cluster(sites, farms, counts))) == n
        assert max(counts) - min(counts) <= 1
    assert cluster.sized(518) == (SITES, FARMS, [MEMBERS] * 32)
    with pytest.raises(ValueError, match="too few"):
        cluster.sized(5)


def test_512_members_plan_and_render(big):
    topo, grains = big
    started = time.perf_counter()
    web = {m for m, g in grains.items() if g["webfarm"]["role"] == "web"}
    assert len(web) == 512 and len(grains) == 512 + 1 + SITES + 1

    # --- upgrade waves: the grains of the members the topology names, planned as the topology says
    farm_map, app = wu.plan_rollout(grains, wu.options("app", "3.0.0"), topo)
    assert farm_map == wu.farms_from_topology(topo)
    assert len(app) == FARMS and all(len(w) == SITES for w in app)
    assert wu.check_plan(app, "app") == []
    for wave in app:
        assert len({s["site"] for s in wave}) == len(wave), "two farms of one site in a wave"
        assert all(s["drain"] == [f"{s['farm']}_m{i}" for i in range(1, 17)] for s in wave)
    app_members = [m["id"] for w in app for s in w for m in s["members"]]
    assert len(app_members) == 512 and set(app_members) == web
    _, os_waves = wu.plan_rollout(grains, wu.options("os"), topo)
    assert len(os_waves) == MEMBERS and wu.check_plan(os_waves, "os") == []
    for wave in os_waves:
        farms = [(s["site"], s["farm"]) for s in wave]
        assert len(farms) == len(set(farms)) == SITES * FARMS  # one member of every farm
    assert sorted(m["id"] for w in os_waves for s in w for m in s["members"]) == sorted(web)
    planned = time.perf_counter()

    # --- HAProxy: the primary tier and every site tier
    valid = wh.validate_topology(topo)
    primary = wh.render(
        valid,
        wh.tier_settings(None, "primary", defaults.load("haproxy")),
        binds=[("10.0.0.10", 80)],
    )
    pick_sites = servers_of(primary, "pick_site")
    assert set(pick_sites) == {f"s{s}_lb1" for s in range(1, SITES + 1)}
    for s in range(1, SITES + 1):
        assert servers_of(primary, f"site_s{s}") == {f"s{s}_lb1": f"10.{s}.0.10:80"}
    seen = Counter()
    for s in range(1, SITES + 1):
        site = f"s{s}"
        config = wh.render(
            valid,
            wh.tier_settings(None, "site", defaults.load("haproxy")),
            site=site,
            binds=[(f"10.{s}.0.10", 80)],
        )
        pick = servers_of(config, "pick_farm")
        assert len(pick) == FARMS * MEMBERS
        for farm, data in topo["sites"][site]["farms"].items():
            assert f"use_backend farm_{farm} if {{ req.cook(FARMID) -m str {farm} }}" in config
            backend = servers_of(config, f"farm_{farm}")
            want = {f"{farm}_m{i}": f"{m['address']}:80" for i, m in data["members"].items()}
            assert backend == want  # every member exactly once, nothing else
            assert {k: pick[k] for k in want} == want
            seen.update(m["address"] for m in data["members"].values())
        # no member of another site leaks into this site's config
        assert not re.search(rf"\b10\.(?!{s}\.)\d+\.\d+\.\d+:80 check", config)
    assert len(seen) == 512 and set(seen.values()) == {1}
    rendered_haproxy = time.perf_counter()

    # --- Nagios: the server SLS and its templates, from the mine 518 minions publish
    pillar = yaml.safe_load((REPO / "pillar" / "nagios.sls").read_text())
    nagios = cluster.render_nagios(cluster.nagios_mine(grains), pillar, topo)
    cfg = nagios["files"]["webfarm.cfg"]
    host_blocks = re.findall(r"define host \{\n\s+use\s+webfarm-host\n(.*?)\n\}", cfg, re.S)
    names = Counter(re.search(r"host_name\s+(\S+)", b).group(1) for b in host_blocks)
    assert set(names) == set(grains) and set(names.values()) == {1}
    for block in host_blocks:
        name = re.search(r"host_name\s+(\S+)", block).group(1)
        assert re.search(
            rf"address\s+{re.escape(grains[name]['webfarm']['address'])}$", block, re.M
        )
    services = Counter(re.findall(r"host_name\s+(\S+)\n\s+service_description\s+(.+)", cfg))
    assert set(services.values()) == {1}
    per_host = Counter(host for host, _ in services)
    assert all(per_host[m] == 4 for m in web)  # load, disk root, users + apache for web
    assert per_host["lb-primary"] == 3
    hosts_list = nagios["sls"]["nagios-server-hosts-list"]["file.managed"]
    listed = next(a["contents"] for a in hosts_list if "contents" in a).split()
    assert sorted(listed) == sorted(grains)
    done = time.perf_counter()
    print(
        f"\n512 members: plan {planned - started:.3f} s, HAProxy render (primary + {SITES} sites)"
        f" {rendered_haproxy - planned:.3f} s, Nagios render {done - rendered_haproxy:.3f} s,"
        f" total {done - started:.3f} s"
    )


def test_a_json_topology_means_the_same(big):
    """README (Performance) suggests a ``#!json`` topology pillar for large clusters: JSON
    has string member keys ("1"); every consumer must read it as the YAML one."""
    import json

    import webfarm_trust as wt

    topo, _ = big
    as_json = json.loads(json.dumps(topo))
    assert set(as_json["sites"]["s1"]["farms"]["f1"]["members"]) == {str(i) for i in range(1, 17)}
    assert wh.validate_topology(as_json) == wh.validate_topology(topo)
    assert wu.farms_from_topology(as_json) == wu.farms_from_topology(topo)
    assert wt.topology_roles(as_json) == wt.topology_roles(topo)
