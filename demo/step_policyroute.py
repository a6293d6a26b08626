"""Step 4: source-based policy routes on a host with two uplinks, applied by ``salt://policyroute``.

lb-primary gets ``eth1`` towards gateway namespace ``wf-gw-a`` and ``eth2`` towards
``wf-gw-b``; pillar ``policyroute`` (demo pillar) sends everything out through gw-a except
traffic from the eth2 address, which table ``uplink2`` sends through gw-b.
"""

import subprocess

from demo import netlab, salt_lab

TITLE = "step 4: policy routes on lb-primary with two uplinks (salt://policyroute in its highstate)"
HOST = "lb-primary"
UPLINKS = {
    "eth1": {"gw_ns": "gw-a", "address": "198.51.100.10", "gateway": "198.51.100.254"},
    "eth2": {"gw_ns": "gw-b", "address": "203.0.113.10", "gateway": "203.0.113.254"},
}


def pillar():
    """``{HOST: {policyroute: ...}}``, the files rooted under its host dir."""
    root = salt_lab.host_root(HOST)
    eth1, eth2 = UPLINKS["eth1"], UPLINKS["eth2"]
    return {
        HOST: {
            "policyroute": {
                "default": {"gateway": eth1["gateway"], "dev": "eth1"},
                "tables": {
                    "uplink2": {
                        "id": 2,
                        "gateway": eth2["gateway"],
                        "dev": "eth2",
                        "sources": [eth2["address"]],
                        "priority": 1000,
                    }
                },
                "iproute2_dir": str(root / "etc" / "iproute2"),
                "persist_dir": str(root / "etc" / "webfarm"),
                "systemd_dir": str(root / "etc" / "systemd" / "system"),
            }
        }
    }


def _route_get(source=None):
    args = ["route", "get", netlab.FAR_TARGET] + (["from", source] if source else [])
    out = netlab.ip(*args, netns=netlab.PREFIX + HOST).stdout.split("\n")[0].strip()
    return " ".join(args), out


def _ping(source):
    argv = ["ping", "-c", "1", "-W", "2", "-I", source, netlab.FAR_TARGET]
    proc = subprocess.run(
        netlab.exec_argv(netlab.PREFIX + HOST, argv), capture_output=True, text=True
    )
    return proc.returncode == 0


def wire():
    """HOST's two uplinks and their gateway namespaces (before the highstate routes them)."""
    for index, (ifname, uplink) in enumerate(UPLINKS.items(), start=1):
        netlab.add_uplink(
            HOST, ifname, uplink["gw_ns"], uplink["address"], uplink["gateway"], index
        )


def run():
    """Show and prove the routes ``salt://policyroute`` set (lb-primary's highstate); the summary."""
    shown = salt_lab.call(HOST, "policyroute.show")
    rules = ", ".join(f"from {r['src']} lookup {r['table']}" for r in shown["rules"])
    print(
        f"    $ salt {HOST} policyroute.show   (set by the policyroute SLS in its highstate)\n      {rules}"
    )
    expected = {
        None: f"via {UPLINKS['eth1']['gateway']} dev eth1",
        UPLINKS["eth2"]["address"]: f"via {UPLINKS['eth2']['gateway']} dev eth2",
    }
    for source, want in expected.items():
        cmd, got = _route_get(source)
        print(f"    $ ip -n {netlab.PREFIX}{HOST} {cmd}\n      {got}")
        if want not in got:
            raise RuntimeError(f"ip route get {cmd!r} gave {got!r}, wanted {want!r}")
    pings = {}
    for ifname, uplink in UPLINKS.items():
        pings[ifname] = _ping(uplink["address"])
        outcome = "answered" if pings[ifname] else "NO ANSWER"
        print(f"    ping {netlab.FAR_TARGET} from {uplink['address']} ({ifname}): {outcome}")
    if not all(pings.values()):
        raise RuntimeError(f"a ping through an uplink went unanswered: {pings}")
    return "2 uplinks; ip route get and a ping through each: as the pillar says"
