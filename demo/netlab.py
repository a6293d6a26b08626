"""Hosts as network namespaces on one bridge, with addresses only inside them.

A ``wf-switch`` namespace holds the bridge; every host namespace gets a veth pair whose far
end is enslaved to the bridge. Nothing is added to the root namespace but the veth ends'
transit (they move into the namespaces at once).
"""

import subprocess

PREFIX = "wf-"
SWITCH = PREFIX + "switch"
BRIDGE = "br0"


def ip(*args, netns=None, check=True):
    cmd = ["ip"] + (["-n", netns] if netns else []) + [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


def namespaces():
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return [line.split()[0] for line in out.stdout.splitlines() if line.strip()]


def create_switch():
    ip("netns", "add", SWITCH)
    ip("link", "add", BRIDGE, "type", "bridge", netns=SWITCH)
    ip("link", "set", BRIDGE, "up", netns=SWITCH)
    ip("link", "set", "lo", "up", netns=SWITCH)


def add_host(index, name, address, prefixlen=16):
    """Create namespace ``wf-<name>`` with ``eth0`` = ``address/prefixlen`` on the bridge."""
    ns = PREFIX + name
    host_end, switch_end = f"wfh{index}", f"wfs{index}"
    ip("netns", "add", ns)
    ip("link", "add", host_end, "type", "veth", "peer", "name", switch_end)
    ip("link", "set", host_end, "netns", ns, "name", "eth0")
    ip("link", "set", switch_end, "netns", SWITCH)
    ip("link", "set", switch_end, "master", BRIDGE, "up", netns=SWITCH)
    ip("addr", "add", f"{address}/{prefixlen}", "dev", "eth0", netns=ns)
    ip("link", "set", "eth0", "up", netns=ns)
    ip("link", "set", "lo", "up", netns=ns)
    return ns


def exec_argv(ns, argv):
    """The argument list that runs ``argv`` inside namespace ``ns``."""
    return ["ip", "netns", "exec", ns, *argv]


def destroy():
    """Delete every ``wf-`` namespace (their veth pairs go with them)."""
    gone = []
    for ns in namespaces():
        if ns.startswith(PREFIX):
            ip("netns", "del", ns, check=False)
            gone.append(ns)
    return gone


def add_uplink(host, ifname, gateway_ns, host_address, gateway_address, index, prefixlen=24):
    """A second link for ``wf-<host>``: ``ifname`` = ``host_address`` facing ``gateway_ns``.

    The gateway namespace (``wf-`` prefixed) also owns ``192.0.2.80`` on ``lo``, a far target
    that answers only when a packet really went out through this uplink and can come back.
    """
    ns, gw = PREFIX + host, PREFIX + gateway_ns
    host_end, gw_end = f"wfu{index}h", f"wfu{index}g"
    ip("netns", "add", gw)
    ip("link", "add", host_end, "type", "veth", "peer", "name", gw_end)
    ip("link", "set", host_end, "netns", ns, "name", ifname)
    ip("link", "set", gw_end, "netns", gw, "name", "eth0")
    ip("addr", "add", f"{host_address}/{prefixlen}", "dev", ifname, netns=ns)
    ip("addr", "add", f"{gateway_address}/{prefixlen}", "dev", "eth0", netns=gw)
    ip("addr", "add", f"{FAR_TARGET}/32", "dev", "lo", netns=gw)
    for link, where in ((ifname, ns), ("eth0", gw), ("lo", gw)):
        ip("link", "set", link, "up", netns=where)
    return gw


FAR_TARGET = "192.0.2.80"
