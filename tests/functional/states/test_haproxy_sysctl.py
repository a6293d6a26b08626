"""haproxy.sysctl (state haproxy_tier.sysctl_tuned) applied for real inside a network
namespace this test creates, in test and real mode, then again (idempotent)."""

import os
import subprocess

import pytest

from lab.netns import host_sysctl, namespaced_lb_sysctl

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def wf18_sysctl_ns(netns_lab):
    return netns_lab.ns("lb")


@pytest.fixture
def loaders_pillar(tmp_path):
    # kernel-global keys at the host's values, host-only keys left out: the host is untouched
    return {"haproxy": {"sysctl": namespaced_lb_sysctl()}}


def _in_ns(ns, key):
    out = subprocess.run(
        ["ip", "netns", "exec", ns, "sysctl", "-n", key], capture_output=True, text=True
    )
    return " ".join(out.stdout.split())


def test_sysctl_state_applies_in_a_namespace_and_is_idempotent(
    states, wf18_sysctl_ns, tmp_path, testmode
):
    ns = wf18_sysctl_ns
    persist = str(tmp_path / "sysctl.d" / "60-webfarm-haproxy.conf")
    host_before = {k: host_sysctl(k) for k in ("net.core.somaxconn", "net.ipv4.tcp_synack_retries")}
    assert _in_ns(ns, "net.ipv4.tcp_synack_retries") == "5"  # a fresh namespace's default

    ret = states.haproxy_tier.sysctl_tuned("lb", netns=ns, persist=persist, test=testmode)
    expected = {
        "net.core.somaxconn": "65535",
        "net.ipv4.tcp_max_syn_backlog": "65535",
        "net.ipv4.tcp_synack_retries": "2",
        "net.ipv4.ip_local_port_range": "1024 65535",
        "net.ipv4.tcp_tw_reuse": "1",
        "net.ipv4.tcp_fin_timeout": "15",
        "net.ipv4.ip_nonlocal_bind": "1",
    }
    assert {k: v["new"] for k, v in ret.changes.items() if k != "persist"} == expected
    assert ret.changes["persist"] == persist
    if testmode:
        assert ret.result is None
        assert ret.comment == f"Would have set 7 sysctl(s) and written {persist}"
        assert _in_ns(ns, "net.ipv4.tcp_synack_retries") == "5"
        assert not os.path.exists(persist)
        return
    assert ret.result is True, ret.comment
    assert ret.comment == f"Set 7 sysctl(s) and wrote {persist}"
    assert {k: _in_ns(ns, k) for k in expected} == expected
    with open(persist, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    assert "net.ipv4.tcp_synack_retries = 2" in lines
    assert f"fs.file-max = {host_sysctl('fs.file-max')}" in lines  # never lowered
    assert host_before == {k: host_sysctl(k) for k in host_before}  # the host is untouched

    again = states.haproxy_tier.sysctl_tuned("lb", netns=ns, persist=persist)
    assert again.result is True and again.changes == {}
    assert again.comment == "LB sysctls are already as wanted"
