"""A pillar change re-applies only what depends on it (issue 16).

Site LB ``lb-s2`` of the example topology (site s2 has no VIP: the common SLS plus haproxy and
haproxy.sysctl) is converged by a real highstate through Salt's loader with the repo's state
and pillar tops. What the host would share is kept off it: motd, less, the HAProxy config,
pidfile and socket and the check user's home, shell and dispatcher are under the test's temp
dir; the LB sysctls are tuned inside a network namespace the test creates (the kernel-global
keys wanted at the host's own values, as in test_haproxy_sysctl); HAProxy is not started
(pillar ``haproxy:start``); the check user is the test's own and is removed afterwards.
Then one farm member's port changes in ``webfarm:topology``, and the next highstate must
change the site LB's HAProxy config and nothing else.
"""

import copy

import pytest
import yaml
from saltfactories.utils.functional import Loaders

from lab.haproxy_lab import haproxy_pillar
from lab.nagios import client_pillar, remove_user
from lab.netns import namespaced_lb_sysctl
from lab.sshd import keygen
from tests.support.salt_env import REPO

pytestmark = pytest.mark.timeout(300)

MINION = "lb-s2"
USER = "wfhs-check"
TOP = ["motd", "less", "nagios.client", "webfarm.role_check", "haproxy", "haproxy.sysctl"]


@pytest.fixture
def lb(minion_config, tmp_path, netns_lab):
    """``(loaders, pillar)``: lb-s2's loaders and the pillar that roots its host under tmp."""
    opts = dict(minion_config)
    opts.update(
        {
            "id": MINION,
            "pillar": {},
            "pillar_roots": {"base": [str(REPO / "pillar")]},
            "state_top": "top.sls",
        }
    )
    loaders = Loaders(opts)
    loaders.grains.update({"id": MINION, "webfarm": {"role": "lb-site", "site": "s2"}})
    loaders.refresh_pillar()
    host = tmp_path / "host"
    (host / "etc" / "cron.d").mkdir(parents=True)
    (host / "etc" / "profile.d").mkdir(parents=True)
    (host / "etc" / "motd").write_text("lb-s2, a webfarm test host\n")
    pubkey = keygen(tmp_path / "monitor-key", "wfhs-monitor")
    haproxy = haproxy_pillar(str(tmp_path / "haproxy"), "site", "s2", "127.0.0.1:18080")
    haproxy.update(
        {
            "start": False,
            "sysctl": namespaced_lb_sysctl(),
            "sysctl_netns": netns_lab.ns("lb"),
            "sysctl_persist": str(host / "etc" / "sysctl.d" / "60-webfarm-haproxy.conf"),
        }
    )
    pillar = {
        "motd": {
            "target": str(host / "etc" / "motd"),
            "base": str(host / "etc" / "motd_base"),
            "pinned": str(host / "etc" / "motd_pinned"),
            "cron_file": str(host / "etc" / "cron.d" / "webfarm-motd"),
            "text": "webfarm highstate test",
        },
        "less": {"profile_file": str(host / "etc" / "profile.d" / "webfarm-less.sh")},
        "haproxy": haproxy,
        **client_pillar(str(host / "nagios"), USER, pubkey, sources=["10.77.0.30"]),
    }
    # the repo's per-role services name plugins the test's allow-list leaves out
    roles = yaml.safe_load((REPO / "salt" / "states" / "webfarm" / "roles.yaml").read_text())
    pillar["nagios"]["server"]["services"] = {role: [] for role in ["*", *roles]}
    try:
        yield loaders, pillar
    finally:
        loaders.reset_state()
        remove_user(USER)


def _highstate(loaders, pillar):
    ret = loaders.modules.state.apply(pillar=pillar)
    states = ret.raw if hasattr(ret, "raw") else ret
    assert isinstance(states, dict), states
    failed = {s["__id__"]: s["comment"] for s in states.values() if s["result"] is not True}
    assert not failed, failed
    return sorted({s["__id__"] for s in states.values() if s["changes"]})


def test_a_member_port_change_changes_only_the_site_lbs_haproxy_config(lb):
    loaders, pillar = lb
    top = loaders.modules.state.show_top()
    assert top == {"base": TOP}, top
    first = _highstate(loaders, pillar)
    assert "haproxy-site" in first and "haproxy-sysctl" in first, first
    config = pillar["haproxy"]["site"]["config"]
    before = open(config, encoding="utf-8").read()
    assert _highstate(loaders, pillar) == []  # converged: the second highstate changes nothing

    topology = yaml.safe_load((REPO / "pillar" / "webfarm" / "topology.sls").read_text())
    topology = topology["webfarm"]["topology"]
    member = topology["sites"]["s2"]["farms"]["f1"]["members"][2]
    changed = copy.deepcopy(topology)
    changed["sites"]["s2"]["farms"]["f1"]["members"][2]["port"] = 8081
    pillar = {**pillar, "webfarm": {"topology": changed}}
    assert _highstate(loaders, pillar) == ["haproxy-site"]
    after = open(config, encoding="utf-8").read()
    assert f"{member['address']}:8081" in after and f"{member['address']}:8081" not in before
    # another site's member changes nothing on lb-s2: its config has only site s2's farms
    other = copy.deepcopy(changed)
    other["sites"]["s1"]["farms"]["f1"]["members"][1]["port"] = 8082
    assert _highstate(loaders, {**pillar, "webfarm": {"topology": other}}) == []
