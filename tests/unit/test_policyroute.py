import ipaddress

import pytest

import webfarm_policyroute as pr
from webfarm_policyroute import AF_INET, AF_INET6, MAIN, Op, PolicyRouteError, Route, Rule

SEED = {
    "default": {"gateway": "10.12.0.254", "dev": "eth0"},
    "tables": {
        "uplink1": {
            "id": 1,
            "gateway": "85.14.228.254",
            "dev": "eth1",
            "sources": ["85.14.228.248"],
            "priority": 1000,
        }
    },
}

LINKS = {
    "lo": [ipaddress.ip_interface("127.0.0.1/8")],
    "eth0": [ipaddress.ip_interface("10.12.0.1/24"), ipaddress.ip_interface("2001:db8:12::1/64")],
    "eth1": [ipaddress.ip_interface("85.14.228.248/24")],
}


def test_parse_seed():
    desired = pr.parse(SEED)
    assert desired.routes == [
        Route(AF_INET, MAIN, "0.0.0.0/0", 0, "10.12.0.254", "eth0"),
        Route(AF_INET, 1, "0.0.0.0/0", 0, "85.14.228.254", "eth1"),
    ]
    assert desired.rules == [Rule(AF_INET, "85.14.228.248/32", 1, 1000)]
    assert desired.names == {1: "uplink1"}


def test_parse_ipv6_and_extra_routes():
    desired = pr.parse(
        {
            "tables": {
                "v6": {
                    "id": 300,
                    "gateway": ["2001:db8:12::254", "10.12.0.254"],
                    "dev": "eth0",
                    "sources": ["2001:db8:85::/64", "10.1.0.0/16"],
                    "priority": 2000,
                    "routes": [{"dst": "192.0.2.0/24", "gateway": "10.12.0.253", "metric": 5}],
                }
            }
        }
    )
    assert Route(AF_INET6, 300, "::/0", 1024, "2001:db8:12::254", "eth0") in desired.routes
    assert Route(AF_INET, 300, "192.0.2.0/24", 5, "10.12.0.253", "eth0") in desired.routes
    assert Rule(AF_INET6, "2001:db8:85::/64", 300, 2000) in desired.rules


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sources": ["85.14.228.300"]}, "not an IP"),
        ({"sources": ["85.14.228.1/24"]}, "host bits"),
        ({"gateway": "gw.example"}, "not an IP"),
        ({"id": 0}, "between 1 and 4294967295"),
        ({"id": 253}, "reserved \\(default\\)"),
        ({"id": 254}, "reserved \\(main\\)"),
        ({"id": 255}, "reserved \\(local\\)"),
        ({"id": 2**32}, "between 1 and 4294967295"),
        ({"id": "one"}, "must be an integer"),
        ({"priority": 999}, "between 1000 and 9999"),
        ({"priority": 32766}, "between 1000 and 9999"),
        ({"sources": ["2001:db8::1"]}, "no IPv6 route"),
        ({"sources": ["0.0.0.0/0"]}, "matches everything"),
        ({"gateway": ["85.14.228.254", "85.14.228.253"]}, "two IPv4 gateways"),
        ({"dev": None}, "a gateway needs dev"),
        ({"colour": "red"}, "unknown keys \\['colour'\\]"),
        ({"routes": [{"dst": "192.0.2.0/24", "gateway": "2001:db8::1"}]}, "differ in family"),
        (
            {"routes": [{"dst": "0.0.0.0/0", "gateway": "85.14.228.253"}]},
            "give default routes with the table's gateway",
        ),
    ],
)
def test_parse_rejects_bad_table(change, message):
    config = {"tables": {"uplink1": {**SEED["tables"]["uplink1"], **change}}}
    with pytest.raises(PolicyRouteError, match=message):
        pr.parse(config)


def test_parse_rejects_duplicates_and_bad_names():
    base = SEED["tables"]["uplink1"]
    with pytest.raises(PolicyRouteError, match="also a source of table uplink1"):
        pr.parse({"tables": {"uplink1": base, "uplink2": {**base, "id": 2}}})
    with pytest.raises(PolicyRouteError, match="also used by uplink1"):
        pr.parse({"tables": {"uplink1": base, "uplink2": {**base, "sources": []}}})
    for name in ("main", "1st", "has space"):
        with pytest.raises(PolicyRouteError, match="table name"):
            pr.parse({"tables": {name: base}})
    with pytest.raises(PolicyRouteError, match="needs gateway and dev"):
        pr.parse({"default": {"gateway": "10.12.0.254"}})
    with pytest.raises(PolicyRouteError, match="must be a mapping"):
        pr.parse(["tables"])


def test_check_system_devices_gateways_and_foreign_routes():
    desired = pr.parse(SEED)
    pr.check_system(desired, LINKS, [])
    with pytest.raises(PolicyRouteError, match="unknown device 'eth1'"):
        pr.check_system(desired, {"eth0": LINKS["eth0"]}, [])
    off_net = pr.parse({"default": {"gateway": "10.13.0.254", "dev": "eth0"}})
    with pytest.raises(PolicyRouteError, match="not on a network connected to eth0"):
        pr.check_system(off_net, LINKS, [])
    own_address = pr.parse({"default": {"gateway": "10.12.0.1", "dev": "eth0"}})
    with pytest.raises(PolicyRouteError, match="not on a network"):
        pr.check_system(own_address, LINKS, [])
    link_local = pr.parse({"default": {"gateway": "fe80::1", "dev": "eth1"}})
    pr.check_system(link_local, LINKS, [])
    dhcp_default = Route(AF_INET, MAIN, "0.0.0.0/0", 0, "10.12.0.9", "eth0")
    with pytest.raises(PolicyRouteError, match="not owned by webfarm"):
        pr.check_system(desired, LINKS, [dhcp_default])
    pr.check_system(desired, LINKS, [Route(AF_INET, MAIN, "0.0.0.0/0", 100, "10.12.0.9", "eth0")])


def test_plan_orders_routes_before_rules_on_add_and_rules_first_on_delete():
    desired = pr.parse(SEED)
    plan = pr.plan(desired, [], [])
    assert [(o.action, type(o.item).__name__) for o in plan.ops] == [
        ("add", "Route"),
        ("add", "Route"),
        ("add", "Rule"),
    ]
    removal = pr.plan(pr.parse({"tables": {}}), desired.routes, desired.rules)
    assert [(o.action, type(o.item).__name__) for o in removal.ops] == [
        ("delete", "Rule"),
        ("delete", "Route"),
        ("delete", "Route"),
    ]


def test_plan_is_empty_when_current_matches():
    desired = pr.parse(SEED)
    plan = pr.plan(desired, list(desired.routes), list(desired.rules))
    assert not plan
    assert plan.changes() == {}


def test_plan_replaces_a_changed_gateway_and_moves_a_source():
    desired = pr.parse(SEED)
    old_route = Route(AF_INET, 1, "0.0.0.0/0", 0, "85.14.228.253", "eth1")
    old_rule = Rule(AF_INET, "85.14.228.248/32", 7, 1000)
    plan = pr.plan(desired, [desired.routes[0], old_route], [old_rule], names={7: "old"})
    assert [o.action for o in plan.ops] == ["replace", "add", "delete"]
    assert plan.changes() == {
        "routes": {
            "changed": [
                {
                    "old": "default via 85.14.228.253 dev eth1 table uplink1",
                    "new": "default via 85.14.228.254 dev eth1 table uplink1",
                }
            ]
        },
        "rules": {
            "added": ["priority 1000 from 85.14.228.248/32 lookup uplink1"],
            "removed": ["priority 1000 from 85.14.228.248/32 lookup old"],
        },
    }


def test_plan_scope_leaves_other_tables_alone():
    desired = pr.parse(SEED)
    other = Rule(AF_INET, "10.0.0.1/32", 9, 1500)
    other_route = Route(AF_INET, 9, "0.0.0.0/0", 0, "10.12.0.254", "eth0")
    plan = pr.plan(desired, [other_route], [other], scope={1})
    assert {o.item.table for o in plan.ops} == {1}
    assert all(o.action == "add" for o in plan.ops)


class FakeKernel:
    """Applies ops to sets, failing the ops listed in ``refuse``."""

    def __init__(self, refuse=()):
        self.routes, self.rules, self.refuse, self.batches = set(), set(), set(refuse), []

    def send(self, batch):
        self.batches.append(list(batch))
        errors = []
        for op in batch:
            store = self.routes if isinstance(op.item, Route) else self.rules
            if op in self.refuse:
                errors.append("EEXIST: File exists")
                continue
            if op.action == "add":
                store.add(op.item)
            elif op.action == "delete":
                store.remove(op.item)
            else:
                store.remove(op.old)
                store.add(op.item)
            errors.append(None)
        return errors


def test_execute_applies_in_phase_batches():
    desired = pr.parse(SEED)
    kernel = FakeKernel()
    outcome = pr.execute(pr.plan(desired, [], []).ops, kernel.send, batch_size=1)
    assert outcome.ok
    assert kernel.routes == set(desired.routes) and kernel.rules == set(desired.rules)
    assert [len(b) for b in kernel.batches] == [1, 1, 1]


def test_execute_rolls_back_in_reverse_on_error():
    desired = pr.parse(SEED)
    ops = pr.plan(desired, [], []).ops
    kernel = FakeKernel(refuse=[ops[-1]])
    outcome = pr.execute(ops, kernel.send)
    assert not outcome.ok
    assert outcome.failed == [(ops[-1], "EEXIST: File exists")]
    assert outcome.rolled_back == [Op("delete", ops[1].item), Op("delete", ops[0].item)]
    assert kernel.routes == set() and kernel.rules == set()
    assert outcome.rollback_errors == []


def test_execute_rolls_back_replacements_and_deletes(monkeypatch):
    desired = pr.parse(SEED)
    old_route = Route(AF_INET, 1, "0.0.0.0/0", 0, "85.14.228.253", "eth1")
    stale = Rule(AF_INET, "10.9.9.9/32", 1, 1000)
    kernel = FakeKernel()
    kernel.routes = {desired.routes[0], old_route}
    kernel.rules = {stale}
    before = (set(kernel.routes), set(kernel.rules))
    ops = pr.plan(desired, list(kernel.routes), [stale]).ops

    def crash(batch):
        if batch[0].action == "delete":
            raise OSError("boom")

    monkeypatch.setattr(pr, "before_batch_hook", crash)
    outcome = pr.execute(ops, kernel.send)
    assert outcome.failed and "OSError: boom" in outcome.failed[0][1]
    assert (kernel.routes, kernel.rules) == before


def test_rt_tables_render_and_parse_round_trip():
    text = pr.render_rt_tables({300: "v6", 1: "uplink1"})
    assert text.splitlines()[1:] == ["1\tuplink1", "300\tv6"]
    assert pr.parse_rt_tables(text + "junk\n# 5 x\n") == {1: "uplink1", 300: "v6"}
    assert pr.render_rt_protos().endswith("77\twebfarm\n")
    assert pr.resolve_table("uplink1", {1: "uplink1"}) == 1
    assert pr.resolve_table("42", {}) == 42
    with pytest.raises(PolicyRouteError, match="unknown table"):
        pr.resolve_table("nope", {1: "uplink1"})


def test_ownership():
    assert pr.owned_rule(77, 1000)
    assert not pr.owned_rule(0, 1000)
    assert not pr.owned_rule(77, 500)
    assert not pr.owned_rule(77, 32766)


@pytest.mark.parametrize(
    "version, ok",
    [
        ("0.9.7", True),
        ("0.7.2", True),
        ("0.7.2.post1", True),
        ("1.0", True),
        ("0.7.1", False),
        ("0.7.0", False),
        ("0.6.13", False),
        ("unknown", False),
    ],
)
def test_pyroute2_without_the_rule_table_defect_is_required(version, ok):
    assert pr.pyroute2_supported(version) is ok
