"""VRRP failover of both HAProxy tiers: real keepalived and HAProxy in network namespaces.

The lab (lab/haproxy_vrrp_lab.py): two primary LBs sharing a VIP, two LBs of site
s1 sharing another, a single LB for site s2, web members, a client namespace. keepalived on
``lb-pb`` is started through the ``haproxy_tier.vrrp_configured`` state (as minion lb-pb);
the other LBs' from the same renderer by the lab. Sticky sessions then run through the
primary VIP while LBs fail in each way the issue names.
"""

import copy
import json
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from saltfactories.utils.functional import Loaders

from lab.haproxy_vrrp_lab import (
    APACHE_MEMBER,
    CLIENT,
    FLOOD,
    PRIMARY_VIP,
    S1_VIP,
    SECRET,
    Session,
    StickyTraffic,
    run,
    wait_for,
)
from lab.proc import stop_process
from lab.shipper import load_shipper
from tests.functional.states.test_accesslog import acl_pillar, all_ok, apply

APACHE_MODULES = "/usr/lib/apache2/modules"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def loaders_pillar(request, wf18_vrrp_lab):
    """lb-pb's pillar; a test parametrizes ``loaders_pillar`` (indirect) with keys to put
    into its ``haproxy:vrrp``."""
    pillar = copy.deepcopy(wf18_vrrp_lab.lbs["pb"].pillar)
    pillar["haproxy"]["vrrp"]["netns"] = wf18_vrrp_lab.lbs["pb"].ns
    pillar["haproxy"]["vrrp"].update(getattr(request, "param", {}))
    return pillar


@pytest.fixture
def loaders(minion_config, loaders_pillar):
    """The loader as minion ``lb-pb`` (the module renders for the minion it runs on)."""
    opts = dict(minion_config)
    opts["id"] = "lb-pb"
    opts["pillar"] = loaders_pillar
    loaders = Loaders(opts)
    yield loaders
    loaders.reset_state()


def _as(lb_from, lb_to, text):
    """``text`` of ``lb_from`` with its own address and lab directory swapped for ``lb_to``'s
    (each lab LB keeps its files in a directory of its own)."""
    own = str(Path(lb_from.settings["config"]).parent)
    other = str(Path(lb_to.settings["config"]).parent)
    return text.replace(own, other).replace(lb_from.address, lb_to.address)


def _bind_lines(text):
    return [line for line in text.splitlines() if line.strip().startswith("bind ")]


def _text_or_none(path):
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        return None


@pytest.mark.parametrize(
    "loaders_pillar", [{"auth_pass": SECRET}, {"version": 3, "auth_pass": SECRET}], indirect=True
)
def test_vrrp3_with_a_password_is_a_clean_error_and_writes_nothing(states, wf18_vrrp_lab, testmode):
    pb = wf18_vrrp_lab.lbs["pb"]
    before, pid = _text_or_none(pb.vrrp["config"]), pb.keepalived_pid()
    ret = states.haproxy_tier.vrrp_configured("vrrp", test=testmode)
    assert ret.result is False
    assert "haproxy:vrrp:auth_pass is set but haproxy:vrrp:version is 3" in ret.comment
    assert "haproxy:vrrp:version: 2" in ret.comment
    assert ret.changes == {}
    assert SECRET not in str(ret.raw)
    assert _text_or_none(pb.vrrp["config"]) == before and pb.keepalived_pid() == pid


@pytest.mark.parametrize(
    "loaders_pillar", [{"version": 2, "advert_int": 1, "auth_pass": SECRET}], indirect=True
)
def test_vrrp2_on_request_renders_the_password_masked(states, modules, wf18_vrrp_lab):
    pb = wf18_vrrp_lab.lbs["pb"]
    before = _text_or_none(pb.vrrp["config"])
    ret = states.haproxy_tier.vrrp_configured("vrrp", test=True)
    assert ret.result is None
    assert "+    version 2\n" in ret.changes["diff"]
    assert "+        auth_pass ********\n" in ret.changes["diff"]
    assert SECRET not in str(ret.raw)
    rendered = modules.haproxy_tier.vrrp_render()
    assert "auth_type PASS" in rendered and "auth_pass ********" in rendered
    assert SECRET not in rendered
    assert _text_or_none(pb.vrrp["config"]) == before


def test_vrrp_state_starts_keepalived_on_the_backup(states, modules, wf18_vrrp_lab):
    lab = wf18_vrrp_lab
    pb = lab.lbs["pb"]
    ret = states.haproxy_tier.vrrp_configured("vrrp", test=True)
    assert ret.result is None
    assert ret.comment == f"Would have replaced {pb.vrrp['config']} and started keepalived"
    assert "+    version 3\n+    advert_int 0.5\n" in ret.changes["diff"]
    assert "+    check_unicast_src\n" in ret.changes["diff"]
    assert "auth" not in ret.changes["diff"]
    assert not Path(pb.vrrp["config"]).exists()

    ret = states.haproxy_tier.vrrp_configured("vrrp")
    assert ret.result is True, ret.comment
    assert ret.comment == "keepalived config written and keepalived started"
    assert ret.changes["started"]["pid"] == pb.keepalived_pid()
    assert stat.S_IMODE(Path(pb.vrrp["config"]).stat().st_mode) == 0o600
    assert Path(pb.vrrp["config"]).read_text() == pb.keepalived_config()

    again = states.haproxy_tier.vrrp_configured("vrrp")
    assert again.result is True and again.changes == {}
    assert again.comment == "keepalived config is already as wanted and running"

    # pa stays master (nopreempt; pb joins as backup), pb reports it does not hold the VIP.
    time.sleep(4)
    status = modules.haproxy_tier.vrrp_status()
    assert status["running"] and status["pid"] == pb.keepalived_pid()
    assert status["vips"] == {"primary": {"address": PRIMARY_VIP, "held": False}}
    assert lab.master("primary") == "pa"
    assert modules.haproxy_tier.vrrp_render() == pb.keepalived_config()


def test_backup_runs_the_same_config_rendered_from_the_same_pillar(modules, wf18_vrrp_lab):
    lab = wf18_vrrp_lab
    pa, pb = lab.lbs["pa"], lab.lbs["pb"]
    # What the module renders on lb-pb is what pb's HAProxy runs.
    rendered = modules.haproxy_tier.render(tier="primary")
    assert rendered == Path(pb.settings["config"]).read_text()
    running_a = Path(pa.settings["config"]).read_text()
    # Both bind the VIP (transparent: pb does not hold it); only the own-address line differs.
    assert _bind_lines(rendered) == [
        f"    bind {pb.address}:80",
        f"    bind {PRIMARY_VIP}:80 transparent",
    ]
    assert _bind_lines(running_a) == [
        f"    bind {pa.address}:80",
        f"    bind {PRIMARY_VIP}:80 transparent",
    ]
    assert _as(pb, pa, rendered) == running_a
    # The site LBs' pair too.
    s1a, s1b = lab.lbs["s1a"], lab.lbs["s1b"]
    s1a_text = Path(s1a.settings["config"]).read_text()
    assert _as(s1a, s1b, s1a_text) == Path(s1b.settings["config"]).read_text()
    # keepalived: the same instance, peers from the topology, only priority/addresses differ.
    a, b = Path(pa.vrrp["config"]).read_text(), pb.keepalived_config()
    assert "virtual_router_id 181" in a and "virtual_router_id 181" in b
    swapped = (
        a.replace(pa.address, "\0").replace(pb.address, pa.address).replace("\0", pb.address)
        .replace("router_id lb-pa", "router_id lb-pb").replace("priority 150", "priority 140")
    )  # fmt: skip
    assert "    version 3\n" in a and "auth" not in a
    assert f"    check_unicast_src\n    unicast_src_ip {pa.address}\n" in a
    assert swapped == b


ROGUE_CONF = """\
global_defs {{
    router_id rogue
}}

vrrp_instance primary {{
    state MASTER
    interface eth0
    virtual_router_id 181
    priority 254
    version 3
    advert_int 0.5
    unicast_src_ip {rogue}
    unicast_peer {{
{peers}
    }}
    virtual_ipaddress {{
        {vip}/32 dev lo
    }}
}}
"""


def test_adverts_from_a_host_the_topology_does_not_name_are_ignored(wf18_vrrp_lab, tmp_path):
    """VRRPv3 has no password: a host outside the topology sends the primary instance's
    adverts (same router id and VIP, priority 254, unicast to both primary LBs). Without
    check_unicast_src the master would yield to it and drop the VIP; with it both LBs ignore
    the adverts and the master keeps the VIP. (The rogue holds its copy of the VIP on its loopback
    and answers no ARP for it on the lab's link (arp_ignore 1), so only VRRP is tested.)"""
    lab = wf18_vrrp_lab
    pb = lab.lbs["pb"]
    if pb.keepalived_pid() is None:  # run alone: start lb-pb's keepalived as the state would
        pb.start_keepalived()
    wait_for(lambda: lab.master("primary") is not None, 15, "primary VRRP master")
    master = lab.master("primary")
    rogue = f"{lab.prefix}-flood"

    def in_rogue(*argv):
        return run(["ip", "netns", "exec", rogue, *argv])

    for conf in ("all", "eth0"):
        in_rogue("sysctl", "-q", "-w", f"net.ipv4.conf.{conf}.arp_ignore=1")
    peers = "\n".join(f"        {lab.lbs[n].address}" for n in ("pa", "pb"))
    conf = tmp_path / "rogue.conf"
    conf.write_text(ROGUE_CONF.format(rogue=FLOOD, peers=peers, vip=PRIMARY_VIP))
    log = open(tmp_path / "rogue.log", "ab")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(
        ["ip", "netns", "exec", rogue, "keepalived", "--dont-fork", "--log-console", "--vrrp",
         "-f", str(conf), "-p", str(tmp_path / "k.pid"), "-r", str(tmp_path / "v.pid")],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    log.close()
    try:
        wait_for(
            lambda: PRIMARY_VIP in in_rogue("ip", "-4", "addr", "show", "dev", "lo").stdout,
            10,
            "the rogue VRRP instance in MASTER state (sending its adverts)",
        )
        # Had the master yielded to the rogue it would stay backup for as long as the
        # adverts come, so it must hold the VIP at every sample. (The other LB is sampled
        # too: under CI load it can miss the master's adverts for a moment and claim the
        # VIP as well; that is not the rogue's doing and settles by itself.)
        samples = []
        for _ in range(12):  # 3 s: 6 adverts of priority 254 at each primary LB
            time.sleep(0.25)
            samples.append(sorted(n for n in ("pa", "pb") if lab.lbs[n].holds_vip()))
        assert all(master in held for held in samples), (samples, _keepalived_logs(lab, tmp_path))
        assert proc.poll() is None, (tmp_path / "rogue.log").read_text()
    finally:
        stop_process(proc, group=True)
    wait_for(lambda: lab.master("primary") == master, 5, f"lb-{master} alone holding the VIP")


def _keepalived_logs(lab, tmp_path):
    """The last lines of each primary LB's and the rogue's keepalived log (for a failure)."""
    paths = [Path(lab.lbs[n].vrrp["config"] + ".log") for n in ("pa", "pb")]
    tails = {}
    for path in [*paths, tmp_path / "rogue.log"]:
        if path.exists():
            tails[path.name] = path.read_text(errors="replace").splitlines()[-15:]
    return tails


def _phase(lab, traffic, label, fail, recover, settle=6.0, backup=None):
    """Break something under traffic, wait for the VIP to answer again, then repair it.
    ``(failed requests, seconds until the VIP answered again, whether ``backup`` held the
    VIP before the repair)``."""
    start, failed, seconds = traffic.break_and_wait(fail, settle)
    ok = sum(1 for e in traffic.since(start) if e[2])
    print(f"    {label}: {failed} failed requests, VIP answered again after "
          f"{'-' if seconds is None else f'{seconds:.2f}'} s ({ok} ok)")  # fmt: skip
    print(f"      (started {start - traffic.events[0][0]:.2f} s after the traffic)")
    took_over = backup is not None and lab.lbs[backup].holds_vip()
    recover()
    return failed, seconds, took_over


def _other(lab, tier):
    names = ("pa", "pb") if tier == "primary" else ("s1a", "s1b")
    master = lab.master(tier)
    assert master is not None, f"no single {tier} master"
    return lab.lbs[master], next(n for n in names if n != master)


def test_failover_of_each_tier_keeps_sticky_sessions(wf18_vrrp_lab, capsys):
    lab = wf18_vrrp_lab
    pb = lab.lbs["pb"]
    if pb.keepalived_pid() is None:  # run alone: start lb-pb's keepalived as the state would
        pb.start_keepalived()
    wait_for(lambda: lab.master("primary") is not None, 15, "primary VRRP master")
    traffic = StickyTraffic(lab, PRIMARY_VIP, sessions=6).start()
    results = {}
    try:
        wait_for(lambda: len(traffic.first_places()) == 6, 15, "every session served")
        time.sleep(1)

        m, other = _other(lab, "primary")
        results["primary HAProxy killed"] = _phase(
            lab, traffic, f"kill -9 HAProxy on {m.id}", m.kill_haproxy, m.start_haproxy,
            backup=other,
        )  # fmt: skip
        assert lab.master("primary") == other
        wait_for(lambda: m.http_ok(m.address), 10, "restarted HAProxy")

        # The master's keepalived dies (SIGKILL: no goodbye advert, the VIP stays on its
        # link until the other LB takes it and announces it by gratuitous ARP).
        m, other = _other(lab, "primary")
        results["primary keepalived killed"] = _phase(
            lab, traffic, f"kill -9 keepalived on {m.id}", m.kill_keepalived, m.start_keepalived,
            backup=other,
        )  # fmt: skip
        wait_for(lambda: lab.master("primary") is not None, 15, "one primary master again")

        # The whole master host drops off the network.
        m, other = _other(lab, "primary")
        results["primary host down"] = _phase(
            lab, traffic, f"{m.id} eth0 down", lambda: m.set_link(False),
            lambda: m.set_link(True), backup=other,
        )  # fmt: skip
        wait_for(lambda: lab.master("primary") is not None, 15, "one primary master again")

        # The site tier: s1's master HAProxy dies under the same sessions.
        s, other = _other(lab, "s1")
        results["site s1 HAProxy killed"] = _phase(
            lab, traffic, f"kill -9 HAProxy on {s.id}", s.kill_haproxy, s.start_haproxy,
            backup=other,
        )  # fmt: skip
        results["back in service"] = _phase(
            lab, traffic, "all LBs back", lambda: None, lambda: None, settle=3
        )
    finally:
        traffic.stop()
    with capsys.disabled():
        print()
        for kind, (failed, seconds, _moved) in results.items():
            print(f"    failover {kind}: {failed} failed requests, VIP answered again after "
                  f"{'-' if seconds is None else f'{seconds:.2f}'} s")  # fmt: skip
    for kind, (failed, seconds, moved) in results.items():
        if failed:
            assert seconds is not None, f"{kind}: the VIP never answered again"
        if kind != "back in service":
            assert moved, f"{kind}: the backup did not take the VIP"
    assert traffic.unsticky() == [], f"sessions that lost their stickiness: {traffic.moves()}"
    assert results["back in service"][0] == 0
    assert results["primary HAProxy killed"][0] > 0, "the failure did not hit the traffic"
    assert lab.master("primary") is not None and lab.master("s1") is not None


APACHE_CONF = """\
ServerRoot "{root}"
DefaultRuntimeDir "{root}/run"
PidFile "{root}/run/httpd.pid"
Listen {address}:80
ServerName {address}
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule dir_module {modules}/mod_dir.so
LoadModule remoteip_module {modules}/mod_remoteip.so
User www-data
Group www-data
ErrorLog "{root}/error.log"
DocumentRoot "{docroot}"
DirectoryIndex member.json
<Directory "{docroot}">
    Require all granted
</Directory>
LogFormat "%h %l %u %t \\"%r\\" %>s %b \\"%{{Referer}}i\\" \\"%{{User-agent}}i\\"" combined
CustomLog "{root}/access.log" combined
Include "{include}"
"""


def test_the_web_members_access_log_names_the_client_through_both_tiers(
    modules, wf18_vrrp_lab, tmp_path
):
    """A request from the client namespace through the primary VIP and site s2's LB to an
    Apache member: the combined LogFormat, with the accesslog SLS's RemoteIP settings
    (trusted proxies = the topology's LBs and VIPs), logs the client, even when the client
    sends an X-Forwarded-For of its own."""
    if shutil.which("apache2") is None or not Path(APACHE_MODULES, "mod_remoteip.so").exists():
        pytest.skip("apache2 with mod_remoteip is not installed (apt-get install apache2)")
    lab = wf18_vrrp_lab
    pillar, root = acl_pillar(tmp_path, "mongodb://127.0.0.1:9/")  # no store: the shipper spools
    all_ok(apply(modules, "accesslog.piped", pillar), False)
    include = root / "apache2/conf-enabled/webfarm-accesslog.conf"
    text = include.read_text()
    proxies = [lb.address for lb in lab.lbs.values()] + [PRIMARY_VIP, S1_VIP]
    line = next(x for x in text.splitlines() if x.startswith("RemoteIPInternalProxy "))
    assert sorted(line.split()[1:]) == sorted(proxies)

    (_site_farm_member, address) = APACHE_MEMBER
    docroot = Path(tempfile.mkdtemp(prefix="wf18-apache-docroot-"))
    try:
        docroot.chmod(0o755)
        (docroot / "member.json").write_text(json.dumps({"site": "s2", "farm": "f1", "member": 3}))
        (docroot / "member.json").chmod(0o644)
        apache_root = tmp_path / "apache"
        (apache_root / "run").mkdir(parents=True)
        conf = apache_root / "httpd.conf"
        conf.write_text(
            APACHE_CONF.format(
                root=apache_root, address=address, modules=APACHE_MODULES, docroot=docroot,
                include=include,
            )
        )  # fmt: skip
        proc = subprocess.Popen(
            ["ip", "netns", "exec", lab.web, "apache2", "-f", str(conf), "-DFOREGROUND"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            s2 = lab.lbs["s2"]
            wait_for(
                lambda: (
                    modules.haproxy_tier.servers(socket=s2.settings["socket"])["f1"]["f1_m3"][
                        "status"
                    ]
                    == "UP"
                ),
                20,
                "the Apache member UP on s2's LB",
            )

            def visit(spoof=None):
                session = Session(PRIMARY_VIP)
                session.cookies = {"SITEID": "s2", "FARMID": "f1"}
                for _ in range(12):  # round robin over f1's three members
                    if spoof:
                        session.extra_headers = {"X-Forwarded-For": spoof}
                    status, data = session.get(f"/?visit={spoof or 'plain'}")
                    if status == 200 and data["member"] == 3:
                        return True
                return False

            assert lab.call_in(f"{lab.prefix}-client", visit)
            assert lab.call_in(f"{lab.prefix}-client", lambda: visit("192.0.2.66"))
        finally:
            stop_process(proc, group=True)
        log = (apache_root / "access.log").read_text().splitlines()
    finally:
        shutil.rmtree(docroot, ignore_errors=True)
    parser = load_shipper("webfarm_shipper_wf18").LogFormat("combined")
    visits = [parser.parse(x) for x in log if "visit=" in x]
    assert {(v["query"], v["ip"]) for v in visits} == {
        ("visit=plain", CLIENT),
        ("visit=192.0.2.66", CLIENT),  # a client's own X-Forwarded-For names nobody
    }
