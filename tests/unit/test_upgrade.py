"""Pure rollout logic: topology from grains, wave planning, reports, pkg calls, make.conf.

The Gentoo parts (``pkg_call`` on Gentoo, ``make_conf``) are checked here as data because
Gentoo cannot run on this Debian machine.
"""

import pytest

import webfarm_upgrade as wu


def grains(site, farm, member, role="web"):
    return {"webfarm": {"role": role, "site": site, "farm": farm, "member": member}}


def lab(sites=2, farms=2, members=2):
    out = {
        f"web-s{s}-f{f}-m{m}": grains(f"s{s}", f"f{f}", m)
        for s in range(1, sites + 1)
        for f in range(1, farms + 1)
        for m in range(1, members + 1)
    }
    out["lb-s1"] = grains("s1", None, None, role="lb-site")
    out["db"] = {"webfarm": {"role": "db-replica"}}
    return out


FARMS = wu.farms_from_grains(lab())


def named(grains, role="web"):
    """The master-side topology naming every minion of ``grains`` that claims ``role``."""
    return {"minions": {m: role for m, g in grains.items() if g["webfarm"].get("role") == role}}


def test_a_lying_minion_joins_no_wave():
    """It claims webfarm:role: web (site s1, farm f1, a free member slot) in its grains; the
    master's topology does not name it, or names it in another role: it is in no wave."""
    honest = lab(sites=1, farms=2, members=2)
    topology = named(honest)
    liar = {"webfarm": {"role": "web", "site": "s1", "farm": "f1", "member": 3}}
    for topo in (topology, {"minions": {**topology["minions"], "rogue": "monitor"}}):
        farm_map, waves = wu.plan_rollout({**honest, "rogue": liar}, wu.options("app", "3"), topo)
        assert farm_map == wu.farms_from_grains(honest)
        assert "rogue" not in {m["id"] for w in waves for s in w for m in s["members"]}
    # Named as a web server by the master, the same grains put it in farm s1/f1.
    topo = {"minions": {**topology["minions"], "rogue": "web"}}
    farm_map = wu.production_farms({**honest, "rogue": liar}, topo)
    assert farm_map["s1"]["f1"][3] == "rogue"


def test_a_topology_member_is_trusted_and_a_topology_is_required():
    topology = {
        "sites": {"s1": {"farms": {"f1": {"members": {"1": {"id": "web-s1-f1-m1"}}}}}},
    }
    grains_ = {"web-s1-f1-m1": grains("s1", "f1", 1), "web-s1-f1-m2": grains("s1", "f1", 2)}
    assert wu.production_farms(grains_, topology) == {"s1": {"f1": {1: "web-s1-f1-m1"}}}
    for missing in (None, {}, {"sites": {}}):
        with pytest.raises(wu.PlanError, match="no master-side topology"):
            wu.production_farms(grains_, missing)


def names(waves):
    return [[f"{s['site']}/{s['farm']}" for s in wave] for wave in waves]


def test_farms_from_grains_groups_web_servers_only():
    assert FARMS == {
        "s1": {
            "f1": {1: "web-s1-f1-m1", 2: "web-s1-f1-m2"},
            "f2": {1: "web-s1-f2-m1", 2: "web-s1-f2-m2"},
        },
        "s2": {
            "f1": {1: "web-s2-f1-m1", 2: "web-s2-f1-m2"},
            "f2": {1: "web-s2-f2-m1", 2: "web-s2-f2-m2"},
        },
    }


def test_farms_from_grains_reports_every_bad_minion():
    bad = {
        "a": grains("s1", "f1", 1),
        "b": grains("s1", "f1", "1"),
        "c": grains("s1", None, 2),
        "d": grains("s1", "f1", "two"),
    }
    with pytest.raises(wu.PlanError) as err:
        wu.farms_from_grains(bad)
    text = str(err.value)
    assert "b: duplicate member s1/f1/#1" in text
    assert "c: web server without" in text
    assert "d: webfarm:member 'two'" in text


def test_farms_from_topology_matches_the_example_pillar_shape():
    topology = {
        "sites": {
            "s1": {"farms": {"f1": {"members": {1: {"id": "a"}, "2": {"id": "b"}}}}},
        }
    }
    assert wu.farms_from_topology(topology) == {"s1": {"f1": {1: "a", 2: "b"}}}


def test_app_waves_one_farm_per_site_batch_1():
    waves = wu.plan(FARMS, "app", batch=1)
    assert names(waves) == [["s1/f1"], ["s2/f1"], ["s1/f2"], ["s2/f2"]]
    assert waves[0][0]["drain"] == ["f1_m1", "f1_m2"]
    assert [m["id"] for m in waves[0][0]["members"]] == ["web-s1-f1-m1", "web-s1-f1-m2"]
    assert wu.check_plan(waves, "app") == []


def test_app_batch_never_puts_two_farms_of_a_site_in_a_wave():
    farms = wu.farms_from_grains(lab(sites=2, farms=3, members=1))
    waves = wu.plan(farms, "app", batch=5)
    assert names(waves) == [["s1/f1", "s2/f1"], ["s1/f2", "s2/f2"], ["s1/f3", "s2/f3"]]
    assert wu.check_plan(waves, "app") == []


def test_app_batch_2_of_uneven_sites_drains_the_longer_site_first():
    farms = wu.farms_from_grains(lab(sites=2, farms=2, members=1))
    farms["s3"] = {f"f{i}": {1: f"web-s3-f{i}"} for i in range(1, 5)}
    waves = wu.plan(farms, "app", batch=2)
    assert names(waves)[0] == ["s3/f1", "s1/f1"]
    assert sum(len(w) for w in waves) == 8
    assert all(len(w) <= 2 for w in waves)
    assert wu.check_plan(waves, "app") == []


def test_app_refuses_a_site_with_a_single_farm():
    farms = {"s1": {"f1": {1: "a"}}, "s2": {"f1": {1: "b"}, "f2": {1: "c"}}}
    with pytest.raises(wu.PlanError, match="site 's1' has a single farm"):
        wu.plan(farms, "app")
    assert names(wu.plan(farms, "app", sites=["s2"])) == [["s2/f1"], ["s2/f2"]]


def test_os_waves_are_member_indexes_across_every_farm():
    waves = wu.plan(FARMS, "os")
    assert [[m["id"] for s in wave for m in s["members"]] for wave in waves] == [
        ["web-s1-f1-m1", "web-s1-f2-m1", "web-s2-f1-m1", "web-s2-f2-m1"],
        ["web-s1-f1-m2", "web-s1-f2-m2", "web-s2-f1-m2", "web-s2-f2-m2"],
    ]
    assert waves[1][0]["drain"] == ["f1_m2"]
    assert wu.check_plan(waves, "os") == []


def test_os_waves_with_uneven_farms_and_gaps_in_indexes():
    farms = {"s1": {"f1": {1: "a1", 2: "a2", 3: "a3"}, "f2": {2: "b2", 5: "b5"}}}
    waves = wu.plan(farms, "os")
    assert [[m["id"] for s in w for m in s["members"]] for w in waves] == [
        ["a1", "b2"],
        ["a2", "b5"],
        ["a3"],
    ]


def test_os_online_is_one_wave_without_drain():
    waves = wu.plan(FARMS, "os-online")
    assert len(waves) == 1 and len(waves[0]) == 4
    assert all(step["drain"] == [] for step in waves[0])


def test_filters_by_site_and_farm():
    assert names(wu.plan(FARMS, "app", sites=["s2"])) == [["s2/f1"], ["s2/f2"]]
    assert names(wu.plan(FARMS, "os-online", farms="s1/f2,f1")) == [["s1/f1", "s1/f2", "s2/f1"]]


def test_unknown_filters_are_named():
    with pytest.raises(wu.PlanError, match="site 's9' has no web servers"):
        wu.plan(FARMS, "app", sites=["s9"])
    with pytest.raises(wu.PlanError, match="farm 'x' has no web servers"):
        wu.plan(FARMS, "app", farms=["x"])
    with pytest.raises(wu.PlanError, match="no web servers found"):
        wu.plan({}, "app")


def test_check_plan_catches_unsafe_waves():
    step = {"site": "s1", "farm": "f1", "members": [{"index": 1, "id": "a"}]}
    other = {"site": "s1", "farm": "f2", "members": [{"index": 1, "id": "b"}]}
    assert wu.check_plan([[step, other]], "app") == ["wave 1: two farms of one site"]
    two = {
        "site": "s1",
        "farm": "f1",
        "members": [{"index": 1, "id": "a"}, {"index": 2, "id": "c"}],
    }
    assert "wave 1: more than one member of a farm" in wu.check_plan([[two]], "os")
    assert wu.check_plan([[step], [step]], "os") == ["wave 2: a upgraded twice"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "big"}, "kind must be one of"),
        ({"kind": "app"}, "bad version None"),
        ({"kind": "app", "version": "../2"}, "bad version"),
        ({"kind": "app", "version": "2", "batch": 0}, "batch must be an integer >= 1"),
        ({"kind": "app", "version": "2", "batch": "two"}, "batch must be"),
        ({"kind": "app", "version": "2", "batch": True}, "batch must be"),
        ({"kind": "os", "max_failures": -1}, "max_failures must be an integer >= 0"),
        ({"kind": "os", "sites": {"s1": 1}}, "sites must be a list"),
    ],
)
def test_options_reject_bad_input(kwargs, message):
    with pytest.raises(wu.PlanError, match=message):
        wu.options(**kwargs)


def test_options_normalise():
    assert wu.options("app", "2.0.1", sites="s1, s2", batch="2") == {
        "kind": "app",
        "version": "2.0.1",
        "sites": ["s1", "s2"],
        "farms": None,
        "batch": 2,
        "max_failures": 0,
        "on_failure": "rollback",
        "force": False,
    }
    assert wu.options("app", "2", batch=None, on_failure="hold", force="true")["force"] is True


def test_version_key_orders_numerically():
    assert sorted(["2.0.10", "2.0.9", "10.0", "2.0.1"], key=wu.version_key) == [
        "2.0.1",
        "2.0.9",
        "2.0.10",
        "10.0",
    ]


def _report(max_failures=0):
    opts = wu.options("app", "2.0.1", max_failures=max_failures, batch=1)
    waves = wu.plan(FARMS, "app", batch=1)
    return wu.new_report(opts, waves), waves


def test_report_stops_at_first_failure_by_default():
    report, waves = _report()
    assert wu.record_step(
        report,
        waves[0][0],
        True,
        {"drain": 1.0},
        versions={"web-s1-f1-m1": "2.0.1", "web-s1-f1-m2": "2.0.1"},
    )
    assert not wu.record_step(report, waves[1][0], False, {}, error="web-s2-f1-m1: HTTP 500")
    assert report["stopped"] and report["result"] is False
    assert wu.summary(report) == (
        "app upgrade stopped at s2/f1 (web-s2-f1-m1, web-s2-f1-m2): web-s2-f1-m1: HTTP 500;"
        " 1 step(s) done before"
    )
    report["versions"].update({"web-s2-f1-m1": "2.0.2", "web-s2-f1-m2": "1.0.0"})
    assert wu.farm_versions(report, FARMS) == {
        "s1/f1": "2.0.1",
        "s1/f2": None,
        "s2/f1": "mixed: 1.0.0, 2.0.2",
        "s2/f2": None,
    }


def test_report_tolerates_max_failures():
    report, waves = _report(max_failures=1)
    assert wu.record_step(report, waves[0][0], False, {}, error="x")
    assert wu.record_step(report, waves[1][0], True, {})
    assert not wu.record_step(report, waves[2][0], False, {}, error="y")
    assert len(report["failures"]) == 2


def test_pkg_call_debian_and_gentoo():
    """Gentoo cannot run here: the exact Salt pkg calls are checked as data."""
    assert wu.pkg_call("Debian", ["openssl"]) == (
        "pkg.install",
        {"pkgs": ["openssl"], "refresh": False},
    )
    assert wu.pkg_call("Debian") == ("pkg.upgrade", {"refresh": True})
    # binhost="try" is the ebuild provider's switch for `emerge --getbinpkg` (implies --usepkg).
    assert wu.pkg_call("Gentoo", "openssl, apache") == (
        "pkg.install",
        {"pkgs": ["openssl", "apache"], "refresh": False, "binhost": "try", "update": True},
    )
    assert wu.pkg_call("Gentoo") == ("pkg.upgrade", {"refresh": False, "binhost": "try"})
    with pytest.raises(ValueError, match="pkgs"):
        wu.pkg_call("Debian", [""])


def test_make_conf_adds_binhost_and_feature_once():
    """Gentoo cannot run here: the rendered make.conf is checked as text."""
    text = wu.make_conf('# mine\nFEATURES="sandbox"\n', "https://binhost.lan/pkgs/", "epyc-7003")
    assert (
        text
        == '# mine\nFEATURES="sandbox getbinpkg"\nPORTAGE_BINHOST="https://binhost.lan/pkgs/epyc-7003"\n'
    )
    assert wu.make_conf(text, "https://binhost.lan/pkgs", "epyc-7003") == text
    changed = wu.make_conf(text, "https://binhost.lan/pkgs", "xeon")
    assert 'PORTAGE_BINHOST="https://binhost.lan/pkgs/xeon"' in changed
    assert changed.count("PORTAGE_BINHOST") == 1
    assert (
        wu.make_conf("", "http://b/p", "x")
        == 'FEATURES="getbinpkg"\nPORTAGE_BINHOST="http://b/p/x"\n'
    )


@pytest.mark.parametrize(
    ("url", "profile"), [("ftp:/x", "a"), ("http://b", "a b"), ("", "a"), ("http://b", None)]
)
def test_make_conf_rejects_bad_input(url, profile):
    with pytest.raises(ValueError):
        wu.make_conf("", url, profile)


def test_tolerated_failure_blocks_the_rest_of_its_site_app():
    report, waves = _report(max_failures=1)
    wu.record_step(report, waves[0][0], False, {}, error="x")  # s1/f1 stays drained
    assert wu.blocker(report, waves[1][0]) is None  # s2/f1
    assert wu.blocker(report, waves[2][0]) == "farm s1/f1 failed and stays drained"  # s1/f2
    wu.skip_step(report, waves[2][0], "farm s1/f1 failed and stays drained")
    assert report["skipped"][0]["farm"] == "f2"


def test_tolerated_failure_blocks_the_rest_of_its_farm_os():
    opts = wu.options("os", max_failures=1)
    waves = wu.plan(FARMS, "os")
    report = wu.new_report(opts, waves)
    wu.record_step(report, waves[0][0], False, {}, error="x")  # s1/f1 member 1
    assert wu.blocker(report, waves[1][0]) == "a member of s1/f1 failed and stays drained"
    assert wu.blocker(report, waves[1][1]) is None  # s1/f2 member 2


# ----------------------------------------------------------------------------- part 2


def test_app_default_batch_is_one_farm_of_every_site_at_once():
    waves = wu.plan(FARMS, "app")
    assert names(waves) == [["s1/f1", "s2/f1"], ["s1/f2", "s2/f2"]]
    assert wu.check_plan(waves, "app") == []
    assert names(wu.plan(FARMS, "app", sites="s2")) == [["s2/f1"], ["s2/f2"]]


def big_grains(sites=4, farms=8, members=16):
    out = {}
    for s in range(1, sites + 1):
        for f in range(1, farms + 1):
            for m in range(1, members + 1):
                out[f"web-s{s}-f{f}-m{m:02d}"] = {
                    "webfarm": {
                        "role": "web",
                        "site": f"s{s}",
                        "farm": f"f{f}",
                        "member": m,
                        "hw_profile": ("xeon-e5", "epyc-7003")[m % 2],
                    }
                }
        out[f"lb-s{s}"] = grains(f"s{s}", None, None, role="lb-site")
    return out


def test_plan_512_members_4_sites_8_farms_16_members():
    """The seed's size on paper: 4 sites x 8 farms x 16 members, planned from grains."""
    topo = big_grains()
    farm_map, app = wu.plan_rollout(topo, wu.options("app", "3.0.0"), named(topo))
    members = [m for s in farm_map.values() for f in s.values() for m in f.values()]
    assert len(members) == 512 and len(set(members)) == 512
    # app: every site upgrades concurrently, one farm per site at a time -> 8 waves of 4 farms
    assert len(app) == 8 and all(len(w) == 4 for w in app)
    assert all(sorted(s["site"] for s in w) == ["s1", "s2", "s3", "s4"] for w in app)
    assert all(len(s["members"]) == 16 and len(s["drain"]) == 16 for w in app for s in w)
    assert wu.check_plan(app, "app") == []
    assert sorted(m["id"] for w in app for s in w for m in s["members"]) == sorted(members)
    # os: member #1 of all 32 farms, then #2, ... -> 16 waves of 32 single-member steps
    _, os_waves = wu.plan_rollout(topo, wu.options("os"), named(topo))
    assert len(os_waves) == 16 and all(len(w) == 32 for w in os_waves)
    assert all(
        {m["index"] for s in w for m in s["members"]} == {i} for i, w in enumerate(os_waves, 1)
    )
    assert wu.check_plan(os_waves, "os") == []
    # batch 2: never two farms of one site, 16 waves
    _, two = wu.plan_rollout(topo, wu.options("app", "3.0.0", batch=2), named(topo))
    assert len(two) == 16 and wu.check_plan(two, "app") == []
    assert wu.hw_profiles(topo, members).keys() == {"xeon-e5", "epyc-7003"}


def test_preprod_hosts_one_per_profile():
    topo = {
        "pp-a": {"webfarm": {"role": "preprod", "hw_profile": "xeon-e5"}},
        "pp-b": {"webfarm": {"role": "preprod", "hw_profile": "epyc-7003"}},
        "web": grains("s1", "f1", 1),
    }
    assert wu.preprod_hosts(topo) == {"xeon-e5": "pp-a", "epyc-7003": "pp-b"}
    topo["pp-c"] = {"webfarm": {"role": "preprod", "hw_profile": "xeon-e5"}}
    with pytest.raises(wu.PlanError, match="pp-c: second preprod server of hw-profile xeon-e5"):
        wu.preprod_hosts(topo)
    with pytest.raises(wu.PlanError, match="no preprod server"):
        wu.preprod_hosts({"web": grains("s1", "f1", 1)})


def test_gate_needs_an_ok_test_on_every_profile():
    record = wu.record_tested({}, "app", "2.1.0", "xeon-e5", {"ok": True, "minion": "pp-a"})
    assert wu.untested_profiles(record, "app", "2.1.0", ["xeon-e5"]) == {}
    missing = wu.untested_profiles(record, "app", "2.1.0", ["xeon-e5", "epyc-7003"])
    assert missing == {"epyc-7003": "never tested"}
    assert wu.untested_profiles(record, "app", "2.2.0", ["xeon-e5"]) == {"xeon-e5": "never tested"}
    record = wu.record_tested(
        record, "app", "2.1.0", "epyc-7003", {"ok": False, "minion": "pp-b", "error": "HTTP 500"}
    )
    assert wu.untested_profiles(record, "app", "2.1.0", ["epyc-7003"]) == {
        "epyc-7003": "failed on pp-b: HTTP 500"
    }
    comment = wu.gate_comment("app", "2.1.0", {"epyc-7003": "never tested"})
    assert comment.startswith("refused: app 2.1.0 is not tested OK on preprod")
    assert "upgrade.preprod" in comment and "nothing was drained" in comment
    # a later OK test replaces the failed one; the os kind is a separate key
    record = wu.record_tested(record, "app", "2.1.0", "epyc-7003", {"ok": True, "minion": "pp-b"})
    assert wu.untested_profiles(record, "app", "2.1.0", ["epyc-7003", "xeon-e5"]) == {}
    assert wu.untested_profiles(record, "os", "2.1.0", ["xeon-e5"]) == {"xeon-e5": "never tested"}


def test_classify_members_and_rollback_targets():
    results = {
        "a": {"ok": True, "before": "1.0.0", "version": "2.0.0"},
        "b": {"ok": False, "before": "1.0.0", "error": "health check failed: HTTP 500"},
        "c": {"ok": False, "down_before": True, "before": "1.0.0", "error": "down"},
        "d": "Traceback ...",
    }
    assert wu.classify_members(results) == (["a"], ["c"], ["b", "d"])
    assert wu.member_error(results, ["b", "d"]) == (
        "b: health check failed: HTTP 500; d: Traceback ..."
    )
    assert wu.rollback_targets(results, ["a", "b", "e"]) == {"1.0.0": ["a", "b", "e"]}
    assert wu.rollback_targets({}, ["a"]) == {None: ["a"]}


def test_rolled_back_failure_stops_but_does_not_block_its_site():
    report, waves = _report(max_failures=1)
    wu.record_step(
        report, waves[0][0], False, {}, error="x", action="rolled back to 1.0.0", drained=False
    )
    assert wu.blocker(report, waves[2][0]) is None  # s1/f2: s1/f1 is back in service
    report, waves = _report()
    assert not wu.record_step(
        report, waves[0][0], False, {}, error="m2: HTTP 500", action="rolled back", drained=False
    )
    assert wu.summary(report).startswith(
        "app upgrade stopped at s1/f1 (web-s1-f1-m1, web-s1-f1-m2): m2: HTTP 500; rolled back;"
    )


def test_skipped_members_and_force_are_in_the_summary():
    report, waves = _report()
    report["forced"] = "untested on xeon (never tested)"
    wu.record_step(report, waves[0][0], True, {}, down=["web-s1-f1-m2"])
    assert report["skipped_members"][0]["member"] == "web-s1-f1-m2"
    text = wu.summary(report)
    assert "skipped (down before their wave, kept in maint): web-s1-f1-m2" in text
    assert "FORCED past the preprod gate: untested on xeon" in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "app", "version": "2", "on_failure": "ignore"}, "on_failure must be one of"),
        ({"kind": "app", "version": "2", "force": "maybe"}, "force must be true or false"),
        ({"kind": "os", "version": "../x"}, "bad version"),
    ],
)
def test_options_reject_bad_part2_input(kwargs, message):
    with pytest.raises(wu.PlanError, match=message):
        wu.options(**kwargs)


def test_buildhost_make_conf_and_rsyncd_conf():
    """Gentoo cannot run here: the build host's make.conf and rsyncd.conf are checked as text."""
    text = wu.buildhost_make_conf(
        'FEATURES="sandbox"\nPKGDIR="/old"\n', "/var/cache/binpkgs", "xeon"
    )
    assert text == 'FEATURES="sandbox buildpkg"\nPKGDIR="/var/cache/binpkgs/xeon"\n'
    assert wu.buildhost_make_conf(text, "/var/cache/binpkgs", "xeon") == text
    with pytest.raises(ValueError, match="pkgdir_root"):
        wu.buildhost_make_conf("", "relative", "xeon")
    conf = wu.rsyncd_conf("/var/cache/binpkgs", ["10.77.0.0/16"])
    assert "[binpkgs]\n    path = /var/cache/binpkgs\n" in conf
    assert "    read only = yes\n" in conf and "    hosts allow = 10.77.0.0/16\n" in conf
    assert "hosts deny = *" in conf and "use chroot = yes" in conf
    with pytest.raises(ValueError, match="hosts_allow"):
        wu.rsyncd_conf("/var/cache/binpkgs", [])
    assert wu.buildhost_commands(["dev-libs/openssl"]) == [
        ["emerge", "--update", "--deep", "--newuse", "--buildpkg", "dev-libs/openssl"],
        ["emaint", "binhost", "--fix"],
    ]


def test_a_mixed_site_upgrades_its_oldest_farm_first():
    """After a rollback s1/f2 runs 1.0.0 while s1/f1 runs 2.0.0: draining s1/f1 first would
    send its 2.0.0 sessions to 1.0.0 (a version regression), so s1/f2 goes first."""
    versions = {m: "2.0.0" for s in FARMS.values() for f in s.values() for m in f.values()}
    versions.update({"web-s1-f2-m1": "1.0.0", "web-s1-f2-m2": "1.0.0", "web-s2-f1-m2": None})
    waves = wu.plan(FARMS, "app", versions=versions)
    assert names(waves) == [["s1/f2", "s2/f1"], ["s1/f1", "s2/f2"]]
    versions.update({"web-s2-f1-m1": "2.0.10", "web-s2-f1-m2": "2.0.10"})
    versions.update({"web-s2-f2-m1": "2.0.9", "web-s2-f2-m2": "2.0.10"})
    assert names(wu.plan(FARMS, "app", versions=versions))[0] == ["s1/f2", "s2/f2"]
    assert names(wu.plan(FARMS, "app")) == [["s1/f1", "s2/f1"], ["s1/f2", "s2/f2"]]


def test_the_runners_rollout_takes_the_options_once_and_documents_each():
    """``salt-run upgrade.rollout`` takes ``webfarm_upgrade.OPTIONS`` and its own
    ``RUN_SETTINGS`` as keyword arguments: no default is written again in its signature, and
    its docstring names every one (read, not imported: the runner needs a master)."""
    import ast
    from pathlib import Path

    runner = Path(__file__).resolve().parents[2] / "salt" / "_runners" / "upgrade.py"
    tree = ast.parse(runner.read_text())
    func = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "rollout")
    assert [a.arg for a in func.args.args] == ["kind", "version"] and func.args.kwarg
    run = next(
        ast.literal_eval(n.value)
        for n in tree.body
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "RUN_SETTINGS"
    )
    assert not set(run) & set(wu.OPTIONS)
    doc = ast.get_docstring(func)
    # a parameter's entry is a line of names (``sites, farms``), its text indented below it
    named = {n for line in doc.splitlines() if line[:1].isalpha() for n in line.split(", ")}
    assert [name for name in [*wu.OPTIONS, *run] if name not in named] == []


def test_options_refuse_a_name_that_is_none():
    with pytest.raises(wu.PlanError, match="unknown option.*max_failure: known are sites"):
        wu.options("app", "2.0.1", max_failure=1)
