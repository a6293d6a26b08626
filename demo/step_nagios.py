"""Step 5: nagios4 checks a host over SSH with ControlPersist; the check user refuses escapes.

orch.cluster configured it: ``nagios.client`` on every host made its restricted check user
(a system user whose login shell runs only the linked plugins, whose key may only run
commands and only from the monitor's address; each lab host has its own user, as they share
this machine's /etc/passwd), and ``nagios.server`` on monitor wrote the Nagios config
(validated with ``nagios4 -v`` before it goes live). An sshd of the demo's own runs in
web-s1-f1-m1's namespace, and a real nagios4 daemon in the monitor's namespace runs its
``check_by_ssh`` service on a 2-second interval: two checks, one ssh login (the
ControlPersist master). Then four escapes are refused by the check key's forced command
(the dispatcher with the check allow-list): a shell, a file read, bash's ``mapfile``
redirection and a plugin that is not a configured check (``check_log`` copying a file).
Last, web-s1-f1-m2 claims the monitor role (its grains say ``webfarm:role: monitor`` and it
publishes its own key to the mine): a grain match on the mine finds it, but ``nagios.client``
(``test=True``) would change nothing and authorizes only the key the pillar names, so its
login is refused.
"""

import contextlib
import pwd
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from demo import netlab, salt_lab, topology
from lab.nagios import FAST_TIMING, client_pillar, parse_status, remove_user, server_paths
from lab.sshd import keygen

TITLE = "step 5: nagios4 check_by_ssh with ControlPersist; the forced command refuses escapes"
TARGET, MONITOR = "web-s1-f1-m1", "monitor"
ROGUE = "web-s1-f1-m2"  # a minion that claims the monitor role for a moment
MINE_KEY = "webfarm_nagios_pubkey"  # the mine function a monitor's key is published under
USER = "wfdemonag"
SERVICE = "load"
CHECK = "check_load -w 1000,1000,1000 -c 2000,2000,2000"
NAGIOS = "/usr/sbin/nagios4"
SSHD = "/usr/sbin/sshd"
# ssh binds ControlPath plus 17 characters; a Unix socket path must fit 108 bytes.
CONTROL_DIR = Path("/run/wfdemo-nagios")
# The repo's pillar (pillar/top.sls gives nagios.sls to every minion) has services per role;
# the demo runs only its own check, so it empties every role's list in its host pillar.
ROLES = yaml.safe_load((topology.REPO / "salt" / "states" / "webfarm" / "roles.yaml").read_text())


def _only(services):
    """``nagios:server:services`` with ``services`` for every host and none per role."""
    return {"*": services, **{role: [] for role in ROLES}}


def _address(minion_id):
    return next(h.address for h in topology.hosts() if h.id == minion_id)


def _client_dir():
    return salt_lab.host_root(TARGET) / "nagios"


def _monitor_dir():
    return salt_lab.host_root(MONITOR) / "nagios"


def _key():
    return _monitor_dir() / "id_ed25519"


def _host_key():
    return _client_dir() / "sshd" / "ssh_host_ed25519_key"


def _keygen(path, comment):
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        return keygen(path, comment)
    return Path(f"{path}.pub").read_text().strip()


def _server_pillar(known_hosts_line):
    mon, var = _monitor_dir(), _monitor_dir() / "var"
    paths = {
        "config_dir": mon / "etc",
        "staging_dir": mon / "etc" / "staging",
        "key": _key(),
        "known_hosts": mon / "known_hosts",
        "cleaner": mon / "lib" / "nagios-ssh-clean",
        "control_dir": CONTROL_DIR,
    }
    return {
        **{key: str(path) for key, path in paths.items()},
        **server_paths(var),
        **FAST_TIMING,
        "pkgs": [],
        "known_hosts_lines": [known_hosts_line],
        "strict_host_key_checking": "yes",
        "tmpfiles_dir": "",
        "cleaner_cron": False,
        "reload": "none",
        "hosts_from_topology": False,
        "known_hosts_from_mine": False,
        "hosts": {TARGET: {"address": _address(TARGET), "roles": ["web"], "port": 22}},
        "services": _only([{"description": SERVICE, "check": CHECK}]),
    }


def check_user(minion_id):
    """The check user of a host. The lab's hosts share one /etc/passwd, so each has its own
    (the monitor logs in as TARGET's, and as the server's ``nagios:user`` configures that same
    user on itself with TARGET's settings)."""
    return USER if minion_id in (TARGET, MONITOR) else f"wfd-{minion_id}"


def _client_root(minion_id):
    return (
        _client_dir()
        if minion_id in (TARGET, MONITOR)
        else salt_lab.host_root(minion_id) / "nagios"
    )


def pillar():
    """Every host's ``nagios.client`` pillar (its own check user, rooted under its dir, the
    monitor's key and address) and the monitor's server pillar, with fresh keys made for the
    monitor (its ssh key under its dir) and the demo sshd (its host key under TARGET's)."""
    pubkey = _keygen(_key(), "wfdemo-monitor")
    kind, host_key = _keygen(_host_key(), "wfdemo-sshd").split()[:2]
    out = {}
    for host in topology.hosts():
        client = client_pillar(
            _client_root(host.id),
            check_user(host.id),
            pubkey,
            sources=[_address(MONITOR)],
            plugins=["check_dummy", "check_load"],
        )
        client["nagios"]["server"]["services"] = _only([{"description": SERVICE, "check": CHECK}])
        out[host.id] = client
    out[MONITOR]["nagios"]["server"].update(_server_pillar(f"{_address(TARGET)} {kind} {host_key}"))
    return out


def cleanup():
    """Close nagios4's ssh masters (their sessions end on the far side), remove their socket
    dir, and the check users the demo made (their homes are under the demo's host dirs)."""
    for socket in CONTROL_DIR.glob("*"):
        subprocess.run(
            ["ssh", "-O", "exit", "-o", f"ControlPath={socket}", TARGET],
            capture_output=True, check=False, timeout=10,
        )  # fmt: skip
    salt_lab.stop_pids(salt_lab.processes_naming(CONTROL_DIR), timeout=5)  # sockets gone
    shutil.rmtree(CONTROL_DIR, ignore_errors=True)
    with contextlib.suppress(OSError):
        _rogue_dropin().unlink()
    hosts = str(salt_lab.host_root("x").parent) + "/"
    for entry in pwd.getpwall():
        if entry.pw_dir.startswith(hosts):
            left = subprocess.run(["pgrep", "-u", entry.pw_name], capture_output=True, text=True)
            salt_lab.stop_pids([int(pid) for pid in left.stdout.split()], timeout=5)
            remove_user(entry.pw_name)


def start_sshd():
    """The demo's own sshd in TARGET's namespace (what the host runs); its log file."""
    work = _host_key().parent
    host_key = _host_key()
    config = work / "sshd_config"
    config.write_text(
        f"ListenAddress {_address(TARGET)}\nPort 22\nHostKey {host_key}\n"
        f"PidFile {work / 'sshd.pid'}\nAuthorizedKeysFile .ssh/authorized_keys\n"
        "PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nPermitRootLogin no\nStrictModes yes\nAllowTcpForwarding yes\n"
        "AllowAgentForwarding yes\nPermitTTY yes\nLogLevel VERBOSE\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    subprocess.run([SSHD, "-t", "-f", config], check=True, capture_output=True)
    subprocess.run(
        netlab.exec_argv(netlab.PREFIX + TARGET, [SSHD, "-f", str(config), "-E", str(work / "sshd.log")]),
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return work / "sshd.log"


def _ssh_options():
    known = _monitor_dir() / "known_hosts"
    return [
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
        "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known}",
        "-o", "ControlMaster=auto", "-o", f"ControlPath={_monitor_dir()}/cm-%h",
        "-o", "ControlPersist=60",
    ]  # fmt: skip


def _in_monitor(argv):
    return subprocess.run(
        netlab.exec_argv(netlab.PREFIX + MONITOR, argv), capture_output=True, text=True, timeout=60
    )


def _start_nagios():
    var = _monitor_dir() / "var"
    var.mkdir(mode=0o755, exist_ok=True)
    nagios = pwd.getpwnam("nagios")
    shutil.chown(var, nagios.pw_uid, nagios.pw_gid)
    config = _monitor_dir() / "etc" / "nagios.cfg"
    subprocess.run(
        netlab.exec_argv(netlab.PREFIX + MONITOR, [NAGIOS, "-d", str(config)]),
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return var / "status.dat"


def _wait_for_checks(status_file, count=2, timeout=60):
    """The first ``count`` results of SERVICE on TARGET in status.dat:
    ``[(last_check, state, output)]``."""
    seen = {}
    deadline = time.monotonic() + timeout
    while len(seen) < count and time.monotonic() < deadline:
        rows = parse_status(status_file) if status_file.exists() else []
        for row in rows:
            if row.get("host_name") == TARGET and row.get("service_description") == SERVICE:
                if row.get("has_been_checked") == "1" and row["last_check"] not in seen:
                    seen[row["last_check"]] = (row["current_state"], row["plugin_output"])
        time.sleep(0.25)
    if len(seen) < count:
        raise RuntimeError(f"nagios4 ran {len(seen)} of {count} checks within {timeout}s")
    return [(int(key), *seen[key]) for key in sorted(seen, key=int)][:count]


def _ssh(*extra):
    argv = ["ssh", "-F", "/dev/null", "-i", str(_key()), *_ssh_options(), "-l", USER]
    return _in_monitor([*argv, _address(TARGET), *extra])


def _rogue_dropin():
    return salt_lab.minion_conf_dir(ROGUE) / "minion.d" / "wfdemo-rogue.conf"


def _rogue_key():
    return salt_lab.host_root(ROGUE) / "rogue" / "id_ed25519"


def _monitor_keys_by_grain():
    """What a grain match on the mine finds, as TARGET sees it: ``{minion: key}``."""
    return salt_lab.call(TARGET, "mine.get", "webfarm:role:monitor", MINE_KEY, "grain")


def _master_sees_role(role, timeout=30):
    """Wait until the master's grains cache has ROGUE in ``role`` (grain targeting and mine
    grain matches use that cache; a minion's grains reach it with its pillar refresh)."""
    deadline = time.monotonic() + timeout
    while True:
        cached = salt_lab.salt_run("cache.grains", f"tgt={ROGUE}", timeout=30).get(ROGUE) or {}
        if (cached.get("webfarm") or {}).get("role") == role:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the master's grains cache has {ROGUE} as {cached.get('webfarm')}")
        time.sleep(0.5)


def _restore_rogue():
    """ROGUE's own grains back (the drop-in removed, grains refreshed, the master's cache
    updated before the next step targets web members by grain), its key out of the mine."""
    with contextlib.suppress(OSError):
        _rogue_dropin().unlink()
    salt_lab.salt(ROGUE, "saltutil.refresh_grains", timeout=60)
    salt_lab.salt(ROGUE, "mine.delete", MINE_KEY, timeout=60)
    _master_sees_role("web")


def _rogue_monitor():
    """ROGUE claims the monitor role and publishes its key; the check user refuses that key.
    Returns the lines to print; raises if the rogue is trusted anywhere."""
    host = next(h for h in topology.hosts() if h.id == ROGUE)
    pubkey = _keygen(_rogue_key(), "rogue@" + ROGUE)
    claimed = {**host.grains, "webfarm": {**host.grains["webfarm"], "role": "monitor"}}
    _rogue_dropin().parent.mkdir(parents=True, exist_ok=True)
    _rogue_dropin().write_text(yaml.safe_dump({"grains": claimed}))
    lines = [
        f"    {ROGUE} claims the monitor role: grains webfarm:role: monitor, its key in the mine"
    ]
    try:
        salt_lab.call(ROGUE, "saltutil.refresh_grains", want=bool, timeout=60)
        salt_lab.call(ROGUE, "mine.send", MINE_KEY, "mine_function=file.read",
                      f"{_rogue_key()}.pub", want=bool, timeout=60)  # fmt: skip
        _master_sees_role("monitor")
        found = _monitor_keys_by_grain()
        if found.get(ROGUE, "").strip() != pubkey:
            raise RuntimeError(f"the rogue's claim did not reach the mine: {found!r}")
        lines.append(f"    $ salt {TARGET} mine.get webfarm:role:monitor {MINE_KEY} grain")
        lines += [f"      -> {minion}" for minion in sorted(found)]
        states = salt_lab.salt(TARGET, "state.apply", "nagios.client", "test=True")[TARGET]
        if not isinstance(states, dict) or any(s.get("result") is False for s in states.values()):
            raise RuntimeError(f"nagios.client test=True on {TARGET}: {states!r}")
        changed = sorted(s.get("__id__", "?") for s in states.values() if s.get("changes"))
        keys = (Path(_client_dir()) / "home" / ".ssh" / "authorized_keys").read_text()
        authorized = [line for line in keys.splitlines() if line and not line.startswith("#")]
        if changed or any(pubkey.split()[1] in line for line in authorized):
            raise RuntimeError(f"nagios.client followed the rogue: changed {changed}, {keys!r}")
        lines.append(
            f"    $ salt {TARGET} state.apply nagios.client test=True: {len(states)} states, "
            f"{len(changed)} would change; authorized_keys holds {len(authorized)} key (the "
            "pillar's monitor key), not the rogue's"
        )
        login = subprocess.run(
            netlab.exec_argv(netlab.PREFIX + ROGUE, [
                "ssh", "-F", "/dev/null", "-i", str(_rogue_key()), "-o", "BatchMode=yes",
                "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
                "-l", USER, _address(TARGET), CHECK.split()[0],
            ]),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        said = (login.stderr.strip().splitlines() or ["-"])[-1]
        if login.returncode == 0 or "Permission denied" not in said:
            raise RuntimeError(f"the rogue's key logged in as {USER}: {login.returncode} {said}")
        lines.append(f"    {ROGUE}'s key as {USER}: exit {login.returncode}: {said}")
    finally:
        _restore_rogue()
    return lines


def run():
    """nagios4 from what orch.cluster configured: two checks over one master; escapes;
    a rogue monitor; the summary."""
    log = _host_key().parent / "sshd.log"
    home = pwd.getpwnam(USER).pw_dir
    print(f"    {TARGET}: check user {USER} (home {home}), configured by nagios.client")
    print(f"    {MONITOR}: {_monitor_dir() / 'etc' / 'nagios.cfg'}, configured by nagios.server")
    checks = _wait_for_checks(_start_nagios())
    names = {"0": "OK", "1": "WARNING", "2": "CRITICAL", "3": "UNKNOWN"}
    for number, (when, state, output) in enumerate(checks, start=1):
        at = time.strftime("%H:%M:%S", time.localtime(when))
        print(
            f"    nagios4 check {number} at {at}: {TARGET}/{SERVICE} (check_by_ssh) -> "
            f"{names[state]}: {output}"
        )
        if state != "0":
            raise RuntimeError(f"nagios4 check of {TARGET}/{SERVICE}: {output}")
    logins = log.read_text(errors="replace").count(f"Accepted publickey for {USER} ")
    print(f"    sshd logins for {len(checks)} checks: {logins} (ControlPersist master reused)")
    if logins != 1:
        raise RuntimeError(
            f"{logins} logins for {len(checks)} checks: the ControlPersist master was not reused"
        )
    copy = Path("/tmp/wfdemo-passwd-copy")  # where check_log would copy /etc/passwd
    copy.unlink(missing_ok=True)
    escapes = {
        "ssh ... /bin/sh -c id": _ssh("/bin/sh", "-c", "id"),
        "ssh ... 'cat /etc/passwd'": _ssh("cat /etc/passwd"),
        "ssh ... 'mapfile l </etc/passwd; printf %s \"${l[@]}\"'": _ssh(
            'mapfile l </etc/passwd; printf %s "${l[@]}"'
        ),
        f"ssh ... check_log -F /etc/passwd -O {copy} -q x": _ssh(
            "check_log", "-F", "/etc/passwd", "-O", str(copy), "-q", "x"
        ),
    }
    for what, proc in escapes.items():
        said = (proc.stderr.strip().splitlines() or ["-"])[-1]
        print(f"    escape {what}: exit {proc.returncode}: {said}")
        if proc.returncode == 0 or "root:" in proc.stdout or copy.exists():
            raise RuntimeError(f"the check user ran {what!r}: {proc.stdout.strip()}")
        if "webfarm-nagios-dispatch: refused: " not in said:
            raise RuntimeError(f"{what!r} was not refused by the forced command: {said}")
    for line in _rogue_monitor():
        print(line)
    return (
        f"nagios4: {len(checks)} checks OK over 1 ssh login (ControlPersist); "
        f"{len(escapes)} escapes refused; a minion claiming the monitor role was not trusted"
    )
