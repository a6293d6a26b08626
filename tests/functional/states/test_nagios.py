"""``nagios/server`` and ``nagios/client`` applied through Salt's loader, then a real nagios4.

The server SLS generates the key pair and publishes it with ``mine.update`` (masterless mine,
real ``mine.get``); the client SLS takes the key from that mine, and the server its hosts
(``grains.item webfarm ipv4``; the ``webfarm`` grain is set on the loader's grains).
nagios4 runs as a daemon with the generated config, compressed intervals, against the
session sshd (lab/sshd.py), and is stopped by the PID in its lock file.
"""

import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from saltfactories.utils.functional import Loaders

from lab.nagios import FAST_TIMING, client_paths, parse_status, remove_user, server_paths
from lab.sshd import kill_pids, short_tmpdir, ssh_masters

NAGIOS = "/usr/sbin/nagios4"
FILES = ["nagios.cfg", "resource.cfg", "webfarm.cfg"]
WEBFARM_GRAIN = {"role": "web", "site": "s1", "farm": "f1", "member": 1, "address": "127.0.0.1"}

pytestmark = pytest.mark.timeout(180)


def nagios_ids():
    import pwd

    entry = pwd.getpwnam("nagios")
    return entry.pw_uid, entry.pw_gid


def base_pillar(root, user, sshd, minion_id="functional-minion"):
    services = {
        "*": [{"description": "dummy", "check": "check_dummy 0 fine"}],
        "web": [{"description": "load", "check": "check_load -w 1000,1000,1000 -c 2000,2000,2000"}],
    }
    var = root / "var"
    return {
        "mine_functions": {
            "webfarm_nagios_pubkey": [{"mine_function": "file.read"}, f"{root}/nh/.ssh/id.pub"],
            "webfarm_nagios_host": [{"mine_function": "grains.item"}, "webfarm", "ipv4"],
            "webfarm_nagios_hostkeys": [
                {"mine_function": "ssh.host_keys"},
                {"keydir": str(getattr(sshd, "workdir", "/nonexistent"))},
                {"private": False},
                {"certs": False},
            ],
        },
        # Master-side: the topology names this minion (a web server); the mine fills in its
        # address. The monitor (this minion too) has its source address from pillar.
        "webfarm": {"topology": {"minions": {minion_id: "web"}}},
        "nagios": {
            "user": user,
            "monitors": {minion_id: {"from": ["127.0.0.1"]}},
            "client": {
                **client_paths(root),
                "plugins": ["check_dummy", "check_load"],
                "sshd": {"manage": False},
            },
            "server": {
                "pkgs": [],
                "config_dir": f"{root}/etc",
                "staging_dir": f"{root}/etc/staging",
                "key": f"{root}/nh/.ssh/id",
                "known_hosts": f"{root}/nh/.ssh/known_hosts",
                "control_dir": f"{root}/cm",
                "tmpfiles_dir": "",
                "cleaner": f"{root}/lib/nagios-ssh-clean",
                "cleaner_cron": False,
                "reload": "lockfile",
                "ssh_port": sshd.port,
                **server_paths(var),
                **FAST_TIMING,
                "services": services,
            },
        },
    }


def make_loaders(minion_config, pillar):
    opts = dict(minion_config)
    opts["pillar"] = pillar
    return Loaders(opts)


def apply(loaders, mods, pillar=None, test=False):
    """state.sls through ``loaders``; ``pillar`` is merged over the loaders' pillar."""
    kwargs = {"test": test}
    if pillar is not None:
        kwargs["pillar"] = pillar
    return loaders.modules.state.sls(mods, **kwargs).raw


def apply_once(minion_config, mods, pillar, test=False):
    loaders = make_loaders(minion_config, pillar)
    try:
        return apply(loaders, mods, test=test)
    finally:
        loaders.reset_state()


def failures(ret):
    return {k: v["comment"] for k, v in ret.items() if v["result"] is False}


def changed(ret):
    return {v["__id__"] for v in ret.values() if v["changes"]}


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def env(minion_config, sshd_server):
    root = short_tmpdir("wfg-")
    uid, gid = nagios_ids()
    for sub in ("var", "nh"):
        (root / sub).mkdir(mode=0o755)
        os.chown(root / sub, uid, gid)
    user = f"wfg{secrets.token_hex(4)}"
    pillar = base_pillar(root, user, sshd_server, minion_config["id"])
    # One loader for the module: the masterless mine lives in its cachedir.
    loaders = make_loaders(minion_config, pillar)
    loaders.opts["grains"]["webfarm"] = WEBFARM_GRAIN
    state = {
        "root": root,
        "user": user,
        "pillar": pillar,
        "sshd": sshd_server,
        "nagios_pid": None,
        "loaders": loaders,
    }
    try:
        yield state
    finally:
        if state["nagios_pid"]:
            kill_pids([state["nagios_pid"]])
            wait_for(
                lambda: not Path(f"/proc/{state['nagios_pid']}").exists(), 20, "nagios to stop"
            )
        for sock in (root / "cm").glob("*") if (root / "cm").exists() else []:
            kill_pids(ssh_masters(sock), signal.SIGKILL)
        remove_user(user)
        shutil.rmtree(root, ignore_errors=True)
        loaders.reset_state()


def status_of(env):
    path = env["root"] / "var" / "status.dat"
    return {s["service_description"]: s for s in parse_status(path)} if path.exists() else {}


def test_server_then_client_then_nagios_sees_services_ok(minion_config, env):
    root = env["root"]
    # First run: no host in the mine yet; the key pair is made and published.
    ret = apply(env["loaders"], "nagios.server")
    assert not failures(ret), failures(ret)
    assert {"nagios-server-key", "nagios-server-publish-key"} <= changed(ret)
    assert "No host to monitor yet" in next(
        v["comment"] for v in ret.values() if v["__id__"] == "nagios-server-config"
    )
    assert not (root / "etc" / "nagios.cfg").exists()
    key = root / "nh" / ".ssh" / "id"
    assert key.stat().st_uid == nagios_ids()[0] and key.stat().st_mode & 0o077 == 0

    ret = apply(env["loaders"], "nagios.client")
    assert not failures(ret), failures(ret)
    pubkey = (root / "nh" / ".ssh" / "id.pub").read_text().split()[1]
    assert pubkey in (root / "home" / ".ssh" / "authorized_keys").read_text()

    # Second run: this minion published itself (role web, address 127.0.0.1) to the mine.
    ret = apply(env["loaders"], "nagios.server")
    assert not failures(ret), failures(ret)
    assert {"nagios-server-verify", "nagios-server-live-webfarm.cfg"} <= changed(ret)
    for f in FILES:
        assert (root / "etc" / f).read_bytes() == (root / "etc" / "staging" / f).read_bytes()
    objects = (root / "etc" / "webfarm.cfg").read_text()
    assert "ControlMaster=auto" in objects and f"ControlPath={root}/cm/$HOSTNAME$" in objects
    assert "ControlPersist=10m" in objects and "-t 10" in objects
    assert "service_description     load" in objects  # the web role's service, from the mine
    resource = (root / "etc" / "resource.cfg").read_text()
    # The seed's macros: $USER5$ is the check user (-l), $USER6$ the private key (-i).
    assert f"$USER6$={root}/nh/.ssh/id" in resource and f"$USER5$={env['user']}" in resource
    assert "-l $USER5$ -i $USER6$" in objects

    subprocess.run(
        [NAGIOS, "-d", str(root / "etc" / "nagios.cfg")], check=True, capture_output=True
    )
    lock = root / "var" / "nagios.pid"
    env["nagios_pid"] = int(
        wait_for(lambda: lock.exists() and lock.read_text().strip(), 20, "lock file")
    )

    def all_ok():
        status = status_of(env)
        return (
            {"dummy", "load"} <= set(status)
            and all(
                s["current_state"] == "0" and s["has_been_checked"] == "1" for s in status.values()
            )
            and status
        )

    status = wait_for(all_ok, 60, "both services OK in status.dat")
    assert status["dummy"]["plugin_output"] == "OK: fine"
    assert status["load"]["plugin_output"].startswith("LOAD OK")

    # Several check rounds later: one ssh master, and no new login since the first round
    # (the first checks of both services may race, and the loser connects on its own).
    logins = env["sshd"].log_text().count(f"Accepted publickey for {env['user']} ")
    assert 1 <= logins <= len(status)
    first = {name: int(s["last_check"]) for name, s in status.items()}
    wait_for(
        lambda: all(int(status_of(env)[n]["last_check"]) >= first[n] + 4 for n in first),
        30,
        "more check rounds",
    )
    sockets = list((root / "cm").iterdir())
    assert [s.name for s in sockets] == [env["loaders"].opts["id"]]
    assert len(ssh_masters(sockets[0])) == 1
    assert env["sshd"].log_text().count(f"Accepted publickey for {env['user']} ") == logins


def test_reapply_is_idempotent(minion_config, env, testmode):
    ret = apply(env["loaders"], ["nagios.server", "nagios.client"], test=testmode)
    assert not failures(ret), failures(ret)
    assert changed(ret) == set()
    assert all(v["result"] is True for v in ret.values())


def with_services(pillar, extra):
    import copy

    pillar = copy.deepcopy(pillar)
    pillar["nagios"]["server"]["services"]["web"] = (
        pillar["nagios"]["server"]["services"]["web"] + extra
    )
    return pillar


def test_invalid_config_never_replaces_the_good_one(minion_config, env, testmode):
    live = {f: (env["root"] / "etc" / f).read_bytes() for f in FILES}
    pillar = with_services(
        env["pillar"],
        [{"description": "broken", "check": "check_dummy 0", "command": "no_such_command"}],
    )
    ret = apply(env["loaders"], "nagios.server", pillar, test=testmode)
    by_id = {v["__id__"]: v for v in ret.values()}
    if testmode:
        assert by_id["nagios-server-staged-webfarm.cfg"]["result"] in (None, True)
        assert all(v["result"] is not False for v in ret.values())
    else:
        assert by_id["nagios-server-verify"]["result"] is False
        assert "no_such_command" in str(by_id["nagios-server-verify"]["changes"])
        for f in FILES:
            assert by_id[f"nagios-server-live-{f}"]["result"] is False
            assert by_id[f"nagios-server-live-{f}"]["changes"] == {}
        assert "nagios-server-reload" not in by_id or not by_id["nagios-server-reload"]["changes"]
    assert {f: (env["root"] / "etc" / f).read_bytes() for f in FILES} == live
    assert "broken" not in (env["root"] / "etc" / "webfarm.cfg").read_text()
    # Nagios was not reloaded and keeps checking.
    assert Path(f"/proc/{env['nagios_pid']}").exists()
    before = int(status_of(env)["dummy"]["last_check"])
    wait_for(lambda: int(status_of(env)["dummy"]["last_check"]) > before, 15, "another check")


def test_valid_change_goes_live_and_reloads_nagios(minion_config, env):
    pillar = with_services(
        env["pillar"], [{"description": "second", "check": "check_dummy 1 watch-it"}]
    )
    # The hosts' dispatcher runs only the checks of their table (written by nagios.client
    # from the same pillar services), so the new check reaches the clients first, as in a
    # highstate of the same pillar; the server alone would get "refused" (UNKNOWN) back.
    ret = apply(env["loaders"], ["nagios.client", "nagios.server"], pillar)
    assert not failures(ret), failures(ret)
    assert "watch-it" in (env["root"] / "lib" / "checks.json").read_text()
    assert {
        "nagios-client-check-table",
        "nagios-server-live-webfarm.cfg",
        "nagios-server-reload",
    } <= changed(ret)
    status = wait_for(
        lambda: status_of(env).get("second", {}).get("has_been_checked") == "1" and status_of(env),
        40,
        "the new service",
    )
    assert status["second"]["current_state"] == "1"
    assert status["second"]["plugin_output"] == "WARNING: watch-it"
    assert Path(f"/proc/{env['nagios_pid']}").exists()


# --- bad pillar: a clear failure, nothing changed --------------------------------------------


GOOD_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB nagios@m"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("client", "plugins"), ["negate"], "runs arbitrary commands"),
        (("client", "plugins"), ["check_nonexistent"], "not found in /usr/lib/nagios/plugins"),
        (("client", "plugins"), ["../../bin/sh"], "must be a plain file name"),
        (("monitors", "m1", "from"), ['127.0.0.1" ssh-rsa AAAA'], "not an IP address or CIDR"),
        (("monitors", "m1", "from"), ["*"], "not an IP address or CIDR"),
        (("monitors", "m1", "from"), ["!10.0.0.1"], "not an IP address or CIDR"),
        (("monitors", "m1", "from"), ["10.0.0.0/8,127.0.0.1"], "not an IP address or CIDR"),
        (("monitors", "m1", "from"), ["300.1.1.1"], "not an IP address or CIDR"),
        (("monitors", "m1", "pubkey"), "ssh-ed25519 AAAA command=/bin/sh", "not an OpenSSH"),
        (("monitors", "m1", "pubkey"), "", "no public key"),
        (("monitors", "m*"), {"from": ["127.0.0.1"]}, "monitor id m* is not a minion id"),
        (("client", "home"), "relative/home", "must be an absolute path"),
        (("checks",), [{"plugin": "check_disk", "args": []}], "not in the allow-list"),
        (("client", "limits"), {"cpu": "10; rm"}, "must be one of cpu"),
        (("client", "sshd"), {"manage": False, "reload": "restart"}, "sshd:reload must be"),
    ],
)
def test_bad_client_pillar_fails_cleanly(minion_config, testmode, path, value, message):
    root = short_tmpdir("wfb-")
    user = f"wfb{secrets.token_hex(4)}"
    try:
        pillar = base_pillar(root, user, SimpleNamespace(port=22, known_hosts_line="x"))
        pillar["nagios"]["monitors"] = {"m1": {"from": ["127.0.0.1"], "pubkey": GOOD_KEY}}
        where = pillar["nagios"]
        for key in path[:-1]:
            where = where[key]
        where[path[-1]] = value
        ret = apply_once(minion_config, "nagios.client", pillar, test=testmode)
        (only,) = ret.values()
        assert only["result"] is False
        assert message in only["comment"], only["comment"]
        assert only["changes"] == {}
        assert not (root / "lib").exists() and not (root / "home").exists()
        assert subprocess.run(["id", user], capture_output=True).returncode != 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize(
    ("services", "message"),
    [
        (
            [{"description": "evil", "check": "check_load; /bin/sh"}],
            "must be a plugin and arguments",
        ),
        ([{"description": "evil", "check": "check_load $(id)"}], "must be a plugin and arguments"),
        ([{"description": "bad!name", "check": "check_load"}], "has characters Nagios refuses"),
    ],
)
def test_bad_server_pillar_fails_cleanly(minion_config, testmode, services, message):
    root = short_tmpdir("wfb-")
    try:
        pillar = base_pillar(root, "wfbnobody", SimpleNamespace(port=22, known_hosts_line="x"))
        pillar["nagios"]["server"]["services"] = {"*": services}
        pillar["nagios"]["server"]["hosts_from_topology"] = False
        pillar["nagios"]["server"]["hosts"] = {"web1": {"address": "127.0.0.1", "roles": ["web"]}}
        ret = apply_once(minion_config, "nagios.server", pillar, test=testmode)
        (only,) = ret.values()
        assert only["result"] is False and message in only["comment"]
        assert list(root.iterdir()) == []
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_client_without_key_or_monitor_address_fails_cleanly(minion_config):
    """A monitor the pillar names but gives no address, and that published no key."""
    root = short_tmpdir("wfb-")
    try:
        pillar = base_pillar(root, "wfbnobody", SimpleNamespace(port=22, known_hosts_line="x"))
        pillar["nagios"]["monitors"] = {"no-such-monitor": {}}
        ret = apply_once(minion_config, "nagios.client", pillar)
        (only,) = ret.values()
        assert only["result"] is False
        assert "monitor no-such-monitor: no source address" in only["comment"]
        assert "monitor no-such-monitor: no public key" in only["comment"]
        pillar["nagios"]["monitors"] = {}
        ret = apply_once(minion_config, "nagios.client", pillar)
        (only,) = ret.values()
        assert only["result"] is False and "no monitoring host" in only["comment"]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_example_pillar_renders_the_production_layout(minion_config, repo_root):
    """pillar/nagios.sls as shipped (plus one host) renders: systemd reload, cron cleaner."""
    import yaml

    pillar = yaml.safe_load((repo_root / "pillar" / "nagios.sls").read_text())
    pillar.update(yaml.safe_load((repo_root / "pillar" / "webfarm" / "topology.sls").read_text()))
    loaders = make_loaders(minion_config, pillar)
    try:
        low = loaders.modules.state.show_sls("nagios.server")
        client = loaders.modules.state.show_sls("nagios.client")
    finally:
        loaders.reset_state()
    assert isinstance(low, dict), low
    # every host of the topology, at its pillar address (nothing from the mine here)
    hosts = low["nagios-server-hosts-list"]["file"]
    listed = next(d["contents"] for d in hosts if "contents" in d).split()
    assert {"web-s1-f1-m1", "lb-s2", "db-replica", "monitor", "logstore"} <= set(listed)
    # the client trusts the topology's monitor only: its address; its key from its mine
    assert isinstance(client, dict) and "nagios-client-pillar" in client, client
    comment = str(client["nagios-client-pillar"]["test"])
    assert "monitor monitor: no public key" in comment and "no source address" not in comment
    assert "running" in low["nagios-server-service"]["service"]
    cron = low["nagios-server-cleaner-cron"]["cron"]
    assert {"user": "nagios"} in cron
    verify = low["nagios-server-verify"]["cmd"]
    assert {"name": "/usr/sbin/nagios4 -v /etc/nagios4/staging/nagios.cfg"} in verify
