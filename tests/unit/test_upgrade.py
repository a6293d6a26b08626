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
    waves = wu.plan(FARMS, "app")
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
    }


def test_version_key_orders_numerically():
    assert sorted(["2.0.10", "2.0.9", "10.0", "2.0.1"], key=wu.version_key) == [
        "2.0.1",
        "2.0.9",
        "2.0.10",
        "10.0",
    ]


def _report(max_failures=0):
    opts = wu.options("app", "2.0.1", max_failures=max_failures)
    waves = wu.plan(FARMS, "app")
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
