import copy
import re

import pytest
import yaml

import webfarm_haproxy as wh
from lab import defaults

DEFAULTS = defaults.load("haproxy")


def topo():
    return {
        "primary_lb": [{"id": "lb-primary", "address": "10.0.0.10", "port": 80}],
        "sites": {
            "s1": {
                "lbs": [
                    {"id": "lb-s1", "address": "10.0.1.10", "port": 80},
                    {"id": "lb-s1b", "address": "10.0.1.9", "port": 80},
                ],
                "farms": {
                    "f1": {
                        "members": {
                            1: {"id": "web-s1-f1-m1", "address": "10.0.1.11", "port": 80},
                            2: {"id": "web-s1-f1-m2", "address": "10.0.1.12", "port": 80},
                        }
                    },
                    "f2": {
                        "members": {
                            "1": {"id": "web-s1-f2-m1", "address": "10.0.1.21", "port": 8080}
                        }
                    },
                },
            },
            "s2": {
                "lbs": [{"id": "lb-s2", "address": "10.0.2.10", "port": 80}],
                "farms": {"f1": {"members": {1: {"id": "web-s2-f1-m1", "address": "10.0.2.11"}}}},
            },
        },
    }


def settings(tier, **override):
    return wh.tier_settings({"user": "", "group": "", **override}, tier, DEFAULTS)


def test_validate_normalises_member_keys_ports_and_weights():
    clean = wh.validate_topology(topo())
    f2 = clean["sites"]["s1"]["farms"]["f2"]["members"]
    assert list(f2) == [1]
    assert f2[1] == {"id": "web-s1-f2-m1", "address": "10.0.1.21", "port": 8080, "weight": 100}
    assert clean["sites"]["s2"]["farms"]["f1"]["members"][1]["port"] == 80


def test_example_pillar_topology_is_valid(repo_root):
    with open(repo_root / "pillar" / "webfarm" / "topology.sls", encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    clean = wh.validate_topology(data["webfarm"]["topology"])
    assert set(clean["sites"]) == {"s1", "s2"}
    assert clean["db"]["primary"]["id"] == "db-primary"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (
            lambda t: t["sites"]["s1"]["farms"]["f2"]["members"].update(
                {"2": {"id": "x", "address": "10.0.1.11", "port": 80}}
            ),
            "sites.s1.farms.f2.members.2: duplicate server 10.0.1.11:80 (already sites.s1.farms.f1.members.1)",
        ),
        (
            lambda t: t["sites"]["s1"]["farms"].update({"f3": {"members": {}}}),
            "sites.s1.farms.f3: farm without members",
        ),
        (
            lambda t: t["sites"]["s1"]["farms"].update({"f3": None}),
            "sites.s1.farms.f3: farm without members",
        ),
        (
            lambda t: t["sites"]["s1"]["farms"]["f1"]["members"][2].update(address="10.0.1.300"),
            "sites.s1.farms.f1.members.2: bad address '10.0.1.300' (must be an IP address)",
        ),
        (
            lambda t: t["sites"]["s1"]["farms"]["f1"]["members"][2].update(port=70000),
            "bad port 70000",
        ),
        (
            lambda t: t["sites"]["s1"]["farms"]["f1"]["members"][2].update(id="web-s1-f1-m1"),
            "duplicate id 'web-s1-f1-m1'",
        ),
        (lambda t: t["sites"]["s2"].update(lbs=[]), "sites.s2: site has no lbs"),
        (lambda t: t["sites"]["s2"].update(farms={}), "sites.s2: site has no farms"),
        (lambda t: t["sites"].update({"s/3": t["sites"]["s2"]}), "site name 's/3'"),
        (
            lambda t: t["sites"]["s1"]["farms"]["f1"]["members"].update(
                {0: {"address": "10.9.9.9"}}
            ),
            "member index 0",
        ),
        (lambda t: t.update(sites={}), "the topology has no sites"),
        (
            lambda t: t["sites"]["s1"]["farms"]["f1"]["members"][1].update(weight=999),
            "bad weight 999",
        ),
        (
            lambda t: t["sites"]["s1"]["farms"]["f1"]["members"][2].update(id=["web", "m2"]),
            "sites.s1.farms.f1.members.2: bad id ['web', 'm2'] (must be a minion id string)",
        ),
        (
            lambda t: t["sites"]["s1"]["farms"]["f1"]["members"][2].update(id={"name": "m2"}),
            "sites.s1.farms.f1.members.2: bad id {'name': 'm2'} (must be a minion id string)",
        ),
        (
            lambda t: t["sites"]["s1"]["farms"]["f1"]["members"][2].update(id=12),
            "sites.s1.farms.f1.members.2: bad id 12 (must be a minion id string)",
        ),
    ],
)
def test_validate_reports_clear_errors(mutate, message):
    bad = topo()
    mutate(bad)
    with pytest.raises(wh.TopologyError) as info:
        wh.validate_topology(bad)
    assert any(message in error for error in info.value.errors), info.value.errors
    assert str(info.value).startswith("invalid topology: ")


def test_validate_reports_every_problem_at_once():
    bad = topo()
    bad["sites"]["s1"]["farms"]["f1"]["members"][2]["address"] = "nope"
    bad["sites"]["s2"]["farms"]["f1"]["members"] = {}
    with pytest.raises(wh.TopologyError) as info:
        wh.validate_topology(bad)
    assert len(info.value.errors) == 2


def test_validate_does_not_modify_its_input():
    original = topo()
    before = copy.deepcopy(original)
    wh.validate_topology(original)
    assert original == before


def test_render_site_tier():
    clean = wh.validate_topology(topo())
    text = wh.render(clean, settings("site"), site="s1", binds=[("10.0.1.10", 80)])
    assert "    master-worker" in text
    assert "stats socket /run/haproxy/site.sock mode 600 level admin expose-fd listeners" in text
    assert "log /dev/log len 4096 local0" in text
    for directive in (
        "option forwardfor",
        "option redispatch",
        "option idle-close-on-response",
        "retries 3",
        "option httplog",
    ):
        assert f"    {directive}\n" in text
    assert "frontend lb_site_s1\n    bind 10.0.1.10:80\n" in text
    assert "use_backend farm_f1 if { req.cook(FARMID) -m str f1 } { nbsrv(farm_f1) gt 0 }" in text
    assert "cookie FARMID insert indirect nocache\n" in text
    # The pick backend: every member, cookie = farm, tracking the farm backend.
    assert "server f1_m2 10.0.1.12:80 cookie f1 weight 100 track farm_f1/f1_m2" in text
    assert "server f2_m1 10.0.1.21:8080 cookie f2 weight 100 track farm_f2/f2_m1" in text
    farm = text[text.index("backend farm_f1") :]
    assert "http-check send meth GET uri /\n" in farm
    assert "server f1_m1 10.0.1.11:80 check weight 100" in farm
    # Only s1's farms; no directive removed from current HAProxy.
    assert "10.0.2.11" not in text
    assert not re.search(r"\b(contimeout|clitimeout|srvtimeout|grace)\b", text)


def test_render_primary_tier_checks_site_lbs_monitor_uri():
    clean = wh.validate_topology(topo())
    text = wh.render(clean, settings("primary", postonly=True), binds=[("10.0.0.10", 80)])
    assert "cookie SITEID insert indirect nocache postonly" in text
    assert "server s1_lb2 10.0.1.9:80 cookie s1 weight 100 track site_s1/s1_lb2" in text
    site = text[text.index("backend site_s1") :]
    assert "http-check send meth GET uri /haproxy-health" in site
    assert "monitor fail if { nbsrv(pick_site) lt 1 }" in text


def test_render_needs_a_bind_and_a_known_site():
    clean = wh.validate_topology(topo())
    with pytest.raises(wh.TopologyError, match="no listen address"):
        wh.render(clean, settings("site"), site="s1", binds=[])
    with pytest.raises(wh.TopologyError, match="site 's9' is not in the topology"):
        wh.render(clean, settings("site"), site="s9", binds=[("10.0.1.10", 80)])


def test_settings_merge_and_bad_tier():
    merged = wh.tier_settings(
        {"timeouts": {"client": "1m"}, "site": {"socket": "/tmp/s"}}, "site", DEFAULTS
    )
    assert merged["timeouts"]["client"] == "1m" and merged["timeouts"]["connect"] == "5s"
    assert merged["socket"] == "/tmp/s" and merged["cookie"] == "FARMID"
    with pytest.raises(ValueError, match="tier"):
        wh.tier_settings({}, "edge", DEFAULTS)


def test_parse_bind():
    assert wh.parse_bind("127.0.0.1:8080") == [("127.0.0.1", 8080)]
    assert wh.parse_bind([{"address": "::1", "port": 80}, "[::1]:81"]) == [("::1", 80), ("::1", 81)]
    with pytest.raises(ValueError, match="bad bind"):
        wh.parse_bind("localhost:80")


def test_topology_from_mine():
    mine = {
        "lb-primary": {"webfarm": {"role": "lb-primary"}, "ipv4": ["127.0.0.1", "10.0.0.10"]},
        "lb-s1": {"webfarm": {"role": "lb-site", "site": "s1"}, "ipv4": ["10.0.1.10"]},
        "web-1": {
            "webfarm": {"role": "web", "site": "s1", "farm": "f1", "member": 1},
            "ipv4": ["127.0.0.1", "192.168.5.5", "10.0.1.11"],
        },
        "web-2": {
            "webfarm": {"role": "web", "site": "s1", "farm": "f1", "member": 2, "port": 8080},
            "ipv4": ["10.0.1.12"],
        },
        "db": {"webfarm": {"role": "db-primary"}, "ipv4": ["10.0.0.20"]},
    }
    raw = wh.topology_from_mine(mine, network="10.0.0.0/16")
    clean = wh.validate_topology(raw)
    assert clean["primary_lb"][0]["address"] == "10.0.0.10"
    members = clean["sites"]["s1"]["farms"]["f1"]["members"]
    assert members[1]["address"] == "10.0.1.11" and members[1]["id"] == "web-1"
    assert members[2]["port"] == 8080
    # Without a network: the first non-loopback address.
    assert wh.topology_from_mine(mine)["sites"]["s1"]["farms"]["f1"]["members"]["1"]["address"] == (
        "192.168.5.5"
    )


def test_topology_from_mine_duplicate_member():
    grains = {"role": "web", "site": "s1", "farm": "f1", "member": 1}
    mine = {
        "a": {"webfarm": grains, "ipv4": ["10.0.1.11"]},
        "b": {"webfarm": grains, "ipv4": ["10.0.1.12"]},
    }
    with pytest.raises(wh.TopologyError, match="mine b: duplicate server s1/f1/1 \\(already a\\)"):
        wh.topology_from_mine(mine)


STAT = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,"
    "wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,"
    "lbtot,tracked,type,rate,rate_lim,rate_max,check_status,\n"
    "lb_site_s1,FRONTEND,,,3,5,4096,90,0,0,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,0,0,3,,\n"
    "pick_farm,f1_m1,0,0,1,1,,10,0,0,,0,,0,0,0,0,MAINT,100,1,0,0,0,5,0,,1,3,1,,10,4,2,0,,1,,\n"
    "pick_farm,BACKEND,0,0,1,1,410,10,0,0,0,0,,0,0,0,0,UP,100,1,0,,0,5,0,,1,3,0,,10,,1,0,,1,,\n"
    "farm_f1,f1_m1,0,0,2,3,,40,0,0,,0,,0,0,0,0,DRAIN,100,1,0,0,0,5,0,,1,4,1,,40,,2,0,,2,L7OK,\n"
    "farm_f1,f1_m2,0,0,0,3,,41,0,0,,0,,0,0,0,0,UP,50,1,0,0,0,5,0,,1,4,2,,41,,2,0,,2,L7OK,\n"
)
STATE = (
    "1\n"
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health "
    "srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord "
    "srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n"
    "3 pick_farm 1 f1_m1 10.0.1.11 2 1 100 100 5 1 0 2 0 0 0 0 - 80 - 0 0 - - 0\n"
    "4 farm_f1 1 f1_m1 10.0.1.11 2 8 100 100 5 15 3 4 6 0 0 0 - 80 - 0 0 - - 0\n"
    "4 farm_f1 2 f1_m2 10.0.1.12 2 0 50 100 5 15 3 4 6 0 0 0 - 80 - 0 0 - - 0\n"
)


def test_group_servers_combines_stat_and_state():
    stat = wh.parse_show_stat(STAT)
    groups = wh.group_servers(stat, wh.parse_servers_state(STATE))
    assert set(groups) == {"f1"}
    m1 = groups["f1"]["f1_m1"]
    assert m1["admin"] == "drain" and m1["status"] == "DRAIN"
    assert m1["sessions"] == 3  # 2 in farm_f1 + 1 in pick_farm
    assert m1["total"] == 50
    assert m1["address"] == "10.0.1.11" and m1["port"] == 80 and m1["backend"] == "farm_f1"
    assert m1["pick_admin"] == "maint"
    assert groups["f1"]["f1_m2"]["weight"] == 50 and groups["f1"]["f1_m2"]["admin"] == "ready"
    assert wh.frontend_site(stat) == "s1"


@pytest.mark.parametrize(
    "bits, state",
    [(0, "ready"), (8, "drain"), (16, "drain"), (1, "maint"), (9, "maint"), (2, "maint")],
)
def test_admin_state(bits, state):
    assert wh.admin_state(bits) == state


def test_parsers_reject_garbage():
    with pytest.raises(ValueError, match="show stat"):
        wh.parse_show_stat("Unknown command\n")
    with pytest.raises(ValueError, match="show servers state"):
        wh.parse_servers_state("Permission denied\n")


def test_diff():
    assert wh.diff("a\n", "a\n") == ""
    assert "+b" in wh.diff("a\n", "a\nb\n") and wh.diff(None, "x\n").count("+x") == 1


# --------------------------------------------------------------------------- VIPs and VRRP


def vip_topo():
    data = topo()
    data["primary_lb"].append({"id": "lb-primary-b", "address": "10.0.0.11", "port": 80})
    data["primary_vip"] = {"address": "10.0.0.9", "vrid": 50}
    data["sites"]["s1"]["vip"] = {"address": "10.0.1.8", "port": 80, "vrid": 51, "prefix": 24}
    return data


def test_vips_are_validated_and_normalised():
    clean = wh.validate_topology(vip_topo())
    assert clean["primary_vip"] == {
        "address": "10.0.0.9", "port": 80, "vrid": 50, "prefix": 24, "interface": None,
    }  # fmt: skip
    assert wh.tier_vip(clean, "site", "s1")["address"] == "10.0.1.8"
    assert wh.tier_vip(clean, "site", "s2") is None


@pytest.mark.parametrize(
    ("vip", "message"),
    [
        ({"address": "10.0.1.300", "vrid": 51}, "bad address"),
        ({"address": "10.0.1.8", "vrid": 0}, "vrid 0 must be an integer 1-255"),
        ({"address": "10.0.1.8", "vrid": 50}, "vrid 50 is already used by sites.s1.vip"),
        ({"address": "10.0.1.10", "vrid": 51}, "is also an LB's own address"),
        ({"address": "10.0.1.8", "vrid": 51, "prefix": 33}, "prefix 33 must be"),
        ({"address": "10.0.1.8", "vrid": 51, "interface": "eth0; rm"}, "bad interface"),
        ("10.0.1.8", "expected a mapping"),
    ],
)
def test_bad_vips_are_reported(vip, message):
    data = vip_topo()
    data["sites"]["s1"]["vip"] = vip
    with pytest.raises(wh.TopologyError, match=re.escape(message)):
        wh.validate_topology(data)


def test_primary_tier_balances_a_site_with_a_vip_as_one_server():
    clean = wh.validate_topology(vip_topo())
    text = wh.render(clean, settings("primary"), binds=[("10.0.0.10", 80), ("10.0.0.9", 80, True)])
    assert "    bind 10.0.0.10:80\n    bind 10.0.0.9:80 transparent\n" in text
    # s1 (two LBs behind 10.0.1.8) is one server, with a long fall: a VRRP failover of the
    # site tier must not send s1's sticky clients to s2; s2 has no VIP: its LB as before.
    assert "    server s1_vip 10.0.1.8:80 check weight 100 fall 5" in text
    assert "s1_lb1" not in text and "s1_lb2" not in text
    assert "    server s2_lb1 10.0.2.10:80 check weight 100\n" in text


def test_tuning_from_pillar_is_rendered():
    text = wh.render(
        wh.validate_topology(topo()),
        settings("site", maxconn=50000, nbthread=2, backlog=8192, tune={"maxaccept": 64}),
        site="s1",
        binds=[("10.0.1.10", 80)],
    )
    assert "    maxconn 50000\n    nbthread 2\n    tune.maxaccept 64\n" in text
    defaults = text.split("\ndefaults\n")[1].split("\n\n")[0]
    assert "    maxconn 50000" in defaults and "    backlog 8192" in defaults
    with pytest.raises(wh.TopologyError, match="bad haproxy:tune"):
        wh.render(
            wh.validate_topology(topo()),
            settings("site", tune={"bufsize": "1\n    stats socket /tmp/x"}),
            site="s1",
            binds=[("10.0.1.10", 80)],
        )


def vrrp(**extra):
    """VRRPv2 with a password (the pillar's opt-in); ``vrrp3`` is the default."""
    return wh.vrrp_settings(
        {"vrrp": {"version": 2, "advert_int": 1, "auth_pass": "s3cret", **extra}}, DEFAULTS
    )


def vrrp3(**extra):
    return wh.vrrp_settings({"vrrp": extra}, DEFAULTS)


def test_keepalived_config_of_each_lb_differs_only_in_its_own_parts():
    clean = wh.validate_topology(vip_topo())
    a = wh.render_vrrp(clean, "lb-primary", vrrp())
    b = wh.render_vrrp(clean, "lb-primary-b", vrrp())
    assert "vrrp_instance primary {" in a and "virtual_router_id 50" in a
    assert "    priority 150\n" in a and "    priority 140\n" in b
    assert "        10.0.0.9/24 dev eth0\n" in a
    assert (
        "    check_unicast_src\n    unicast_src_ip 10.0.0.10\n"
        "    unicast_peer {\n        10.0.0.11\n    }"
    ) in a
    assert '"/usr/bin/curl -s -o /dev/null -m 1 http://10.0.0.11:80/haproxy-health"' in b
    assert "    nopreempt\n" in a and "        auth_pass s3cret\n" in a
    assert "    version 2\n    advert_int 1\n" in a
    # a site LB: its own site's instance only
    s1 = wh.render_vrrp(clean, "lb-s1b", vrrp(priorities={"lb-s1b": 200}, preempt=True))
    assert "vrrp_instance site_s1 {" in s1 and "vrrp_instance primary" not in s1
    assert "    priority 200\n" in s1 and "nopreempt" not in s1


@pytest.mark.parametrize(
    ("minion", "extra", "message"),
    [
        ("lb-s2", {}, "no LB of a tier with a vip"),
        ("lb-primary", {"auth_pass": None}, "auth_pass (the VRRP password) is not set"),
        ("lb-primary", {"auth_pass": "123456789"}, "1-8 printable characters"),
        ("lb-primary", {"priorities": {"lb-primary": 255}}, "is not 1-254"),
        ("lb-primary", {"advert_int": 0.5}, "advert_int 0.5 must be 1-255 whole seconds"),
        ("lb-primary", {"version": 4}, "haproxy:vrrp:version 4 must be 2 or 3"),
        ("lb-primary", {"interface": "eth0 x"}, "bad haproxy:vrrp:interface"),
    ],
)
def test_bad_vrrp_settings_are_reported_without_the_secret(minion, extra, message):
    clean = wh.validate_topology(vip_topo())
    with pytest.raises(wh.TopologyError, match=re.escape(message)) as info:
        wh.render_vrrp(clean, minion, vrrp(**extra))
    assert "s3cret" not in str(info.value)


def test_vrrp3_is_the_default_sub_second_without_authentication_peers_from_the_topology():
    clean = wh.validate_topology(vip_topo())
    assert DEFAULTS["vrrp"]["version"] == 3 and DEFAULTS["vrrp"]["advert_int"] == 0.5
    a = wh.render_vrrp(clean, "lb-primary", vrrp3())
    b = wh.render_vrrp(clean, "lb-primary-b", vrrp3())
    assert "    version 3\n    advert_int 0.5\n" in a
    assert "authentication" not in a and "auth_pass" not in a and "auth_type" not in a
    for text, me, peer in ((a, "10.0.0.10", "10.0.0.11"), (b, "10.0.0.11", "10.0.0.10")):
        assert (
            f"    check_unicast_src\n    unicast_src_ip {me}\n"
            f"    unicast_peer {{\n        {peer}\n    }}"
        ) in text
    assert "    advert_int 0.25\n" in wh.render_vrrp(clean, "lb-primary", vrrp3(advert_int=0.25))
    assert "    advert_int 2\n" in wh.render_vrrp(clean, "lb-primary", vrrp3(advert_int=2))
    # v2 only when asked, and then with whole seconds and the password
    v2 = wh.render_vrrp(clean, "lb-primary", vrrp())
    assert "    version 2\n" in v2 and "auth_type PASS" in v2
    assert a.replace("version 3\n    advert_int 0.5", "version 2\n    advert_int 1").replace(
        "    check_unicast_src\n", "    authentication {\n        auth_type PASS\n"
        "        auth_pass s3cret\n    }\n    check_unicast_src\n"
    ) == v2  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"auth_pass": "s3cret"},
            "haproxy:vrrp:auth_pass is set but haproxy:vrrp:version is 3",
        ),
        ({"version": 3, "auth_pass": "s3cret"}, "or set haproxy:vrrp:version: 2"),
        ({"advert_int": 0.005}, "advert_int 0.005 must be 0.01-40.95 seconds with version 3"),
        ({"advert_int": 41}, "advert_int 41 must be 0.01-40.95"),
        ({"advert_int": "fast"}, "advert_int 'fast' must be 0.01-40.95"),
        ({"version": 2, "advert_int": 1}, "auth_pass (the VRRP password) is not set"),
        ({"version": "3"}, "haproxy:vrrp:version '3' must be 2 or 3"),
    ],
)
def test_vrrp3_with_a_password_or_bad_adverts_is_an_error_without_the_secret(extra, message):
    clean = wh.validate_topology(vip_topo())
    with pytest.raises(wh.TopologyError, match=re.escape(message)) as info:
        wh.render_vrrp(clean, "lb-primary", vrrp3(**extra))
    assert "s3cret" not in str(info.value)


def test_mask_secret_masks_config_and_diff_lines():
    text = "    auth_pass abc\n+        auth_pass def\n-  auth_pass ghi\nauth_type PASS\n"
    masked = wh.mask_secret(text)
    assert "abc" not in masked and "def" not in masked and "ghi" not in masked
    assert masked.count("auth_pass ********") == 3 and "auth_type PASS" in masked


def test_sysctl_wanted_defaults_overrides_and_bad_values():
    wanted = wh.sysctl_wanted(
        {"sysctl": {"net.core.somaxconn": 4096, "fs.nr_open": None}}, DEFAULTS
    )
    assert wanted["net.core.somaxconn"] == "4096"
    assert "fs.nr_open" not in wanted
    assert wanted["net.ipv4.tcp_syncookies"] == "1"
    for bad in ({"net.core.somaxconn": "1; reboot"}, {"bad key": 1}, {"a.b": True}):
        with pytest.raises(ValueError):
            wh.sysctl_wanted({"sysctl": bad}, DEFAULTS)
    text = wh.sysctl_file({"b.c": "1\t2", "a.b": "3"})
    assert text.splitlines()[1:] == ["a.b = 3", "b.c = 1 2"]
