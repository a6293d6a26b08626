"""Step 5: a Nagios check over SSH with ControlPersist, and the restricted user refusing escapes.

``salt://nagios/client`` (pillar from the demo) makes the restricted check user on
web-s1-f1-m1: a system user whose login shell runs only the linked plugins, whose key may
only run commands and only from the monitor's address. An sshd of the demo's own runs in
that host's namespace; from the monitor's namespace the ``check_by_ssh`` plugin runs twice
through one ControlPersist master (one login), then two escapes are refused.
"""

import pwd
import subprocess
from pathlib import Path

from demo import netlab, salt_lab, topology

TITLE = "step 5: Nagios check_by_ssh with ControlPersist; the restricted user refuses escapes"
TARGET, MONITOR = "web-s1-f1-m1", "monitor"
USER = "wfdemonag"
CHECK = "check_load -w 1000,1000,1000 -c 2000,2000,2000"
PLUGIN = "/usr/lib/nagios/plugins/check_by_ssh"
SSHD = "/usr/sbin/sshd"


def _address(minion_id):
    return next(h.address for h in topology.hosts() if h.id == minion_id)


def _client_dir():
    return salt_lab.host_root(TARGET) / "nagios"


def _monitor_dir():
    return salt_lab.host_root(MONITOR) / "nagios"


def _key():
    return _monitor_dir() / "id_ed25519"


def pillar():
    """The client pillar for TARGET, with a fresh monitor key made under the monitor's dir."""
    _monitor_dir().mkdir(parents=True, exist_ok=True)
    if not _key().exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "wfdemo-monitor", "-f", _key()],
            check=True, capture_output=True,
        )  # fmt: skip
    pubkey = Path(f"{_key()}.pub").read_text().strip()
    root = _client_dir()
    return {
        TARGET: {
            "nagios": {
                "user": USER,
                "client": {
                    "pkgs": [],
                    "home": str(root / "home"),
                    "shell": str(root / "lib" / "rshell"),
                    "checks_dir": str(root / "lib" / "checks"),
                    "plugins": ["check_dummy", "check_load"],
                    "from": [_address(MONITOR)],
                    "pubkeys": [pubkey],
                },
            }
        }
    }


def cleanup():
    """Remove the check user the demo made (its home is under a demo host dir)."""
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        return
    if "/hosts/" + TARGET + "/" in entry.pw_dir:
        subprocess.run(["userdel", USER], capture_output=True, check=False)
        subprocess.run(["groupdel", USER], capture_output=True, check=False)


def _start_sshd():
    work = _client_dir() / "sshd"
    work.mkdir(parents=True, exist_ok=True)
    host_key = work / "ssh_host_ed25519_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key],
        check=True, capture_output=True,
    )  # fmt: skip
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
    kind, key = Path(f"{host_key}.pub").read_text().split()[:2]
    (_monitor_dir() / "known_hosts").write_text(f"{_address(TARGET)} {kind} {key}\n")
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


def _check_by_ssh():
    argv = [PLUGIN, "-H", _address(TARGET), "-l", USER, "-i", str(_key()), "-t", "20", "-C", CHECK]
    for option in _ssh_options()[1::2]:
        argv += ["-o", option]
    return _in_monitor(argv)


def _ssh(*extra):
    argv = ["ssh", "-F", "/dev/null", "-i", str(_key()), *_ssh_options(), "-l", USER]
    return _in_monitor([*argv, _address(TARGET), *extra])


def run():
    """Apply the client SLS, start sshd, check twice over one master, try escapes; summary."""
    cleanup()
    states = salt_lab.apply_state([TARGET], "nagios.client")[TARGET]
    print(f"    {TARGET}: state.apply nagios.client: {len(states)} states, 0 failed (user {USER})")
    log = _start_sshd()
    outputs = []
    for _ in range(2):
        proc = _check_by_ssh()
        outputs.append(proc.stdout.strip())
        print(
            f"    check_by_ssh {CHECK.split()[0]} -> exit {proc.returncode}: {proc.stdout.strip()}"
        )
        if proc.returncode != 0:
            raise RuntimeError(f"check_by_ssh failed: {proc.stdout.strip()} {proc.stderr.strip()}")
    logins = log.read_text(errors="replace").count(f"Accepted publickey for {USER} ")
    print(f"    sshd logins for 2 checks: {logins} (ControlPersist master reused)")
    if logins != 1:
        raise RuntimeError(
            f"{logins} logins for 2 checks: the ControlPersist master was not reused"
        )
    escapes = {
        "ssh ... /bin/sh -c id": _ssh("/bin/sh", "-c", "id"),
        "ssh ... 'cat /etc/passwd'": _ssh("cat /etc/passwd"),
    }
    for what, proc in escapes.items():
        said = (proc.stderr.strip().splitlines() or ["-"])[-1]
        print(f"    escape {what}: exit {proc.returncode}: {said}")
        if proc.returncode == 0:
            raise RuntimeError(f"the restricted user ran {what!r}: {proc.stdout.strip()}")
        if proc.returncode == 255:
            raise RuntimeError(f"ssh itself failed on {what!r} (not the shell refusing): {said}")
    return f"2 checks OK over 1 ssh login (ControlPersist); {len(escapes)} escapes refused"
