"""Rolling upgrades through a real salt-master and 10 real salt-minions under live traffic.

Lab (tests/support/upgrade_lab.py): 2 sites x 2 farms x 2 members, one salt-minion per member
(plus one per site LB), a memcached (apt) per farm, a PHP app (``php -S`` from apt) per member
on its own loopback address serving its release version and keeping a session in its farm's
memcached, and both HAProxy tiers from the haproxy_tier capability. Traffic: sticky client
sessions through the primary LB, every response recorded. The tests run in order and each
starts from the state the previous one left.
"""

import json
import time

import pytest

from tests.support.upgrade_lab import orchestrate_report

pytestmark = pytest.mark.timeout(900)

ALL_FARMS = {"s1/f1", "s1/f2", "s2/f1", "s2/f2"}


def _orchestrate(lab, upgrade):
    ret = lab.salt_run_cli.run(
        "state.orchestrate", "upgrade", f"pillar={json.dumps({'upgrade': upgrade})}"
    )
    return ret, orchestrate_report(ret.data)


def _versions(lab):
    ret = lab.salt_cli.run("farm.version", minion_tgt="u-web-*")
    assert ret.returncode == 0, ret
    return ret.data


def _assert_clean_traffic(traffic, want_versions):
    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.regressions() == [], traffic.regressions()[:5]
    assert traffic.requests() > 100, traffic.requests()
    assert len(traffic.sessions) > 20
    assert want_versions <= set(traffic.versions()), traffic.versions()


def test_app_upgrade_farm_by_farm_under_traffic(upgrade_lab):
    lab = upgrade_lab
    assert set(_versions(lab).values()) == {"1.0.0"}
    with lab.monitor() as monitor, lab.traffic() as traffic:
        time.sleep(1)
        ret, report = _orchestrate(lab, {"kind": "app", "version": "2.0.1"})
        time.sleep(1)
    assert ret.returncode == 0, ret
    assert report["result"] is True, report["comment"]
    assert report["farms"] == dict.fromkeys(ALL_FARMS, "2.0.1")
    assert len(report["waves"]) == 4 and all(len(w) == 1 for w in report["waves"])
    assert [s["ok"] for s in report["steps"]] == [True] * 4
    assert set(_versions(lab).values()) == {"2.0.1"}

    _assert_clean_traffic(traffic, {"1.0.0", "2.0.1"})
    assert monitor.errors == []
    assert monitor.max_farms_per_site == 1, "two farms of a site were out at once (or none)"
    drained_farms = {(site, farm) for site, farm, _ in monitor.ever_down}
    assert drained_farms == {(s, f) for s in ("s1", "s2") for f in ("f1", "f2")}
    assert monitor.snapshot() == {}, "a farm was left drained"
    # Steps report their phases: drain, release, health, memcached flush, ready.
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
    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.regressions() == []
    assert monitor.max_members_per_farm == 1
    assert len(monitor.ever_down) == 8, sorted(monitor.ever_down)
    assert monitor.snapshot() == {}
    assert set(_versions(lab).values()) == {"2.0.1"}


def test_failed_health_check_stops_the_rollout_and_leaves_the_farm_drained(upgrade_lab):
    lab = upgrade_lab
    with lab.traffic() as traffic:
        ret, report = _orchestrate(lab, {"kind": "app", "version": "2.0.2"})
        time.sleep(0.5)
    assert ret.returncode != 0
    assert report["result"] is False and report["stopped"] is True
    (failed,) = report["failures"]
    assert "health check failed" in failed["error"] and "HTTP 500" in failed["error"]
    assert len(report["steps"]) == 1, "the rollout went on after a failed step"
    where = f"{failed['site']}/{failed['farm']}"
    others = ALL_FARMS - {where}
    assert {report["farms"][f] for f in others} == {"2.0.1"}
    assert report["farms"][where] == "2.0.2"
    assert traffic.failures == [], traffic.failures[:5]
    down = lab.monitor().snapshot()
    assert down == {
        failed["site"]: {failed["farm"]: {f"{failed['farm']}_m1", f"{failed['farm']}_m2"}}
    }

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not lab.notify_log.exists():
        time.sleep(1)
    record = json.loads(lab.notify_log.read_text().splitlines()[-1])
    event = record["event"].get("data", record["event"])
    assert event["farm"] == failed["farm"] and event["site"] == failed["site"]
    assert event["version"] == "2.0.2" and "HTTP 500" in event["error"]

    # Operator's way back: roll the farm's members back, then put it in service again.
    members = ",".join(failed["members"])
    ret = lab.salt_cli.run("-L", "farm.rollback", minion_tgt=members)
    assert ret.returncode == 0, ret
    ret = lab.salt_cli.run(
        "haproxy_tier.ready", f"farm={failed['farm']}", minion_tgt=f"u-lb-{failed['site']}"
    )
    assert ret.returncode == 0, ret
    assert lab.monitor().snapshot() == {}
    assert set(_versions(lab).values()) == {"2.0.1"}


def test_release_ready_event_runs_the_same_upgrade_through_the_reactor(upgrade_lab):
    lab = upgrade_lab
    with lab.monitor() as monitor, lab.traffic() as traffic:
        ret = lab.salt_cli.run(
            "event.send", "webfarm/release/ready", 'data={"version": "3.0.0"}', minion_tgt="u-lb-s1"
        )
        assert ret.returncode == 0, ret
        deadline = time.monotonic() + 150
        versions = {}
        while time.monotonic() < deadline:
            versions = _versions(lab)
            if set(versions.values()) == {"3.0.0"} and not monitor.snapshot():
                break
            time.sleep(2)
        time.sleep(0.5)
    assert set(versions.values()) == {"3.0.0"}, versions
    assert len(versions) == 8
    _assert_clean_traffic(traffic, {"2.0.1", "3.0.0"})
    assert monitor.max_farms_per_site == 1
    assert monitor.snapshot() == {}
