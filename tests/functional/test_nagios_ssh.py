"""check_by_ssh through the restricted check user that ``nagios/client`` builds.

A real sshd (tests/support/sshd.py) on 127.0.0.1, a real local user created by the SLS
(unique name, removed afterwards), real monitoring-plugins. The monitoring side is played
by root's ssh client with a key generated here.
"""

import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from saltfactories.utils.functional import Loaders

from tests.support._nagios import client_pillar, remove_user
from tests.support.sshd import keygen, kill_pids, short_tmpdir, ssh_argv, ssh_masters

PLUGINS = "/usr/lib/nagios/plugins"
CHECK_BY_SSH = f"{PLUGINS}/check_by_ssh"
REPO = Path(__file__).resolve().parents[2]
CLEANER = REPO / "salt" / "states" / "nagios" / "files" / "nagios-ssh-clean.py"

pytestmark = pytest.mark.timeout(120)


def apply_sls(minion_config, mods, pillar):
    opts = dict(minion_config)
    opts["pillar"] = pillar
    loaders = Loaders(opts)
    try:
        return loaders.modules.state.sls(mods).raw
    finally:
        loaders.reset_state()


@pytest.fixture(scope="module")
def check_host(minion_config, sshd_server):
    """The client SLS applied for a fresh user; yields what the tests need to log in."""
    root = short_tmpdir("wfn-")
    user = f"wfn{secrets.token_hex(4)}"
    key = root / "monitor_key"
    pubkey = keygen(key, "nagios@monitor")
    known_hosts = root / "known_hosts"
    known_hosts.write_text(sshd_server.known_hosts_line + "\n")
    try:
        ret = apply_sls(
            minion_config,
            "nagios.client",
            client_pillar(root, user, pubkey, plugins=("check_dummy", "check_load", "check_users")),
        )
        failed = {k: v["comment"] for k, v in ret.items() if v["result"] is not True}
        assert not failed, failed
        yield {
            "root": root,
            "user": user,
            "key": key,
            "known_hosts": known_hosts,
            "sshd": sshd_server,
            "checks_dir": root / "lib" / "checks",
        }
    finally:
        for sock in root.glob("cm-*/*"):
            kill_pids(ssh_masters(sock), signal.SIGKILL)
        remove_user(user)
        shutil.rmtree(root, ignore_errors=True)


def ssh(host, command=None, *extra, timeout=30, bind=None):
    argv = ssh_argv(host["sshd"], host["user"], host["key"], host["known_hosts"], *extra)
    if bind:
        argv[1:1] = ["-b", bind]
    if command is not None:
        argv.append(command)
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def check_by_ssh(host, command, control_path=None, timeout=10):
    argv = [
        CHECK_BY_SSH,
        "-H",
        "127.0.0.1",
        "-p",
        str(host["sshd"].port),
        "-l",
        host["user"],
        "-i",
        str(host["key"]),
        "-t",
        str(timeout),
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
        "-o",
        f"UserKnownHostsFile={host['known_hosts']}",
        "-o",
        "StrictHostKeyChecking=yes",
    ]
    if control_path:
        argv += [
            "-o",
            "ControlMaster=auto",
            "-o",
            "ControlPersist=60",
            "-o",
            f"ControlPath={control_path}",
        ]
    argv += ["-C", command]
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 30)
    return proc, time.monotonic() - started


def control_dir(host, name):
    path = host["root"] / f"cm-{name}"
    path.mkdir(mode=0o700)
    return path


def accepted_logins(host):
    return host["sshd"].log_text().count(f"Accepted publickey for {host['user']} ")


# --- checks through the restricted user -----------------------------------------------------


@pytest.mark.parametrize(
    ("command", "code", "output"),
    [
        ("check_dummy 0 'all fine'", 0, "OK: all fine"),
        ("check_dummy 1 'getting full'", 1, "WARNING: getting full"),
        ("check_dummy 2 'disk full'", 2, "CRITICAL: disk full"),
        ("check_load -w 1000,1000,1000 -c 2000,2000,2000", 0, "LOAD OK"),
    ],
)
def test_check_by_ssh_returns_plugin_output_and_code(check_host, command, code, output):
    proc, _ = check_by_ssh(check_host, command)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert proc.stdout.startswith(output)


def test_unknown_plugin_is_not_found(check_host):
    proc, _ = check_by_ssh(check_host, "check_disk -w 10% -c 5% -p /")
    assert proc.returncode != 0
    assert "check_disk: command not found" in proc.stdout + proc.stderr


def test_second_check_reuses_the_control_master(check_host):
    control_path = control_dir(check_host, "reuse") / "h1"
    logins_before = accepted_logins(check_host)
    first, first_time = check_by_ssh(check_host, "check_dummy 0 first", control_path)
    assert first.returncode == 0, first.stdout + first.stderr
    masters = ssh_masters(control_path)
    assert len(masters) == 1
    reused = []
    for n in range(5):
        proc, elapsed = check_by_ssh(check_host, f"check_dummy 0 again{n}", control_path)
        assert proc.returncode == 0 and proc.stdout.startswith(f"OK: again{n}")
        reused.append(elapsed)
    assert ssh_masters(control_path) == masters
    # One authentication for six checks: the other five went through the master.
    assert accepted_logins(check_host) - logins_before == 1
    assert statistics.median(reused) < first_time / 2, (first_time, reused)
    subprocess.run(
        ["ssh", "-F", "/dev/null", "-o", f"ControlPath={control_path}", "-O", "exit", "x"],
        capture_output=True,
        check=False,
    )


# --- restricted shell ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "refusal"),
    [
        ("/bin/ls /", "restricted: cannot specify `/' in command names"),
        ("/usr/lib/nagios/plugins/check_dummy 0", "restricted: cannot specify `/'"),
        ("cd /", "cd: restricted"),
        ("PATH=/bin:/usr/bin; ls", "PATH: readonly variable"),
        ("export PATH=/bin; ls", "PATH: readonly variable"),
        ("SHELL=/bin/bash", "SHELL: readonly variable"),
        ("ENV=/tmp/x", "ENV: readonly variable"),
        ("BASH_ENV=/tmp/x", "BASH_ENV: readonly variable"),
        ("exec check_dummy 0", "exec: restricted"),
        ("bash -c id", "bash: command not found"),
        ("sh -c id", "sh: command not found"),
        ("command -p ls", "command: -p: restricted"),
        ("builtin enable -f /usr/lib/bash/sleep sleep", "enable: restricted"),
        ("enable -f /usr/lib/bash/sleep sleep", "enable: restricted"),
        (". /etc/profile", "restricted"),
        ("hash -p /bin/sh evil; evil -c id", "hash: /bin/sh: restricted"),
        ("set +r; /bin/id", "set: +r: invalid option"),
    ],
)
def test_restricted_shell_refuses(check_host, command, refusal):
    proc = ssh(check_host, command)
    assert proc.returncode != 0
    assert refusal in proc.stderr, proc.stderr


@pytest.mark.parametrize("redirect", [">", ">>", ">|", "&>", "2>"])
def test_output_redirection_refused(check_host, redirect):
    target = check_host["root"] / "written"
    proc = ssh(check_host, f"check_dummy 0 x {redirect} {target}")
    assert "restricted: cannot redirect output" in proc.stderr
    assert not target.exists()


def test_link_added_outside_checks_dir_cannot_be_run(check_host):
    outside = check_host["root"] / "outside"
    outside.mkdir(mode=0o755, exist_ok=True)
    (outside / "sh").symlink_to("/bin/sh")
    proc = ssh(check_host, f"{outside}/sh -c id")
    assert "restricted: cannot specify `/'" in proc.stderr
    proc = ssh(check_host, "sh -c id")
    assert "sh: command not found" in proc.stderr
    assert "uid=" not in proc.stdout


def test_check_user_owns_nothing_writable_in_its_path(check_host):
    checks = check_host["checks_dir"]
    uid = int(
        subprocess.run(["id", "-u", check_host["user"]], capture_output=True, text=True).stdout
    )
    entries = [checks, *checks.iterdir()]
    entries += [Path(os.path.realpath(e)) for e in checks.iterdir()]
    assert sorted(e.name for e in checks.iterdir()) == ["check_dummy", "check_load", "check_users"]
    for entry in entries:
        st = entry.lstat()
        assert st.st_uid == 0 and st.st_uid != uid, entry
        if not entry.is_symlink():
            assert st.st_mode & 0o022 == 0, entry
    probe = subprocess.run(
        ["runuser", "-u", check_host["user"], "--", "/usr/bin/test", "-w", str(checks)],
        capture_output=True,
        check=False,
    )
    assert probe.returncode == 1


def test_interactive_login_refused(check_host):
    proc = ssh(check_host, None, "-T")
    assert proc.returncode == 1
    assert "interactive login refused" in proc.stderr


def test_sftp_subsystem_refused(check_host):
    """sshd starts subsystems through the login shell too, so sftp-server is refused by path."""
    dest = check_host["root"] / "fetched"
    argv = [
        "sftp",
        "-F",
        "/dev/null",
        "-P",
        str(check_host["sshd"].port),
        "-i",
        str(check_host["key"]),
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={check_host['known_hosts']}",
        "-b",
        "-",
        f"{check_host['user']}@127.0.0.1",
    ]
    proc = subprocess.run(
        argv, input=f"get /etc/passwd {dest}\n", capture_output=True, text=True, timeout=30
    )
    assert proc.returncode != 0
    assert "Connection closed" in proc.stderr
    assert not dest.exists()


# --- authorized_keys restrictions ------------------------------------------------------------


def test_authorized_keys_line(check_host):
    line = (check_host["root"] / "home" / ".ssh" / "authorized_keys").read_text().strip()
    options = line.split(" ", 1)[0].split(",")
    for option in ["no-agent-forwarding", "no-port-forwarding", "no-pty", "no-X11-forwarding"]:
        assert option in options
    assert 'from="127.0.0.1"' in options


def test_stdio_forwarding_refused(check_host):
    proc = ssh(check_host, None, "-W", f"127.0.0.1:{check_host['sshd'].port}")
    assert proc.returncode != 0
    assert "administratively prohibited" in proc.stderr
    assert "SSH-2.0" not in proc.stdout


def test_remote_forwarding_refused(check_host):
    proc = ssh(
        check_host, "check_dummy 0", "-R", "0:127.0.0.1:22", "-o", "ExitOnForwardFailure=yes"
    )
    assert proc.returncode != 0
    assert "remote port forwarding failed" in proc.stderr


def test_local_forwarding_refused(check_host):
    import socket

    from tests.support.sshd import free_port

    port = free_port()
    argv = ssh_argv(
        check_host["sshd"],
        check_host["user"],
        check_host["key"],
        check_host["known_hosts"],
        "-N",
        "-L",
        f"127.0.0.1:{port}:127.0.0.1:{check_host['sshd'].port}",
    )
    tunnel = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 10
        data = None
        while time.monotonic() < deadline and data is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    data = sock.recv(64)
            except OSError:
                time.sleep(0.1)
        assert data == b""  # the channel was refused: closed without the sshd banner
    finally:
        tunnel.terminate()
        _, err = tunnel.communicate(timeout=10)
    assert "administratively prohibited" in err


def test_agent_forwarding_refused(check_host):
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(check_host["root"] / "agent.sock")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 5
        while not (check_host["root"] / "agent.sock").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        log_before = len(check_host["sshd"].log_text())
        env = {**os.environ, "SSH_AUTH_SOCK": str(check_host["root"] / "agent.sock")}
        argv = ssh_argv(
            check_host["sshd"],
            check_host["user"],
            check_host["key"],
            check_host["known_hosts"],
            "-A",
        )
        proc = subprocess.run(
            [*argv, "check_dummy 0 agent"], capture_output=True, text=True, env=env, timeout=30
        )
        assert proc.stdout.startswith("OK: agent")
        assert "agent forwarding disabled" in check_host["sshd"].log_text()[log_before:]
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def test_pty_refused(check_host):
    proc = ssh(check_host, "if [ -t 0 ]; then echo TTY; else echo NOTTY; fi", "-tt")
    assert "PTY allocation request failed" in proc.stderr
    assert "TTY" not in proc.stdout.replace("NOTTY", "")


def test_login_from_address_not_in_from_is_rejected(check_host):
    ok = ssh(check_host, "check_dummy 0 from-ok", bind="127.0.0.1")
    assert ok.stdout.startswith("OK: from-ok")
    proc = ssh(check_host, "check_dummy 0 from-bad", bind="127.0.0.2")
    assert proc.returncode == 255
    assert "Permission denied" in proc.stderr
    assert "from-bad" not in proc.stdout
    assert "not from a permitted host" in check_host["sshd"].log_text()


# --- stale control sockets -------------------------------------------------------------------


def test_dead_master_socket_does_not_break_the_next_check(check_host):
    control_path = control_dir(check_host, "dead") / "h1"
    proc, _ = check_by_ssh(check_host, "check_dummy 0 one", control_path)
    assert proc.returncode == 0
    kill_pids(ssh_masters(control_path), signal.SIGKILL)
    time.sleep(0.2)
    assert control_path.is_socket()  # left behind by the killed master
    proc, _ = check_by_ssh(check_host, "check_dummy 0 two", control_path)
    assert proc.returncode == 0 and proc.stdout.startswith("OK: two")
    assert len(ssh_masters(control_path)) == 1
    kill_pids(ssh_masters(control_path), signal.SIGKILL)


def test_hung_master_check_times_out_and_cleaner_recovers(check_host):
    control_path = control_dir(check_host, "hung") / "h1"
    proc, _ = check_by_ssh(check_host, "check_dummy 0 one", control_path)
    assert proc.returncode == 0
    (master,) = ssh_masters(control_path)
    os.kill(master, signal.SIGSTOP)
    try:
        proc, elapsed = check_by_ssh(check_host, "check_dummy 0 two", control_path, timeout=3)
        assert proc.returncode != 0
        assert elapsed < 8  # bounded by -t, not hanging on the stopped master
        hosts_file = check_host["root"] / "hosts.list"
        hosts_file.write_text("h1\n")
        cleaned = subprocess.run(
            [
                sys.executable,
                str(CLEANER),
                str(control_path.parent),
                "--hosts-file",
                str(hosts_file),
                "--timeout",
                "2",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert cleaned.returncode == 0
        assert f"h1: master hung: killed [{master}]" in cleaned.stdout
        assert not control_path.exists()
    finally:
        kill_pids([master], signal.SIGKILL)
        kill_pids([master], signal.SIGCONT)
    proc, _ = check_by_ssh(check_host, "check_dummy 0 three", control_path)
    assert proc.returncode == 0 and proc.stdout.startswith("OK: three")
    kill_pids(ssh_masters(control_path), signal.SIGKILL)


def test_cleaner_stops_masters_of_hosts_no_longer_monitored(check_host):
    control_path = control_dir(check_host, "gone") / "h1"
    proc, _ = check_by_ssh(check_host, "check_dummy 0 one", control_path)
    assert proc.returncode == 0
    assert len(ssh_masters(control_path)) == 1
    hosts_file = check_host["root"] / "hosts.list"
    hosts_file.write_text("some-other-host\n")
    cleaned = subprocess.run(
        [sys.executable, str(CLEANER), str(control_path.parent), "--hosts-file", str(hosts_file)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "h1: host no longer monitored" in cleaned.stdout
    time.sleep(0.5)
    assert ssh_masters(control_path) == []
    assert not control_path.exists()
