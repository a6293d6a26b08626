"""haproxy_tier through Salt's loader against real HAProxy (both tiers) and real backends."""

import re
import subprocess
import threading
import time
from collections import Counter

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from lab.haproxy_lab import Load
from lab.proc import wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def loaders_pillar(haproxy_lab):
    return haproxy_lab.pillar("site", "s1")


@pytest.fixture
def s1(haproxy_lab):
    return haproxy_lab.instances["s1"]


@pytest.fixture
def restore_s1(modules, s1):
    yield
    for farm in ("f1", "f2"):
        modules.haproxy_tier.ready(farm=farm, socket=s1.socket)
        modules.haproxy_tier.set_weight("100%", farm=farm, socket=s1.socket)


def test_first_response_sets_siteid_and_farmid(haproxy_lab):
    client = haproxy_lab.primary_client()
    status, data, new = client.get()
    assert status == 200
    assert new == {"SITEID": data["site"], "FARMID": data["farm"]}
    # X-Forwarded-For: the client as seen by the primary, then the primary as seen by the site LB.
    assert data["xff"][0] == "127.0.0.1"


def test_sticky_clients_keep_site_and_farm_and_members_share_it(haproxy_lab):
    firsts = Counter()
    for _ in range(6):
        client = haproxy_lab.primary_client()
        _, first, _ = client.get()
        firsts[(first["site"], first["farm"])] += 1
        seen = [client.get()[1] for _ in range(20)]
        assert {(d["site"], d["farm"]) for d in seen} == {(first["site"], first["farm"])}
        # The cookie is the farm's, not a member's: the farm's members share the client.
        assert {d["member"] for d in seen} == {1, 2}
        assert all(f"FARMID={first['farm']}" in d["cookie"] for d in seen)
    # New clients are spread over several site/farm pairs.
    assert len(firsts) >= 2


def test_servers_grouped_by_farm(modules, s1):
    groups = modules.haproxy_tier.servers(socket=s1.socket)
    assert set(groups) == {"f1", "f2"}
    assert set(groups["f1"]) == {"f1_m1", "f1_m2"}
    info = groups["f1"]["f1_m1"]
    assert info["status"] == "UP"
    assert info["admin"] == "ready"
    assert info["weight"] == 100
    assert info["address"] == "127.0.1.11"
    assert info["backend"] == "farm_f1"


def test_servers_of_primary_grouped_by_site(modules, haproxy_lab):
    groups = modules.haproxy_tier.servers(
        tier="primary", socket=haproxy_lab.instances["primary"].socket
    )
    assert groups == {
        "s1": {"s1_lb1": groups["s1"]["s1_lb1"]},
        "s2": {"s2_lb1": groups["s2"]["s2_lb1"]},
    }
    assert groups["s2"]["s2_lb1"]["status"] == "UP"


@pytest.mark.usefixtures("restore_s1")
def test_drain_moves_sticky_clients_to_other_farm_without_failure(modules, haproxy_lab, s1):
    with Load(*_site_address(haproxy_lab), clients=4, cookies={"FARMID": "f1"}) as load:
        thread, slow = _slow_request(modules, haproxy_lab, s1, "f1", 1)
        ret = modules.haproxy_tier.drain(farm="f1", timeout=20, socket=s1.socket)
        thread.join()
        moved = len(load.seen)
        wait_for(lambda: len(load.seen) > moved + 20, 15, "20 more requests after the drain")
    assert load.failed == []
    # The drain waited for the running slow request, which finished fine on farm f1.
    assert ret["sessions_left"] == 0 and ret["timed_out"] is False
    assert ret["seconds"] > 0.2
    assert slow["r"][0] == 200 and slow["r"][1]["farm"] == "f1"
    assert ret["farm"] == "f1" and ret["site"] == "s1"
    assert sorted(ret["servers"]) == ["f1_m1", "f1_m2"]
    # After the drain every client is on f2 and holds the f2 cookie.
    assert {farm for _, farm, _ in load.seen[moved:]} == {"f2"}
    assert all(c.cookies["FARMID"] == "f2" for c in load.clients)
    groups = modules.haproxy_tier.servers(socket=s1.socket)
    assert {i["admin"] for i in groups["f1"].values()} == {"maint"}
    assert {i["admin"] for i in groups["f2"].values()} == {"ready"}


@pytest.mark.usefixtures("restore_s1")
def test_ready_brings_a_drained_farm_back(modules, haproxy_lab, s1):
    modules.haproxy_tier.drain(farm="f1", timeout=5, socket=s1.socket)
    client = haproxy_lab.site_client("s1", {"FARMID": "f1"})
    assert client.get()[1]["farm"] == "f2"
    ret = modules.haproxy_tier.ready(farm="f1", socket=s1.socket)
    assert ret["previous"] == {"f1_m1": "maint", "f1_m2": "maint"}
    groups = modules.haproxy_tier.servers(socket=s1.socket)
    assert {i["admin"] for i in groups["f1"].values()} == {"ready"}
    sticky = haproxy_lab.site_client("s1", {"FARMID": "f1"})
    assert {sticky.get()[1]["farm"] for _ in range(6)} == {"f1"}
    # New clients get f1 again too.
    farms = {haproxy_lab.site_client("s1").get()[1]["farm"] for _ in range(8)}
    assert farms == {"f1", "f2"}


@pytest.mark.usefixtures("restore_s1")
def test_drain_and_ready_fire_events(modules, s1, monkeypatch):
    import webfarm_events

    fired = []

    def fire(salt_funcs, capability, action, outcome, data):
        fired.append((webfarm_events.tag(capability, action, outcome), dict(data)))
        return True

    monkeypatch.setattr(webfarm_events, "fire", fire)
    drained = modules.haproxy_tier.drain(farm="f2", timeout=5, socket=s1.socket)
    modules.haproxy_tier.ready(farm="f2", socket=s1.socket)
    assert [tag for tag, _ in fired] == ["webfarm/haproxy/drain/done", "webfarm/haproxy/ready/done"]
    assert [data["farm"] for _, data in fired] == ["f2", "f2"]
    payload = fired[0][1]
    assert payload["site"] == "s1" and payload["farm"] == "f2" and payload["tier"] == "site"
    assert payload["servers"] == ["f2_m1", "f2_m2"] and payload["timed_out"] is False
    assert drained["event_sent"] is True


@pytest.mark.usefixtures("restore_s1")
def test_drain_one_server_keeps_its_farm(modules, haproxy_lab, s1):
    ret = modules.haproxy_tier.drain(server="f1_m2", timeout=5, socket=s1.socket)
    assert ret["servers"] == ["f1_m2"]
    client = haproxy_lab.site_client("s1", {"FARMID": "f1"})
    seen = {(d["farm"], d["member"]) for d in (client.get()[1] for _ in range(8))}
    assert seen == {("f1", 1)}


@pytest.mark.usefixtures("restore_s1")
def test_drain_timeout_goes_to_maint_and_lets_the_session_finish(modules, haproxy_lab, s1):
    thread, slow = _slow_request(modules, haproxy_lab, s1, "f2", 2)
    ret = modules.haproxy_tier.drain(farm="f2", timeout=0.3, socket=s1.socket)
    assert ret["timed_out"] is True and ret["sessions_left"] == 1
    groups = modules.haproxy_tier.servers(socket=s1.socket)
    assert {i["admin"] for i in groups["f2"].values()} == {"maint"}
    thread.join()
    assert slow["r"][0] == 200 and slow["r"][1]["farm"] == "f2"


@pytest.mark.usefixtures("restore_s1")
def test_wait_drained_reports_running_sessions(modules, haproxy_lab, s1):
    thread, _ = _slow_request(modules, haproxy_lab, s1, "f1", 1.5)
    early = modules.haproxy_tier.wait_drained(farm="f1", timeout=0.2, socket=s1.socket)
    late = modules.haproxy_tier.wait_drained(farm="f1", timeout=10, socket=s1.socket)
    thread.join()
    assert early["drained"] is False and early["sessions"] == 1
    assert late["drained"] is True and late["sessions"] == 0


@pytest.mark.usefixtures("restore_s1")
def test_set_weight(modules, s1):
    assert modules.haproxy_tier.set_weight(10, server="f2_m1", socket=s1.socket) == {"f2_m1": 10}
    assert modules.haproxy_tier.set_weight("50%", farm="f1", socket=s1.socket) == {
        "f1_m1": 50,
        "f1_m2": 50,
    }
    assert modules.haproxy_tier.servers(socket=s1.socket)["f2"]["f2_m1"]["weight"] == 10


def test_primary_drain_site_moves_clients_to_other_site(modules, haproxy_lab):
    primary = haproxy_lab.instances["primary"].socket
    try:
        ret = modules.haproxy_tier.drain(site="s1", timeout=5, socket=primary)
        assert ret["tier"] == "primary" and ret["site"] == "s1"
        client = haproxy_lab.primary_client({"SITEID": "s1", "FARMID": "f1"})
        assert {client.get()[1]["site"] for _ in range(4)} == {"s2"}
        assert client.cookies["SITEID"] == "s2"
    finally:
        modules.haproxy_tier.ready(site="s1", socket=primary)
    client = haproxy_lab.primary_client({"SITEID": "s1"})
    assert client.get()[1]["site"] == "s1"


@pytest.mark.usefixtures("restore_s1")
def test_reload_under_load_fails_no_request_and_keeps_drains(modules, haproxy_lab, s1):
    modules.haproxy_tier.drain(server="f2_m2", timeout=5, socket=s1.socket)
    old_worker = s1.worker_pid()
    with Load(*_site_address(haproxy_lab), clients=4) as load:
        wait_for(lambda: load.ok > 20, 15, "20 requests through s1")
        reloads = [modules.haproxy_tier.reload("site") for _ in range(3)]
        before = load.ok
        wait_for(lambda: load.ok > before + 20, 15, "20 more requests after the reloads")
    assert load.failed == []
    assert reloads[0]["old_worker_pid"] == old_worker
    assert len({r["worker_pid"] for r in reloads} | {old_worker}) == 4
    assert modules.haproxy_tier.servers(socket=s1.socket)["f2"]["f2_m2"]["admin"] == "maint"


def test_reload_under_wrk_keepalive_load_fails_no_request(modules, haproxy_lab):
    address, port = _site_address(haproxy_lab)
    wrk = subprocess.Popen(
        ["wrk", "-t1", "-c8", "-d3s", f"http://{address}:{port}/"],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.7)
    for _ in range(2):
        modules.haproxy_tier.reload("site")
        time.sleep(0.4)
    out, _ = wrk.communicate(timeout=30)
    done = int(re.search(r"(\d+) requests in", out).group(1))
    assert done > 100, out
    assert "Socket errors" not in out and "Non-2xx" not in out, out


def test_render_and_validate_from_pillar(modules):
    text = modules.haproxy_tier.render("site")
    assert "cookie FARMID insert indirect nocache" in text
    assert "server f1_m1 127.0.1.11:" in text
    assert modules.haproxy_tier.validate("site")["valid"] is True


def test_render_takes_site_and_bind_of_this_lb_from_the_topology(modules, loaders, haproxy_lab):
    """No haproxy:site:name, no bind in pillar, no webfarm:site grain: the site whose ``lbs``
    list this minion, and its address there, as the topology says."""
    del loaders.opts["pillar"]["haproxy"]["site"]["bind"]
    del loaders.opts["pillar"]["haproxy"]["site"]["name"]
    lb = haproxy_lab.topology["sites"]["s2"]["lbs"][0]
    loaders.opts["id"] = lb["id"]
    text = modules.haproxy_tier.render("site")
    assert "frontend lb_site_s2\n" in text
    assert f"    bind {lb['address']}:{lb['port']}\n" in text
    primary = haproxy_lab.topology["primary_lb"][0]
    loaders.opts["id"] = primary["id"]
    assert f"    bind {primary['address']}:{primary['port']}\n" in modules.haproxy_tier.render(
        "primary"
    )
    with pytest.raises(SaltInvocationError, match="which site does this LB serve"):
        modules.haproxy_tier.render("site")


def test_status_of_running_lab(modules, s1):
    ret = modules.haproxy_tier.status("site")
    assert ret["running"] is True
    assert ret["master_pid"] == s1.master_pid()
    assert ret["worker_pid"] == s1.worker_pid()


def test_bad_arguments_are_clean_errors(modules, s1):
    with pytest.raises(SaltInvocationError, match="no farm 'f9'.*f1, f2"):
        modules.haproxy_tier.drain(farm="f9", socket=s1.socket)
    with pytest.raises(SaltInvocationError, match="no server 'f1_m7'"):
        modules.haproxy_tier.ready(server="f1_m7", socket=s1.socket)
    with pytest.raises(SaltInvocationError, match="name a farm"):
        modules.haproxy_tier.drain(socket=s1.socket)
    with pytest.raises(SaltInvocationError, match="weight"):
        modules.haproxy_tier.set_weight(999, farm="f1", socket=s1.socket)
    with pytest.raises(SaltInvocationError, match="timeout"):
        modules.haproxy_tier.wait_drained(farm="f1", timeout="soon", socket=s1.socket)
    with pytest.raises(SaltInvocationError, match="tier"):
        modules.haproxy_tier.servers(tier="edge")


def test_unreachable_socket_says_what_to_check(modules, tmp_path):
    with pytest.raises(CommandExecutionError, match="is it running"):
        modules.haproxy_tier.servers(socket=str(tmp_path / "nothing.sock"))


def _site_address(lab):
    client = lab.site_client("s1")
    return client.address, client.port


def _slow_request(modules, haproxy_lab, s1, farm, seconds):
    """A request to ``farm`` of s1 that its member holds open ``seconds`` s, in a thread;
    returns once s1 counts its session: ``(thread, {"r": client.get()'s answer})``."""
    slow = {}
    client = haproxy_lab.site_client("s1", {"FARMID": farm})
    thread = threading.Thread(target=lambda: slow.update(r=client.get(f"/?sleep={seconds}")))
    thread.start()
    servers = modules.haproxy_tier.servers
    wait_for(
        lambda: sum(i["sessions"] for i in servers(socket=s1.socket)[farm].values()) > 0,
        15,
        f"a session on {farm}",
    )
    return thread, slow
