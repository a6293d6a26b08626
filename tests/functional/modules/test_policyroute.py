"""policyroute execution module against the real kernel, inside network namespaces."""

import copy
import os

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

import webfarm_policyroute
from lab.netns import ip, run

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def loaders_pillar(policyroute_pillar):
    return {"policyroute": policyroute_pillar}


def test_seed_scenario_routes_by_source(modules, policyroute_lab):
    lab = policyroute_lab
    changes = modules.policyroute.apply()
    assert "85.14.228.248/32" in " ".join(changes["rules"]["added"])
    assert "via 85.14.228.254" in lab.route_get("198.51.100.1", src="85.14.228.248")
    assert "via 10.12.0.254" in lab.route_get("198.51.100.1", src="10.12.0.1")
    assert "via 10.12.0.254" in lab.route_get("198.51.100.1")
    assert "via 2001:db8:85::254" in lab.route_get("2001:db8:ffff::1", src="2001:db8:85::248")
    assert "via 2001:db8:12::254" in lab.route_get("2001:db8:ffff::1", src="2001:db8:12::1")
    assert "via 85.14.228.253" in lab.route_get("192.0.2.7", src="85.14.228.248")
    # Real packets: each "internet" address lives behind one gateway only.
    assert lab.ping("198.51.100.1", "85.14.228.248")
    assert not lab.ping("198.51.100.1", "10.12.0.1")
    assert lab.ping("203.0.113.1", "10.12.0.1")
    assert not lab.ping("203.0.113.1", "85.14.228.248")
    assert lab.ping("2001:db8:ffff::1", "2001:db8:85::248")


def test_rule_shows_table_name_and_proto(modules, policyroute_lab):
    modules.policyroute.apply()
    rules = ip(policyroute_lab.web, "rule").stdout
    assert "1000:\tfrom 85.14.228.248 lookup uplink1 proto webfarm" in rules
    routes = ip(policyroute_lab.web, "route", "show", "table", "uplink1").stdout
    assert "default via 85.14.228.254 dev eth1 proto webfarm" in routes


def test_show_lists_owned_state(modules, policyroute_lab):
    modules.policyroute.apply()
    shown = modules.policyroute.show()
    assert shown["tables"] == {"uplink1": 1}
    assert {"family": 4, "priority": 1000, "src": "85.14.228.248/32", "table": "uplink1"} in (
        shown["rules"]
    )
    defaults = {(r["table"], r["gateway"]) for r in shown["routes"] if r["dst"].endswith("/0")}
    assert defaults == {
        ("main", "10.12.0.254"),
        ("main", "2001:db8:12::254"),
        ("uplink1", "85.14.228.254"),
        ("uplink1", "2001:db8:85::254"),
    }


def test_reapply_is_a_noop(modules, policyroute_lab):
    assert modules.policyroute.apply()
    before = policyroute_lab.snapshot()
    assert modules.policyroute.diff() == {}
    assert modules.policyroute.apply() == {}
    assert policyroute_lab.snapshot() == before


def test_diff_is_exactly_what_apply_does(modules, policyroute_pillar):
    planned = modules.policyroute.diff()
    assert modules.policyroute.apply() == planned
    changed = copy.deepcopy(policyroute_pillar)
    changed["tables"]["uplink1"]["sources"] = ["85.14.228.249", "2001:db8:85::248"]
    planned = modules.policyroute.diff(**changed)
    assert planned == {
        "rules": {
            "added": ["priority 1000 from 85.14.228.249/32 lookup uplink1"],
            "removed": ["priority 1000 from 85.14.228.248/32 lookup uplink1"],
        }
    }
    assert modules.policyroute.apply(**changed) == planned


def test_removing_a_table_removes_its_rules_and_routes(
    modules, policyroute_pillar, policyroute_lab
):
    policyroute_pillar["tables"]["uplink2"] = {
        "id": 2,
        "gateway": "85.14.228.253",
        "dev": "eth1",
        "sources": ["85.14.228.247"],
        "priority": 1100,
    }
    modules.policyroute.apply(**policyroute_pillar)
    assert "lookup uplink2" in ip(policyroute_lab.web, "rule").stdout
    del policyroute_pillar["tables"]["uplink2"]
    changes = modules.policyroute.apply(**policyroute_pillar)
    assert changes["rules"]["removed"] == ["priority 1100 from 85.14.228.247/32 lookup uplink2"]
    assert changes["routes"]["removed"] == ["default via 85.14.228.253 dev eth1 table uplink2"]
    assert "85.14.228.247" not in ip(policyroute_lab.web, "rule").stdout
    assert ip(policyroute_lab.web, "route", "show", "table", "2").stdout == ""
    names = open(os.path.join(policyroute_lab.iproute2_dir, "rt_tables.d", "webfarm.conf")).read()
    assert "uplink2" not in names and "1\tuplink1" in names


def test_foreign_rules_and_routes_survive(modules, policyroute_pillar, policyroute_lab):
    web = policyroute_lab.web
    ip(web, "rule", "add", "from", "10.12.0.77", "table", "1", "priority", "1000")
    ip(web, "rule", "add", "from", "10.12.0.78", "table", "1", "priority", "500", "protocol", "77")
    ip(web, "route", "add", "198.18.0.0/15", "via", "10.12.0.254", "table", "1")
    modules.policyroute.apply()
    policyroute_pillar["tables"] = {}
    modules.policyroute.apply(**policyroute_pillar)
    rules = ip(web, "rule").stdout
    assert "from 10.12.0.77 lookup 1" in rules
    assert "from 10.12.0.78 lookup 1" in rules
    assert "85.14.228.248" not in rules
    assert "198.18.0.0/15 via 10.12.0.254" in ip(web, "route", "show", "table", "1").stdout
    assert modules.policyroute.flush("1") == {}


def test_flush_removes_one_table(modules, policyroute_lab):
    modules.policyroute.apply()
    changes = modules.policyroute.flush("uplink1")
    assert len(changes["rules"]["removed"]) == 2
    assert ip(policyroute_lab.web, "route", "show", "table", "1").stdout == ""
    assert "default via 10.12.0.254" in ip(policyroute_lab.web, "route").stdout
    assert modules.policyroute.flush("uplink1") == {}


def test_failure_mid_apply_rolls_back(modules, policyroute_pillar, policyroute_lab, monkeypatch):
    """A route that another writer adds mid-way makes the kernel refuse ours (EEXIST)."""
    web = policyroute_lab.web
    policyroute_pillar["tables"]["uplink2"] = {
        "id": 2,
        "gateway": "10.12.0.253",
        "dev": "eth0",
        "sources": ["10.12.0.1"],
        "priority": 1100,
    }
    modules.policyroute.apply(
        **{**policyroute_pillar, "tables": {"uplink2": policyroute_pillar["tables"]["uplink2"]}}
    )
    before = policyroute_lab.snapshot()

    def conflicting_writer(batch):
        if batch[0].action == "add" and isinstance(batch[0].item, webfarm_policyroute.Rule):
            ip(web, "rule", "add", "from", "85.14.228.248", "table", "1", "priority", "1000",
               "protocol", "77")  # fmt: skip

    monkeypatch.setattr(webfarm_policyroute, "before_batch_hook", conflicting_writer)
    with pytest.raises(CommandExecutionError, match="File exists.*Rolled back"):
        modules.policyroute.apply(**policyroute_pillar)
    ip(web, "rule", "del", "from", "85.14.228.248", "table", "1", "priority", "1000")
    assert policyroute_lab.snapshot() == before


def test_hook_failure_before_rules_rolls_back_routes(modules, policyroute_lab, monkeypatch):
    before = policyroute_lab.snapshot()

    def crash(batch):
        if isinstance(batch[0].item, webfarm_policyroute.Rule):
            raise OSError("simulated crash between routes and rules")

    monkeypatch.setattr(webfarm_policyroute, "before_batch_hook", crash)
    with pytest.raises(CommandExecutionError, match="simulated crash"):
        modules.policyroute.apply()
    assert policyroute_lab.snapshot() == before
    assert not os.path.exists(os.path.join(policyroute_lab.iproute2_dir, "rt_tables.d"))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p["tables"]["uplink1"].update(sources=["85.14.228.999"]), "not an IP"),
        (lambda p: p["default"].update(gateway="10.12.0.x"), "not an IP"),
        (lambda p: p["tables"]["uplink1"].update(id=0), "between 1 and"),
        (lambda p: p["tables"]["uplink1"].update(id=253), "reserved"),
        (lambda p: p["tables"]["uplink1"].update(id=254), "reserved"),
        (lambda p: p["tables"]["uplink1"].update(id=255), "reserved"),
        (lambda p: p["tables"]["uplink1"].update(id=2**32), "between 1 and"),
        (lambda p: p["tables"]["uplink1"].update(dev="eth9"), "unknown device 'eth9'"),
        (
            lambda p: p["tables"]["uplink1"].update(gateway=["10.12.0.254", "2001:db8:85::254"]),
            "not on a network connected to eth1",
        ),
        (
            lambda p: p["tables"].update(
                uplink2={
                    "id": 2,
                    "gateway": "10.12.0.254",
                    "dev": "eth0",
                    "sources": ["85.14.228.248"],
                }
            ),
            "also a source of table uplink1",
        ),
        (lambda p: p["tables"]["uplink1"].update(priority=100), "between 1000 and 9999"),
    ],
)
def test_bad_input_changes_nothing(modules, policyroute_pillar, policyroute_lab, mutate, message):
    modules.policyroute.apply()
    before = policyroute_lab.snapshot()
    names = os.path.join(policyroute_lab.iproute2_dir, "rt_tables.d", "webfarm.conf")
    names_before = open(names).read()
    bad = copy.deepcopy(policyroute_pillar)
    mutate(bad)
    with pytest.raises(SaltInvocationError, match=message):
        modules.policyroute.apply(**bad)
    with pytest.raises(SaltInvocationError, match=message):
        modules.policyroute.diff(**bad)
    assert policyroute_lab.snapshot() == before
    assert open(names).read() == names_before


def test_foreign_route_in_the_way_is_an_error(modules, policyroute_lab):
    ip(policyroute_lab.web, "route", "add", "default", "via", "10.12.0.254", "table", "1")
    with pytest.raises(SaltInvocationError, match="not owned by webfarm"):
        modules.policyroute.apply()
    assert "lookup uplink1" not in ip(policyroute_lab.web, "rule").stdout


def test_missing_namespace_is_a_clear_error(modules, policyroute_pillar):
    with pytest.raises(SaltInvocationError, match="does not exist"):
        modules.policyroute.diff(**{**policyroute_pillar, "netns": "wf-no-such-namespace"})


@pytest.mark.parametrize("loaders_pillar", [{}])
def test_no_pillar_is_a_clear_error(modules, loaders_pillar):
    with pytest.raises(SaltInvocationError, match="no policyroute pillar"):
        modules.policyroute.apply()


def test_gateway_change_and_big_table_ids(modules, policyroute_pillar, policyroute_lab):
    policyroute_pillar["tables"]["far"] = {
        "id": 100000,
        "gateway": "10.12.0.254",
        "dev": "eth0",
        "sources": ["10.12.0.0/28"],
        "priority": 9999,
    }
    modules.policyroute.apply(**policyroute_pillar)
    far = policyroute_lab.route_get("198.51.100.1", src="10.12.0.1")
    assert "via 10.12.0.254" in far and "table far" in far
    assert (
        "9999:\tfrom 10.12.0.0/28 lookup far proto webfarm"
        in ip(policyroute_lab.web, "rule").stdout
    )
    policyroute_pillar["tables"]["uplink1"]["gateway"] = ["85.14.228.253", "2001:db8:85::254"]
    changes = modules.policyroute.apply(**policyroute_pillar)
    assert changes == {
        "routes": {
            "changed": [
                {
                    "old": "default via 85.14.228.254 dev eth1 table uplink1",
                    "new": "default via 85.14.228.253 dev eth1 table uplink1",
                }
            ]
        }
    }
    assert "via 85.14.228.253" in policyroute_lab.route_get("198.51.100.1", src="85.14.228.248")
    assert modules.policyroute.apply(**policyroute_pillar) == {}


def test_unwritable_names_file_rolls_back(modules, policyroute_pillar, policyroute_lab, tmp_path):
    """The names can only be written after netlink succeeded; failing that, netlink is undone."""
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "webfarm-test", str(readonly)])
    try:
        before = policyroute_lab.snapshot()
        with pytest.raises(CommandExecutionError, match="cannot write the iproute2 names.*rolled"):
            modules.policyroute.apply(**{**policyroute_pillar, "iproute2_dir": str(readonly)})
        assert policyroute_lab.snapshot() == before
    finally:
        run(["umount", str(readonly)])
