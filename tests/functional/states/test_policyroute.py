"""policyroute states and the ``policyroute`` SLS against the real kernel, in network namespaces.

Each case runs in real mode and with ``test=True`` (the ``testmode`` fixture).
"""

import configparser
import json
import os

import pytest

from lab.netns import ip

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def loaders_pillar(policyroute_pillar):
    return {"policyroute": policyroute_pillar}


def test_managed_whole_pillar(states, modules, policyroute_lab, testmode):
    expected = modules.policyroute.diff()
    before = policyroute_lab.snapshot()
    ret = states.policyroute.managed(name="webfarm", test=testmode)
    assert ret.changes == expected
    assert len(ret.changes["rules"]["added"]) == 2
    if testmode:
        assert ret.result is None
        assert ret.comment.startswith("Would have changed: ")
        assert policyroute_lab.snapshot() == before
        return
    assert ret.result is True
    assert "via 85.14.228.254" in policyroute_lab.route_get("198.51.100.1", src="85.14.228.248")
    again = states.policyroute.managed(name="webfarm")
    assert again.result is True and again.changes == {}
    assert again.comment == "Policy routing is already as wanted"


def test_managed_one_table_leaves_the_rest(states, policyroute_lab, testmode):
    web = policyroute_lab.web
    ret = states.policyroute.managed(name="uplink1 only", table="uplink1", test=testmode)
    assert ret.result is (None if testmode else True)
    assert all("table uplink1" in route for route in ret.changes["routes"]["added"])
    main = ip(web, "route").stdout
    assert "default" not in main
    rules = ip(web, "rule").stdout
    assert ("lookup uplink1" in rules) is not testmode


def test_managed_bad_input_is_a_failed_state(states, policyroute_pillar, policyroute_lab, testmode):
    before = policyroute_lab.snapshot()
    tables = {"bad": {**policyroute_pillar["tables"]["uplink1"], "id": 254}}
    ret = states.policyroute.managed(
        name="bad", tables=tables, netns=policyroute_pillar["netns"], test=testmode
    )
    assert ret.result is False
    assert "reserved (main)" in ret.comment
    assert ret.changes == {}
    assert policyroute_lab.snapshot() == before


def test_absent_removes_a_table(states, modules, policyroute_lab, testmode):
    modules.policyroute.apply()
    before = policyroute_lab.snapshot()
    ret = states.policyroute.absent(name="uplink1", test=testmode)
    assert sorted(ret.changes["rules"]["removed"]) == [
        "priority 1000 from 2001:db8:85::248/128 lookup uplink1",
        "priority 1000 from 85.14.228.248/32 lookup uplink1",
    ]
    if testmode:
        assert ret.result is None
        assert policyroute_lab.snapshot() == before
        return
    assert ret.result is True
    assert "lookup uplink1" not in ip(policyroute_lab.web, "rule").stdout
    again = states.policyroute.absent(name="uplink1")
    assert again.result is True and again.changes == {}


def test_routing_sls_applies_and_persists(
    modules, policyroute_pillar, policyroute_lab, tmp_path, testmode
):
    sls_pillar = {
        "policyroute": {
            **policyroute_pillar,
            "persist_dir": str(tmp_path / "webfarm"),
            "systemd_dir": str(tmp_path / "systemd"),
        }
    }
    ret = modules.state.sls("policyroute", pillar=sls_pillar, test=testmode)
    assert isinstance(ret.raw, dict), ret.raw
    results = {entry["__id__"]: entry for entry in ret.raw.values()}
    unit = tmp_path / "systemd" / "webfarm-policyroute.service"
    saved = tmp_path / "webfarm" / "policyroute.json"
    if testmode:
        assert all(entry["result"] is not False for entry in results.values()), results
        assert results["policyroute-managed"]["result"] is None
        assert not unit.exists() and not saved.exists()
        return
    assert all(entry["result"] is True for entry in results.values()), results
    assert "lookup uplink1" in ip(policyroute_lab.web, "rule").stdout
    assert json.loads(saved.read_text())["tables"]["uplink1"]["id"] == 1
    assert f"config_file={saved}" in unit.read_text()
    link = tmp_path / "systemd" / "multi-user.target.wants" / "webfarm-policyroute.service"
    assert os.readlink(link) == str(unit)


NETWORKD = "/lib/systemd/systemd-networkd"


@pytest.mark.parametrize("networkd", [True, False, "auto"])
def test_routing_sls_networkd_drop_in(
    modules, policyroute_pillar, policyroute_lab, tmp_path, testmode, networkd
):
    conf_dir = tmp_path / "networkd.conf.d"
    sls_pillar = {
        "policyroute": {
            **policyroute_pillar,
            "persist_dir": str(tmp_path / "webfarm"),
            "systemd_dir": str(tmp_path / "systemd"),
            "networkd": networkd,
            "networkd_conf_dir": str(conf_dir),
        }
    }
    ret = modules.state.sls("policyroute", pillar=sls_pillar, test=testmode)
    results = {entry["__id__"]: entry for entry in ret.raw.values()}
    drop_in = conf_dir / "50-webfarm-policyroute.conf"
    # auto: this machine's PID 1 is not systemd, so networkd is not active and nothing is written.
    if networkd is not True:
        assert "policyroute-networkd-keeps-foreign" not in results
        assert not conf_dir.exists()
        return
    entry = results["policyroute-networkd-keeps-foreign"]
    if testmode:
        assert entry["result"] is None and not drop_in.exists()
        assert entry["changes"] == {"newfile": str(drop_in)}
        return
    assert all(e["result"] is True for e in results.values()), results
    # The drop-in is in place before the rules are applied.
    assert entry["__run_num__"] < results["policyroute-managed"]["__run_num__"]
    parser = configparser.ConfigParser()
    parser.optionxform = str
    parser.read_string(drop_in.read_text())
    settings = dict(parser["Network"])
    assert settings == {"ManageForeignRoutingPolicyRules": "no", "ManageForeignRoutes": "no"}
    if os.path.exists(NETWORKD):
        # Every key is one this machine's networkd parses (its gperf table names them).
        binary = open(NETWORKD, "rb").read()
        for key in settings:
            assert f"Network.{key}".encode() in binary, key
    again = modules.state.sls("policyroute", pillar=sls_pillar)
    assert all(not e["changes"] for e in again.raw.values()), again.raw


def test_boot_unit_command_restores_routing(modules, policyroute_pillar, policyroute_lab, tmp_path):
    """What the unit runs at boot (apply from the saved file, no pillar) restores everything."""
    saved = tmp_path / "policyroute.json"
    saved.write_text(json.dumps(policyroute_pillar))
    modules.policyroute.apply()
    applied = policyroute_lab.snapshot()
    modules.policyroute.apply(tables={}, default={}, netns=policyroute_pillar["netns"])
    assert "lookup uplink1" not in ip(policyroute_lab.web, "rule").stdout
    modules.policyroute.apply(config_file=str(saved))
    assert policyroute_lab.snapshot() == applied
