"""Rolling upgrades through a real salt-master and 12 real salt-minions under live traffic.

Lab (tests/support/upgrade_lab.py): 2 sites x 2 farms x 2 members, one salt-minion per member
(plus one per site LB, one preprod server and a rogue that claims ``webfarm:role: web`` in
farm s1/f1 but is named by no master-side topology: it must join no wave), a memcached (apt) per farm, a PHP app
(``php -S`` from apt) per member on its own loopback address serving its release version and
keeping a session in its farm's memcached, and both HAProxy tiers from the haproxy_tier
capability. Traffic: sticky client sessions through the primary LB, every response recorded
(a session that sees an older version than before is a regression; the app also refuses it
with HTTP 409, so it would be a failed request too). The tests run in order and each starts
from the state the previous one left.
"""

import json
import time

import pytest

import webfarm_haproxy
from lab.proc import wait_for
from lab.upgrade import orchestrate_report
from tests.support.upgrade_lab import PREPROD, ROGUE

pytestmark = pytest.mark.timeout(900)

ALL_FARMS = {"s1/f1", "s1/f2", "s2/f1", "s2/f2"}
BROKEN = "u-web-s1-f2-m2"  # one member of a second-wave farm gets broken releases
DOWN = "u-web-s2-f2-m1"  # its app is stopped before a rollout


def _orchestrate(lab, upgrade, mods="upgrade"):
    ret = lab.salt_run_cli.run(
        "state.orchestrate", mods, f"pillar={json.dumps({'upgrade': upgrade})}"
    )
    return ret, orchestrate_report(ret.data)


def _preprod(lab, version):
    ret, report = _orchestrate(lab, {"kind": "app", "version": version}, "upgrade.preprod")
    assert ret.returncode == 0, ret
    assert report["ok"] is True, report
    return report


def _versions(lab):
    ret = lab.salt_cli.run("upgrade.version", minion_tgt="u-web-*")
    assert ret.returncode == 0, ret
    return ret.data


def _assert_clean_traffic(traffic, want_versions):
    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.regressions() == [], traffic.regressions()[:5]
    assert traffic.requests() > 100, traffic.requests()
    assert len(traffic.sessions) > 20
    assert want_versions <= set(traffic.versions()), traffic.versions()


def _refresh(lab, minion):
    ret = lab.salt_cli.run("saltutil.refresh_pillar", "wait=True", minion_tgt=minion)
    assert ret.returncode == 0, ret


def _notify_records(lab, count):
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        lines = lab.notify_log.read_text().splitlines() if lab.notify_log.exists() else []
        if len(lines) >= count:
            break
        time.sleep(1)
    record = json.loads(lines[-1])
    return record["event"].get("data", record["event"])


def test_untested_version_is_refused_and_nothing_is_drained(upgrade_lab):
    lab = upgrade_lab
    assert set(_versions(lab).values()) == {"1.0.0"}
    with lab.monitor() as monitor:
        ret, report = _orchestrate(lab, {"kind": "app", "version": "2.0.1"})
    assert ret.returncode != 0
    assert report["refused"] is True and report["steps"] == []
    assert report["comment"].startswith(
        "refused: app 2.0.1 is not tested OK on preprod for hw-profile(s) generic-x86_64:"
        " never tested"
    )
    assert monitor.ever_down == set() and monitor.errors == []
    assert set(_versions(lab).values()) == {"1.0.0"}


def test_preprod_records_then_sites_upgrade_concurrently_under_traffic(upgrade_lab, event_listener):
    lab = upgrade_lab
    since = time.time()
    report = _preprod(lab, "2.0.1")
    assert report["profiles"]["generic-x86_64"]["minion"] == PREPROD
    assert report["profiles"]["generic-x86_64"]["check"][:2] == ["php", "-l"]
    assert report["record"] == str(lab.record)
    record = json.loads(lab.record.read_text())
    assert record["app:2.0.1"]["profiles"]["generic-x86_64"]["ok"] is True
    (event,) = event_listener.wait_for_events(
        [(lab.master.id, "webfarm/upgrade/preprod/done")], after_time=since, timeout=30
    ).matches
    assert event.data["version"] == "2.0.1" and event.data["ok"] is True
    ret = lab.salt_cli.run("upgrade.version", minion_tgt=PREPROD)
    assert ret.data == "2.0.1"
    ret = lab.salt_run_cli.run("upgrade.tested", "version=2.0.1")
    assert ret.data["profiles"]["generic-x86_64"]["ok"] is True

    with lab.monitor() as monitor, lab.traffic() as traffic:
        time.sleep(1)
        ret, report = _orchestrate(lab, {"kind": "app", "version": "2.0.1"})
        time.sleep(1)
    assert ret.returncode == 0, ret
    assert report["result"] is True, report["comment"]
    assert report["forced"] is False
    assert report["farms"] == dict.fromkeys(ALL_FARMS, "2.0.1")
    # batch defaults to the number of sites: both sites in every wave
    assert report["waves"] == [["s1/f1", "s2/f1"], ["s1/f2", "s2/f2"]]
    assert [s["ok"] for s in report["steps"]] == [True] * 4
    # The rogue's grains put it in s1/f1; the master's topology does not: in no step.
    assert ROGUE not in json.dumps(report), report["steps"]
    assert sorted(len(s["members"]) for s in report["steps"]) == [2, 2, 2, 2], report["steps"]
    assert all(s["timings"]["round_trips"] == 3 for s in report["steps"]), report["steps"]
    assert set(_versions(lab).values()) == {"2.0.1"}

    _assert_clean_traffic(traffic, {"1.0.0", "2.0.1"})
    assert monitor.errors == []
    assert monitor.max_farms_per_site == 1, "two farms of a site were out at once (or none)"
    assert monitor.max_sites_out == 2, "the sites did not upgrade concurrently"
    drained_farms = {(site, farm) for site, farm, _ in monitor.ever_down}
    assert drained_farms == {(s, f) for s in ("s1", "s2") for f in ("f1", "f2")}
    assert monitor.snapshot() == {}, "a farm was left drained"
    assert {"drain", "upgrade", "health", "flush", "ready"} <= set(report["steps"][0]["timings"])


def test_os_upgrade_one_member_of_every_farm_at_a_time(upgrade_lab):
    """The os kind for real on Debian minions: Salt's pkg (aptpkg) on rsync, already current."""
    lab = upgrade_lab
    with lab.monitor() as monitor, lab.traffic() as traffic:
        ret, report = _orchestrate(lab, {"kind": "os", "pkgs": "rsync"})
        time.sleep(0.5)
    assert ret.returncode == 0, ret
    assert report["result"] is True, report["comment"]
    assert len(report["waves"]) == 2 and all(len(w) == 4 for w in report["waves"])
    assert all(s["timings"]["round_trips"] == 3 for s in report["steps"])
    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.regressions() == []
    assert monitor.max_members_per_farm == 1
    assert len(monitor.ever_down) == 8, sorted(monitor.ever_down)
    assert monitor.snapshot() == {}
    assert set(_versions(lab).values()) == {"2.0.1"}


def test_a_broken_member_rolls_its_farm_back_automatically(upgrade_lab):
    lab = upgrade_lab
    _preprod(lab, "3.0.0")
    lab.break_member(BROKEN, ["3.0.0", "3.0.1"])
    _refresh(lab, BROKEN)
    with lab.monitor() as monitor, lab.traffic() as traffic:
        time.sleep(1)
        ret, report = _orchestrate(lab, {"kind": "app", "version": "3.0.0"})
        time.sleep(1)
    assert ret.returncode != 0
    assert report["result"] is False and report["stopped"] is True
    assert report["on_failure"] == "rollback"
    (failed,) = report["failures"]
    assert (failed["site"], failed["farm"]) == ("s1", "f2")
    assert f"{BROKEN}: health check failed: HTTP 500" in failed["error"]
    assert failed["action"] == "rolled back to 2.0.1, memcached flushed, back in service"
    assert failed["drained"] is False
    assert failed["timings"]["round_trips"] == 4  # drain, upgrade step, rollback step, ready
    (rollback,) = report["rollbacks"]
    assert {m: r["version"] for m, r in rollback["members"].items()} == {
        "u-web-s1-f2-m1": "2.0.1",
        BROKEN: "2.0.1",
    }
    # s2/f2 ran in the same wave as the failed farm; the rollout stopped after it
    assert report["farms"] == {
        "s1/f1": "3.0.0",
        "s2/f1": "3.0.0",
        "s2/f2": "3.0.0",
        "s1/f2": "2.0.1",
    }
    assert monitor.snapshot() == {}, "the rolled-back farm is not back in service"
    assert monitor.max_farms_per_site == 1
    _assert_clean_traffic(traffic, {"2.0.1", "3.0.0"})

    event = _notify_records(lab, 1)
    assert (event["site"], event["farm"], event["version"]) == ("s1", "f2", "3.0.0")
    assert event["action"].startswith("rolled back to 2.0.1") and "HTTP 500" in event["error"]


def test_hold_leaves_the_failed_farm_drained_and_force_is_reported(upgrade_lab):
    lab = upgrade_lab
    with lab.traffic() as traffic:
        ret, report = _orchestrate(
            lab, {"kind": "app", "version": "3.0.1", "on_failure": "hold", "force": True}
        )
        time.sleep(0.5)
    assert ret.returncode != 0
    assert report["forced"] == "untested on generic-x86_64 (never tested)"
    assert "FORCED past the preprod gate" in report["comment"]
    # s1/f2 runs the oldest version of its site (rolled back): it goes first, so no session
    # of s1/f1 (3.0.0) is ever sent to it while s1/f1 is drained.
    assert report["waves"][0] == ["s1/f2", "s2/f1"]
    (failed,) = report["failures"]
    assert (failed["site"], failed["farm"], failed["action"]) == ("s1", "f2", "held drained")
    assert report["rollbacks"] == []
    assert len(report["steps"]) == 2  # wave 1 only
    assert report["farms"] == {
        "s1/f1": "3.0.0",
        "s1/f2": "3.0.1",  # both switched; m2 failed its health check, held drained
        "s2/f1": "3.0.1",
        "s2/f2": "3.0.0",
    }
    assert lab.monitor().snapshot() == {"s1": {"f2": {"f2_m1", "f2_m2"}}}
    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.regressions() == []
    _notify_records(lab, 2)

    # Operator's way back: roll the farm's members back, then put it in service again.
    lab.mend_member(BROKEN)
    _refresh(lab, BROKEN)
    ret = lab.salt_cli.run(
        "-L", "upgrade.rollback_step", "2.0.1", minion_tgt=",".join(failed["members"])
    )
    assert ret.returncode == 0 and all(r["ok"] for r in ret.data.values()), ret
    ret = lab.salt_cli.run("haproxy_tier.ready", "farm=f2", minion_tgt="u-lb-s1")
    assert ret.returncode == 0, ret
    assert lab.monitor().snapshot() == {}


def test_a_member_down_before_its_wave_is_skipped_and_kept_out(upgrade_lab):
    lab = upgrade_lab
    _preprod(lab, "3.0.2")
    lab.apps[DOWN].stop()
    site = lab.instances["s2"]
    wait_for(
        lambda: any(
            r["svname"] == "f2_m1" and r["status"] == "DOWN"
            for r in webfarm_haproxy.parse_show_stat(site.command("show stat"))
        ),
        20,
        "f2_m1 DOWN on the s2 LB",
    )
    started = time.monotonic()
    with lab.traffic() as traffic:
        time.sleep(0.5)
        ret, report = _orchestrate(lab, {"kind": "app", "version": "3.0.2"})
        time.sleep(0.5)
    assert time.monotonic() - started < 120, "the rollout stalled on the down member"
    assert ret.returncode == 0, ret
    assert report["result"] is True, report["comment"]
    assert [s["member"] for s in report["skipped_members"]] == [DOWN]
    assert f"skipped (down before their wave, kept in maint): {DOWN}" in report["comment"]
    assert report["versions"][DOWN] == "3.0.0"  # untouched
    others = {m: v for m, v in report["versions"].items() if m != DOWN}
    assert set(others.values()) == {"3.0.2"}, others
    # it stays in maint, so it cannot come back serving 3.0.1 to sessions that saw 3.0.2
    assert lab.monitor().snapshot() == {"s2": {"f2": {"f2_m1"}}}
    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.regressions() == []

    # The operator brings it back: app up (still in maint), upgrade it, then ready it.
    lab.apps[DOWN].start()
    ret = lab.salt_cli.run("upgrade.upgrade_step", "3.0.2", minion_tgt=DOWN)
    assert ret.returncode == 0 and ret.data["ok"] is True, ret
    ret = lab.salt_cli.run("haproxy_tier.ready", "server=f2_m1", minion_tgt="u-lb-s2")
    assert ret.returncode == 0, ret
    assert lab.monitor().snapshot() == {}


def _release_ready(lab, data):
    """A site LB (a minion, not the master) announces a release: the reactor's trigger."""
    ret = lab.salt_cli.run(
        "event.send", "webfarm/upgrade/release/ready", f"data={data}", minion_tgt="u-lb-s1"
    )
    assert ret.returncode == 0, ret


def test_release_ready_reactor_refuses_untested_then_runs_tested(upgrade_lab, event_listener):
    lab = upgrade_lab
    since = time.time()
    # From a minion, "force" is ignored: an untested release is refused, nothing drained.
    _release_ready(lab, '{"version": "4.0.0", "force": true}')
    (refused,) = event_listener.wait_for_events(
        [(lab.master.id, "webfarm/upgrade/rollout/refused")], after_time=since, timeout=120
    ).matches
    assert refused.data["version"] == "4.0.0"
    assert "not tested OK on preprod" in refused.data["comment"]
    assert set(_versions(lab).values()) == {"3.0.2"}

    _preprod(lab, "4.0.0")
    with lab.monitor() as monitor, lab.traffic() as traffic:
        _release_ready(lab, '{"version": "4.0.0"}')
        deadline = time.monotonic() + 150
        versions = {}
        while time.monotonic() < deadline:
            versions = _versions(lab)
            if set(versions.values()) == {"4.0.0"} and not monitor.snapshot():
                break
            time.sleep(2)
        time.sleep(0.5)
    assert set(versions.values()) == {"4.0.0"}, versions
    assert len(versions) == 8
    _assert_clean_traffic(traffic, {"3.0.2", "4.0.0"})
    assert monitor.max_farms_per_site == 1
    assert monitor.max_sites_out == 2
    assert monitor.snapshot() == {}
