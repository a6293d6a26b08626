"""pytest fixtures over :mod:`lab.netns` (the service itself lives there)."""

import os
from dataclasses import dataclass

import pytest

from lab.netns import NetnsLab, ip, ns_exec, unique_prefix


@pytest.fixture
def netns_lab():
    """A fresh :class:`NetnsLab`; everything it made is deleted after the test."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    with NetnsLab(unique_prefix()) as lab:
        yield lab


@dataclass
class PolicyRouteLab:
    lab: NetnsLab
    web: str
    gw0: str
    gw1: str
    iproute2_dir: str

    def route_get(self, dst, src=None):
        """``ip route get`` inside ``web``; returns the first output line."""
        extra = ["from", src] if src else []
        family = ["-6"] if ":" in dst else []
        return ip(self.web, *family, "route", "get", dst, *extra).stdout.splitlines()[0]

    def ping(self, dst, src):
        """One ping from ``web`` with source address ``src``; True when answered."""
        proc = ns_exec(self.web, "ping", "-n", "-c", "1", "-W", "1", "-I", src, dst, check=False)
        return proc.returncode == 0

    def snapshot(self):
        """Everything routing-related in ``web`` (all tables, all rules, both families)."""
        return {
            cmd: ip(self.web, *cmd.split()).stdout
            for cmd in ("-4 rule", "-6 rule", "-4 route show table all", "-6 route show table all")
        }


@pytest.fixture
def policyroute_pillar(policyroute_lab):
    """The seed's scenario for ``policyroute_lab``, with IPv6 beside it (a fresh dict per test)."""
    lab = policyroute_lab
    return {
        "default": {"gateway": ["10.12.0.254", "2001:db8:12::254"], "dev": "eth0"},
        "tables": {
            "uplink1": {
                "id": 1,
                "gateway": ["85.14.228.254", "2001:db8:85::254"],
                "dev": "eth1",
                "sources": ["85.14.228.248", "2001:db8:85::248"],
                "priority": 1000,
                "routes": [{"dst": "192.0.2.0/24", "gateway": "85.14.228.253"}],
            },
        },
        "netns": lab.web,
        "iproute2_dir": lab.iproute2_dir,
    }


@pytest.fixture
def policyroute_lab(netns_lab):
    lab = netns_lab
    web, gw0, gw1 = lab.ns("web"), lab.ns("gw0"), lab.ns("gw1")
    lab.veth(web, "eth0", gw0, "eth0", ["10.12.0.1/24", "2001:db8:12::1/64"],
             ["10.12.0.254/24", "2001:db8:12::254/64"])  # fmt: skip
    lab.veth(web, "eth1", gw1, "eth0", ["85.14.228.248/24", "2001:db8:85::248/64"],
             ["85.14.228.254/24", "2001:db8:85::254/64"])  # fmt: skip
    lab.loopback_address(gw0, "203.0.113.1/32")
    lab.loopback_address(gw1, "198.51.100.1/32", "2001:db8:ffff::1/128")
    iproute2_dir = os.path.join(lab.etc_dir(web), "iproute2")
    return PolicyRouteLab(lab, web, gw0, gw1, iproute2_dir)
