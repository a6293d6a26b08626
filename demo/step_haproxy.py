"""Step 1: the HAProxy tiers up through ``salt://haproxy``, and sticky client sessions.

Every web member runs :mod:`lab.httpapp` in its namespace on its topology address; the
site LBs and the primary LBs get configs rendered and HAProxy started by the haproxy SLS on
their minions, then ``haproxy.vrrp`` starts keepalived on the LBs of each tier with a VIP
(the primary tier, site s1), so each VIP is held by one of its LBs. A client in the
master's namespace then keeps a few cookie sessions through the primary LB: each must stay
on one site (SITEID) and one farm (FARMID).
"""

import json
import subprocess
import sys
import time

from demo import netlab, salt_lab, topology
from lab.netns import namespaced_lb_sysctl

TITLE = "step 1: HAProxy tiers (salt://haproxy by orch.cluster), sticky sessions through lb-primary"
SESSIONS, REQUESTS = 4, 6
TIERS = {"lb-primary": "primary", "lb-site": "site"}  # webfarm:role -> haproxy tier


def _host_files(minion_id, service, names):
    """``{key: path}`` of ``service``'s files under the demo host's own dir."""
    run = salt_lab.host_root(minion_id) / service
    return {key: str(run / name) for key, name in names.items()}


def _paths(minion_id):
    names = {"config": "haproxy.cfg", "pidfile": "haproxy.pid", "socket": "admin.sock"}
    return _host_files(minion_id, "haproxy", {**names, "state_file": "servers.state"})


def _vrrp_paths(minion_id):
    names = {"config": "keepalived.conf", "pidfile": "keepalived.pid", "vrrp_pidfile": "vrrp.pid"}
    # the demo host has keepalived and curl (apt-packages)
    return {**_host_files(minion_id, "keepalived", names), "install_package": False}


def vrrp_lbs():
    """Minion ids of the LBs in a tier with a VIP (``haproxy.vrrp`` runs on them)."""
    topo = topology.load()
    out = [lb["id"] for lb in topo["primary_lb"]] if topo.get("primary_vip") else []
    for site in topo["sites"].values():
        if site.get("vip"):
            out += [lb["id"] for lb in site["lbs"]]
    return out


def pillar():
    # haproxy.sysctl tunes the LB's own namespace (the keys the kernel keeps per namespace);
    # vip_fall 12 x 500 ms: a site VIP that moves (a VRRP failover, ~2 s) is not taken DOWN.
    check = {"inter": "500ms", "rise": 1, "vip_fall": 12}
    common = {"user": "", "group": "", "log": None, "check": check}
    vrrp = set(vrrp_lbs())
    out = {}
    for host in topology.hosts():
        tier = TIERS.get(host.grains["webfarm"]["role"])
        if tier:
            sysctl = {
                "sysctl": namespaced_lb_sysctl(),
                "sysctl_persist": str(
                    salt_lab.host_root(host.id) / "etc" / "sysctl.d" / "60-webfarm-haproxy.conf"
                ),
            }
            out[host.id] = {"haproxy": {**common, **sysctl, tier: _paths(host.id)}}
            if host.id in vrrp:
                out[host.id]["haproxy"]["vrrp"] = _vrrp_paths(host.id)
    return out


def vip_holders():
    """``{vip address: [minion ids holding it]}`` from ``haproxy_tier.vrrp_status``."""
    holders = {}
    for minion_id in vrrp_lbs():
        status = salt_lab.call(minion_id, "haproxy_tier.vrrp_status")
        for vip in status["vips"].values():
            holders.setdefault(vip["address"], [])
            if vip["held"]:
                holders[vip["address"]].append(minion_id)
    return holders


def wait_for_vrrp_masters(timeout=30):
    """Until every VIP is held by exactly one LB; ``{vip: minion id}``."""
    deadline = time.monotonic() + timeout
    holders = {}
    while time.monotonic() < deadline:
        holders = vip_holders()
        if holders and all(len(ids) == 1 for ids in holders.values()):
            return {vip: ids[0] for vip, ids in holders.items()}
        time.sleep(0.5)
    raise RuntimeError(f"VRRP: not one master per VIP within {timeout}s: {holders}")


def access_log(minion_id):
    return salt_lab.host_root(minion_id) / "var" / "log" / "apache2" / "access.log"


def start_backends(hosts):
    for host in hosts:
        where = host.grains["webfarm"]
        if where["role"] != "web":
            continue
        pidfile = salt_lab.host_root(host.id) / "run" / "httpapp.pid"
        pidfile.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable, "-m", "lab.httpapp", "serve", "--address", host.address,
            "--site", where["site"], "--farm", where["farm"], "--member", str(where["member"]),
            "--pidfile", str(pidfile), "--access-log", str(access_log(host.id)),
            "--app-root", str(salt_lab.app_root(host.id)),
        ]  # fmt: skip
        subprocess.run(
            netlab.exec_argv(netlab.PREFIX + host.id, argv),
            check=True, capture_output=True, cwd=topology.REPO, timeout=30,
        )  # fmt: skip


def client_sessions(sessions=SESSIONS, requests=REQUESTS, path="/", netns=salt_lab.MASTER_NS):
    """Cookie-keeping sessions against the primary LB from ``netns``; per-session dicts."""
    lb = topology.load()["primary_lb"][0]
    argv = [
        sys.executable, "-m", "lab.httpapp", "sessions", "--host", lb["address"],
        "--port", str(lb["port"]), "--path", path, "--sessions", str(sessions),
        "--requests", str(requests),
    ]  # fmt: skip
    proc = subprocess.run(
        netlab.exec_argv(netns, argv),
        capture_output=True, text=True, cwd=topology.REPO, timeout=120,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"client sessions failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def _wait_until_up(lbs, timeout=30):
    """Until every LB's health checks see all its servers UP (else the first sessions would
    all go to whichever site came up first), and lb-primary serves a request."""
    deadline = time.monotonic() + timeout
    down = {}
    while time.monotonic() < deadline:
        down = {}
        for minion_id, tier in lbs.items():
            groups = salt_lab.call(minion_id, "haproxy_tier.servers", f"tier={tier}")
            down[minion_id] = sorted(
                name
                for servers in groups.values()
                for name, info in servers.items()
                if info.get("status") != "UP"
            )
        if not any(down.values()) and not client_sessions(sessions=1, requests=1)[0]["failed"]:
            return
        time.sleep(0.5)
    raise RuntimeError(f"HAProxy servers not UP within {timeout}s: {down}")


def run():
    """Both tiers as orch.cluster configured them: VIP holders, sticky sessions; the summary."""
    roles = {h.id: h.grains["webfarm"]["role"] for h in topology.hosts()}
    lbs = {minion_id: TIERS[role] for minion_id, role in roles.items() if role in TIERS}
    for minion_id, tier in lbs.items():
        status = salt_lab.call(minion_id, "haproxy_tier.status", f"tier={tier}")
        if not status.get("running"):
            raise RuntimeError(f"HAProxy ({tier}) does not run on {minion_id}: {status}")
        print(f"    {minion_id}: HAProxy ({tier}) runs, master pid {status.get('master_pid')}")
    with_vip = vrrp_lbs()
    print(f"    {','.join(with_vip)}: keepalived (VRRPv3) from haproxy.vrrp")
    for vip, minion_id in sorted(wait_for_vrrp_masters().items()):
        print(f"    VIP {vip} held by {minion_id}")
    _wait_until_up(lbs)
    results = client_sessions()
    failed = sum(s["failed"] for s in results)
    unsticky = 0
    for s in results:
        places = sorted({f"{site}/{farm}" for site, farm, _member in s["served"]})
        members = sorted({f"m{member}" for _site, _farm, member in s["served"]})
        cookies = " ".join(f"{k}={v}" for k, v in sorted(s["cookies"].items()))
        sticky = len(places) == 1
        unsticky += not sticky
        print(
            f"    session {s['session']}: {cookies or 'no cookies'} -> "
            f"{len(s['served'])}/{REQUESTS} served on {','.join(places) or '-'} "
            f"(members {','.join(members) or '-'}){'' if sticky else '  NOT STICKY'}"
        )
    print(f"    requests: {SESSIONS * REQUESTS}, failed: {failed}, sessions not sticky: {unsticky}")
    if failed or unsticky:
        raise RuntimeError(f"{failed} failed requests, {unsticky} sessions not sticky")
    sites = {s["served"][0][0] for s in results}
    return (
        f"{SESSIONS} sessions x {REQUESTS} requests, 0 failed, all sticky "
        f"(sites used: {','.join(sorted(sites))})"
    )
