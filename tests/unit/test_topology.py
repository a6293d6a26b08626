"""The topology walkers (salt/_utils/webfarm_topology.py) on plain data and the example pillar."""

import json
from pathlib import Path

import pytest
import yaml

import webfarm_topology as wt

EXAMPLE = Path(__file__).resolve().parents[2] / "pillar" / "webfarm" / "topology.sls"

SMALL = {
    "primary_lb": [{"id": "lbp", "address": "10.0.0.10"}],
    "primary_vip": {"address": "10.0.0.100", "vrid": 1},
    "sites": {
        "s2": {
            "lbs": [{"id": "lb2", "address": "10.2.0.10"}],
            "farms": {"f1": {"members": {2: {"id": "w2b"}, 1: {"id": "w2a"}}}},
        },
        "s1": {
            "lbs": [{"id": "lb1a"}, {"id": "lb1b"}],
            "vip": {"address": "10.1.0.100", "vrid": 2},
            "farms": {
                "f2": {"memcached": {"address": "10.1.2.11"}, "members": {1: {"id": "w1"}}},
                "f9": None,
            },
        },
    },
    "db": {"primary": {"id": "db1"}, "replicas": [{"id": "db2"}, {"id": "db3"}]},
    "monitor": {"id": "mon"},
    "logstore": {"id": "log"},
    "preprod": [{"id": "pp1"}],
    "minions": {"web9": "web", 7: ["web", "monitor", "", None]},
}


@pytest.fixture(scope="module")
def example():
    return yaml.safe_load(EXAMPLE.read_text())["webfarm"]["topology"]


def test_entries_of_a_slot():
    one = {"id": "a"}
    assert wt.entries(one) == [one]
    assert wt.entries([one, {}, None, "b", {"id": "c"}]) == [one, {"id": "c"}]
    assert wt.entries((one,)) == [one]
    assert wt.entries({}) == [] and wt.entries(None) == [] and wt.entries("a") == []
    assert wt.entries([one])[0] is one  # the pillar's own entry, not a copy


def test_sites_farms_and_members_in_pillar_order():
    assert [site for site, _ in wt.sites(SMALL)] == ["s2", "s1"]
    assert [(s, f) for s, f, _ in wt.farms(SMALL)] == [("s2", "f1"), ("s1", "f2"), ("s1", "f9")]
    assert wt.farms(SMALL)[2][2] is None  # a farm with no value is still a farm
    assert [(s, f, n, e["id"]) for s, f, n, e in wt.members(SMALL)] == [
        ("s2", "f1", 2, "w2b"),
        ("s2", "f1", 1, "w2a"),
        ("s1", "f2", 1, "w1"),
    ]
    assert wt.farm_members(None) == [] and wt.farm_members({"members": ["x"]}) == []


def test_a_wrong_shape_is_skipped_not_an_error():
    broken = {
        "sites": {
            "bad": ["not", "a", "mapping"],
            "none": None,
            "s1": {"lbs": {"id": "lb1"}, "farms": ["x"]},
            "s2": {"farms": {"f1": {"members": {1: "junk", 2: {}, 3: {"id": "w3"}}}, "f2": 7}},
        },
        "db": "junk",
        "monitor": [{"id": "mon1"}, {"id": "mon2"}],
    }
    assert [site for site, _ in wt.sites(broken)] == ["s1", "s2"]
    assert [(n, e["id"]) for _, _, n, e in wt.members(broken)] == [(3, "w3")]
    assert [(role, e["id"]) for role, e, _ in wt.hosts(broken)] == [
        ("lb-site", "lb1"),  # a single LB without a list
        ("web", "w3"),
        ("monitor", "mon1"),
        ("monitor", "mon2"),
    ]
    for nothing in (None, [], "x", {}, {"sites": []}):
        assert wt.sites(nothing) == [] and wt.hosts(nothing) == []
        assert wt.tiers(nothing) == [("primary", None, [], None)]


def test_farm_of_a_site():
    assert wt.farm(SMALL, "s1", "f2")["memcached"] == {"address": "10.1.2.11"}
    assert wt.farm(SMALL, "s1", "f9") is None
    assert wt.farm(SMALL, "s1", "f1") is None and wt.farm(SMALL, "s3", "f1") is None
    assert wt.farm(SMALL, None, None) is None and wt.farm(None, "s1", "f2") is None
    assert wt.farm({"sites": {"s1": {"farms": {"f1": {}}}}}, "s1", "f1") == {}


def tier_ids(topology):
    """:func:`webfarm_topology.tiers` with LB ids and VRRP router ids for the entries."""
    return [
        (tier, site, [lb["id"] for lb in lbs], vip and vip["vrid"])
        for tier, site, lbs, vip in wt.tiers(topology)
    ]


def test_tiers_with_their_lbs_and_vips():
    assert tier_ids(SMALL) == [
        ("primary", None, ["lbp"], 1),
        ("site", "s2", ["lb2"], None),
        ("site", "s1", ["lb1a", "lb1b"], 2),
    ]
    assert wt.tiers(SMALL)[0][2][0] is SMALL["primary_lb"][0]


def test_hosts_with_their_roles_and_places():
    assert [(role, e["id"], where) for role, e, where in wt.hosts(SMALL)] == [
        ("lb-primary", "lbp", {}),
        ("lb-site", "lb2", {"site": "s2"}),
        ("web", "w2b", {"site": "s2", "farm": "f1", "member": 2}),
        ("web", "w2a", {"site": "s2", "farm": "f1", "member": 1}),
        ("lb-site", "lb1a", {"site": "s1"}),
        ("lb-site", "lb1b", {"site": "s1"}),
        ("web", "w1", {"site": "s1", "farm": "f2", "member": 1}),
        ("db-primary", "db1", {}),
        ("db-replica", "db2", {}),
        ("db-replica", "db3", {}),
        ("monitor", "mon", {}),
        ("logstore", "log", {}),
        ("preprod", "pp1", {}),
    ]
    # The same hosts, grouped as the three parts hosts() is made of.
    parts = wt.top_level_hosts(SMALL) + wt.site_hosts(SMALL) + wt.db_hosts(SMALL)
    assert sorted(e["id"] for _, e, _ in parts) == sorted(e["id"] for _, e, _ in wt.hosts(SMALL))
    assert [role for role, _, _ in wt.top_level_hosts(SMALL)] == [
        "lb-primary", "monitor", "logstore", "preprod",
    ]  # fmt: skip


def test_listed_minions():
    assert wt.listed_minions(SMALL) == [("web9", "web"), ("7", "web"), ("7", "monitor")]
    assert wt.listed_minions({"minions": ["web9"]}) == [] and wt.listed_minions(None) == []


def test_find_a_minion():
    assert wt.find(SMALL, "w1") == ("web", {"id": "w1"}, {"site": "s1", "farm": "f2", "member": 1})
    assert wt.find(SMALL, "nobody") is None and wt.find(SMALL, None) is None
    both = {"primary_lb": [{"id": "lb"}], "sites": {"s1": {"lbs": [{"id": "lb"}]}}}
    assert wt.find(both, "lb")[0] == "lb-primary"
    assert wt.find(both, "lb", role="lb-site")[2] == {"site": "s1"}
    assert wt.find(both, "lb", role="web") is None
    assert wt.find({"monitor": {"address": "10.0.0.30"}}, None) is None  # no id names no one


def test_the_example_pillar(example):
    assert tier_ids(example) == [
        ("primary", None, ["lb-primary", "lb-primary-b"], 71),
        ("site", "s1", ["lb-s1", "lb-s1b"], 72),
        ("site", "s2", ["lb-s2"], None),
    ]
    assert [(s, f, n, e["id"]) for s, f, n, e in wt.members(example)] == [
        (s, f, n, f"web-{s}-{f}-m{n}") for s in ("s1", "s2") for f in ("f1", "f2") for n in (1, 2)
    ]
    roles = [role for role, _, _ in wt.hosts(example)]
    assert roles == ["lb-primary"] * 2 + (["lb-site"] * 2 + ["web"] * 4) + (
        ["lb-site"] + ["web"] * 4
    ) + ["db-primary", "db-replica", "monitor", "logstore", "preprod"]
    ids = [e["id"] for _, e, _ in wt.hosts(example)]
    assert len(ids) == len(set(ids)) == 18
    assert wt.find(example, "web-s2-f1-m2")[2] == {"site": "s2", "farm": "f1", "member": 2}
    assert wt.find(example, "preprod-generic")[1]["hw_profile"] == "generic-x86_64"
    assert wt.farm(example, "s2", "f2")["memcached"] == {"address": "10.77.2.21", "port": 11211}
    assert wt.listed_minions(example) == []


def test_a_json_pillar_walks_the_same(example):
    """A ``#!json`` topology has string member keys; only the numbers' spelling differs."""
    as_json = json.loads(json.dumps(example))
    assert [n for _, _, n, _ in wt.members(as_json)] == ["1", "2"] * 4
    numbered = [
        (role, entry, {**where, "member": int(where["member"])} if "member" in where else where)
        for role, entry, where in wt.hosts(as_json)
    ]
    assert numbered == wt.hosts(example)
