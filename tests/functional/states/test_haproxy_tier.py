"""haproxy_tier states against real HAProxy: configured (validate, replace, reload), drained, ready.

``configured`` cases run a HAProxy of their own (site s2 on its own loopback address, files
under a tmp dir), started by the state or the module and stopped by the pid in its pidfile.
"""

import copy
import os
import subprocess

import pytest
from saltfactories.utils.functional import Loaders

from lab.haproxy_lab import Load, free_port, haproxy_pillar, stop_pidfile
from lab.proc import wait_for

pytestmark = pytest.mark.timeout(120)

BIND_ADDRESS = "127.0.9.1"


class OwnLB:
    def __init__(self, lab, base_dir):
        self.port = free_port(BIND_ADDRESS)
        haproxy = haproxy_pillar(str(base_dir), "site", "own", f"{BIND_ADDRESS}:{self.port}")
        haproxy["site"]["name"] = "s2"
        self.settings = haproxy["site"]
        self.pillar = {"webfarm": {"topology": copy.deepcopy(lab.topology)}, "haproxy": haproxy}

    @property
    def config(self):
        return self.settings["config"]

    def client(self, cookies=None):
        from lab.haproxy_lab import Client

        return Client(BIND_ADDRESS, self.port, cookies)


@pytest.fixture
def own_lb(haproxy_lab, tmp_path):
    lb = OwnLB(haproxy_lab, tmp_path)
    yield lb
    stop_pidfile(lb.settings["pidfile"])


@pytest.fixture
def loaders_pillar(own_lb):
    return own_lb.pillar


@pytest.fixture
def reload_pillar(minion_config):
    """Loaders seeing a changed pillar (the loaders copy pillar when they are built)."""
    made = []

    def make(pillar):
        opts = dict(minion_config)
        opts["pillar"] = copy.deepcopy(pillar)
        made.append(Loaders(opts))
        return made[-1]

    yield make
    for loaders in made:
        loaders.reset_state()


def _worker(modules):
    return modules.haproxy_tier.status("site")["worker_pid"]


def _read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def test_configured_writes_validates_and_starts(states, modules, own_lb, testmode):
    ret = states.haproxy_tier.configured("lb", tier="site", test=testmode)
    if testmode:
        assert ret.result is None
        assert ret.comment.startswith("Would have replaced")
        assert "server f1_m1 127.0.2.11:" in ret.changes["diff"]
        assert not os.path.exists(own_lb.config)
        assert modules.haproxy_tier.status("site")["running"] is False
        return
    assert ret.result is True, ret.comment
    assert ret.changes["started"]["worker_pid"] == _worker(modules)
    assert "cookie FARMID insert indirect nocache" in _read(own_lb.config)
    status, data, new = own_lb.client().get()
    assert status == 200 and data["site"] == "s2" and new["FARMID"] == data["farm"]
    again = states.haproxy_tier.configured("lb", tier="site")
    assert again.result is True and again.changes == {}
    assert "already as wanted" in again.comment


def test_start_over_a_stale_pidfile_returns_the_new_master(modules, own_lb):
    modules.haproxy_tier.apply("site", start_if_stopped=False)  # the config only
    os.makedirs(os.path.dirname(own_lb.settings["pidfile"]), exist_ok=True)
    with open(own_lb.settings["pidfile"], "w", encoding="ascii") as handle:
        handle.write(f"{_exited_pid()}\n")  # what a kill -9 leaves behind
    started = modules.haproxy_tier.start("site")
    assert isinstance(started["master_pid"], int), started
    assert int(_read(own_lb.settings["pidfile"]).split()[0]) == started["master_pid"]
    assert started["worker_pid"] == _worker(modules)


def _exited_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_configured_reloads_under_load_without_failure(modules, own_lb, testmode, reload_pillar):
    modules.haproxy_tier.apply("site")
    worker = _worker(modules)
    own_lb.pillar["webfarm"]["topology"]["sites"]["s2"]["farms"]["f2"]["members"][2]["weight"] = 7
    states = reload_pillar(own_lb.pillar).states
    with Load(BIND_ADDRESS, own_lb.port, clients=4) as load:
        ret = states.haproxy_tier.configured("lb", tier="site", test=testmode)
        before = load.ok
        wait_for(lambda: load.ok > before + 30, 15, "30 more requests during the reload")
    assert load.failed == []
    if testmode:
        assert (
            ret.result is None
            and ret.comment == "Would have replaced " + own_lb.config + " and reloaded HAProxy"
        )
        assert "weight 7" not in _read(own_lb.config)
        assert _worker(modules) == worker
        return
    assert ret.result is True, ret.comment
    assert "+    server f2_m2 127.0.2.22:" in ret.changes["diff"]
    assert ret.changes["worker_pid"] == {"old": worker, "new": _worker(modules)}
    assert ret.changes["worker_pid"]["new"] != worker
    assert "weight 7" in _read(own_lb.config)


def _duplicate_server(topology):
    farms = topology["sites"]["s2"]["farms"]
    farms["f2"]["members"][1] = dict(farms["f1"]["members"][1])


def _farm_without_members(topology):
    topology["sites"]["s2"]["farms"]["f3"] = {"members": {}}


def _bad_address(topology):
    topology["sites"]["s2"]["farms"]["f1"]["members"][2]["address"] = "127.0.2.300"


@pytest.mark.parametrize(
    "breakage, message",
    [
        (_duplicate_server, "duplicate server 127.0.2.11"),
        (_farm_without_members, "sites.s2.farms.f3: farm without members"),
        (_bad_address, "bad address '127.0.2.300'"),
    ],
    ids=["duplicate-server", "farm-without-members", "bad-address"],
)
def test_invalid_topology_fails_before_anything_is_replaced(
    modules, own_lb, testmode, breakage, message, reload_pillar
):
    modules.haproxy_tier.apply("site")
    before = _read(own_lb.config)
    mtime = os.stat(own_lb.config).st_mtime_ns
    worker = _worker(modules)
    breakage(own_lb.pillar["webfarm"]["topology"])
    states = reload_pillar(own_lb.pillar).states
    ret = states.haproxy_tier.configured("lb", tier="site", test=testmode)
    assert ret.result is False
    assert message in ret.comment
    assert ret.changes == {}
    assert _read(own_lb.config) == before and os.stat(own_lb.config).st_mtime_ns == mtime
    assert _worker(modules) == worker
    assert own_lb.client().get()[0] == 200


def test_config_rejected_by_haproxy_check_is_not_installed(
    modules, own_lb, testmode, reload_pillar
):
    modules.haproxy_tier.apply("site")
    before = _read(own_lb.config)
    worker = _worker(modules)
    own_lb.pillar["haproxy"]["timeouts"] = {"connect": "banana"}
    states = reload_pillar(own_lb.pillar).states
    ret = states.haproxy_tier.configured("lb", tier="site", test=testmode)
    assert ret.result is False
    assert "haproxy -c rejected" in ret.comment
    assert "unexpected character 'b' in 'timeout connect'" in ret.comment
    assert _read(own_lb.config) == before
    assert _worker(modules) == worker
    assert [p for p in os.listdir(os.path.dirname(own_lb.config)) if p.startswith(".haproxy")] == []


def test_drained_then_ready(states, modules, haproxy_lab, testmode):
    sock = haproxy_lab.instances["s1"].socket
    try:
        ret = states.haproxy_tier.drained("f2", socket=sock, timeout=5, test=testmode)
        admin = {i["admin"] for i in modules.haproxy_tier.servers(socket=sock)["f2"].values()}
        expected_changes = {
            "f2_m1": {"old": "ready", "new": "maint"},
            "f2_m2": {"old": "ready", "new": "maint"},
        }
        assert ret.changes == expected_changes
        if testmode:
            assert ret.result is None and ret.comment == "Would have drained f2_m1, f2_m2"
            assert admin == {"ready"}
            return
        assert ret.result is True and ret.comment.startswith("Drained f2_m1, f2_m2 in ")
        assert admin == {"maint"}
        client = haproxy_lab.site_client("s1", {"FARMID": "f2"})
        assert client.get()[1]["farm"] == "f1"
        again = states.haproxy_tier.drained("f2", socket=sock)
        assert again.result is True and again.changes == {}

        back = states.haproxy_tier.ready("f2", socket=sock)
        assert back.result is True
        assert back.changes == {
            "f2_m1": {"old": "maint", "new": "ready"},
            "f2_m2": {"old": "maint", "new": "ready"},
        }
        client = haproxy_lab.site_client("s1", {"FARMID": "f2"})
        assert client.get()[1]["farm"] == "f2"
        assert states.haproxy_tier.ready("f2", socket=sock).changes == {}
    finally:
        modules.haproxy_tier.ready(farm="f2", socket=sock)


def test_ready_in_test_mode_changes_nothing(states, modules, haproxy_lab):
    sock = haproxy_lab.instances["s1"].socket
    modules.haproxy_tier.drain(server="f1_m2", timeout=5, socket=sock)
    try:
        ret = states.haproxy_tier.ready("f1", socket=sock, test=True)
        assert ret.result is None
        assert ret.changes == {"f1_m2": {"old": "maint", "new": "ready"}}
        assert modules.haproxy_tier.servers(socket=sock)["f1"]["f1_m2"]["admin"] == "maint"
    finally:
        modules.haproxy_tier.ready(farm="f1", socket=sock)


def test_drained_unknown_farm_fails_cleanly(states, haproxy_lab, testmode):
    sock = haproxy_lab.instances["s1"].socket
    ret = states.haproxy_tier.drained("f9", socket=sock, test=testmode)
    assert ret.result is False
    assert "no farm 'f9'" in ret.comment


def test_sls_site_renders_and_runs(modules, own_lb, testmode):
    ret = modules.state.sls("haproxy.site", test=testmode)
    (only,) = list(ret)
    assert only.result is (None if testmode else True), only.comment
    assert os.path.exists(own_lb.config) is (not testmode)


def test_init_sls_picks_no_tier_without_an_lb_role(modules):
    ret = modules.state.show_sls("haproxy")
    assert list(ret) == ["haproxy-not-an-lb"]
    assert "webfarm:role is unset" in ret["haproxy-not-an-lb"]["test"][0]["name"]
