"""Network-namespace labs: namespaces joined by veth pairs, addresses only inside them.

Reusable by any capability: build a :class:`NetnsLab` (or take the ``netns_lab`` fixture),
add namespaces and links, run commands inside; ``close()`` deletes every namespace it made
(and its ``/etc/netns/<name>`` directory, used by ``ip -n`` for per-namespace iproute2 files).

``policyroute_lab`` builds the seed's routing scenario:

    gw0 (10.12.0.254, 2001:db8:12::254; "internet" 203.0.113.1 on lo)
      |  eth0: 10.12.0.1/24, 2001:db8:12::1/64
    web
      |  eth1: 85.14.228.248/24, 2001:db8:85::248/64
    gw1 (85.14.228.254, 2001:db8:85::254; "internet" 198.51.100.1, 2001:db8:ffff::1 on lo)
"""

import itertools
import os
import shutil
import subprocess
from dataclasses import dataclass

IP = "ip"
ETC_NETNS = "/etc/netns"
_counter = itertools.count()


def run(argv, check=True, timeout=30):
    """Run an argument list; return the CompletedProcess (text). Raises with stderr on failure."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def ip(ns, *args, check=True):
    """``ip -n <ns> <args>`` (``ns`` None: the host's namespace)."""
    prefix = [IP, "-n", ns] if ns else [IP]
    return run([*prefix, *args], check=check)


def ns_exec(ns, *argv, check=True, timeout=30):
    """Run a program inside namespace ``ns``."""
    return run([IP, "netns", "exec", ns, *argv], check=check, timeout=timeout)


def unique_prefix(tag="lab"):
    """A short prefix unique to this process and call (namespace names stay readable)."""
    return f"wf{tag}{os.getpid() % 100000}x{next(_counter)}"


@dataclass
class NetnsLab:
    """Namespaces and veth pairs that are deleted together."""

    prefix: str

    def __post_init__(self):
        self.namespaces = []
        self._made_etc_netns = not os.path.isdir(ETC_NETNS)

    def ns(self, role):
        """Create namespace ``<prefix>-<role>`` with lo up; return its name."""
        name = f"{self.prefix}-{role}"
        run([IP, "netns", "add", name])
        self.namespaces.append(name)
        ip(name, "link", "set", "lo", "up")
        # No duplicate address detection: addresses (link-local ones too) are usable at once,
        # so the routing tables do not change under a test that compares snapshots.
        settings = ("net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
        ns_exec(name, "sysctl", "-q", "-w", *settings)
        return name

    def veth(self, ns_a, if_a, ns_b, if_b, addrs_a=(), addrs_b=()):
        """A veth pair ``ns_a:if_a`` <-> ``ns_b:if_b``, both up, with the given CIDRs."""
        ip(ns_a, "link", "add", if_a, "type", "veth", "peer", "name", if_b, "netns", ns_b)
        for ns, ifname, addrs in ((ns_a, if_a, addrs_a), (ns_b, if_b, addrs_b)):
            for cidr in addrs:
                extra = ["nodad"] if ":" in cidr else []
                ip(ns, "addr", "add", cidr, "dev", ifname, *extra)
            ip(ns, "link", "set", ifname, "up")

    def loopback_address(self, ns, *cidrs):
        for cidr in cidrs:
            extra = ["nodad"] if ":" in cidr else []
            ip(ns, "addr", "add", cidr, "dev", "lo", *extra)

    def etc_dir(self, ns):
        """``/etc/netns/<ns>``: ``ip -n <ns>`` bind-mounts its entries over ``/etc``."""
        path = os.path.join(ETC_NETNS, ns)
        os.makedirs(path, exist_ok=True)
        return path

    def close(self):
        errors = []
        for name in reversed(self.namespaces):
            proc = run([IP, "netns", "del", name], check=False)
            if proc.returncode != 0:
                errors.append(proc.stderr.strip())
            shutil.rmtree(os.path.join(ETC_NETNS, name), ignore_errors=True)
        self.namespaces.clear()
        if self._made_etc_netns and os.path.isdir(ETC_NETNS) and not os.listdir(ETC_NETNS):
            os.rmdir(ETC_NETNS)
        if errors:
            raise RuntimeError(f"could not delete namespaces: {errors}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def host_sysctl(key):
    """The host's (this process's namespace's) value of sysctl ``key``, as ``sysctl -n`` prints it."""
    return run(["sysctl", "-n", key], check=False).stdout.strip()


def namespaced_lb_sysctl():
    """``haproxy:sysctl`` overrides for tuning an LB inside a namespace without touching the host.

    The file-descriptor ceilings are global to the kernel, so they are wanted at the host's own
    values (already satisfied); ``netdev_max_backlog`` and ``nf_conntrack_max`` can be written
    only from the host's namespace, so they are left out (None)."""
    return {
        "fs.file-max": host_sysctl("fs.file-max"),
        "fs.nr_open": host_sysctl("fs.nr_open"),
        "net.core.netdev_max_backlog": None,
        "net.netfilter.nf_conntrack_max": None,
    }
