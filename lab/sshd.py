"""An OpenSSH server of the tests' own: loopback port, own config and host key, stopped by PID.

The system sshd is never touched. ``Sshd`` is also used by ``bench/nagios_ssh.py``.
The work directory is made under /tmp with short, world-traversable paths: Unix socket
paths (ControlPath) must stay short, and the check user and Nagios (running as ``nagios``)
must reach the files the fixtures put there.
"""

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from lab.net import free_port
from lab.proc import stop_process

SSHD = "/usr/sbin/sshd"
PRIVSEP_DIR = Path("/run/sshd")


def short_tmpdir(prefix):
    """A fresh 0755 directory directly under /tmp (short enough for Unix socket paths)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def keygen(path, comment="webfarm-test"):
    """An ed25519 key pair without passphrase; returns the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return Path(f"{path}.pub").read_text().strip()


class Sshd:
    """``/usr/sbin/sshd -D`` with its own config on 127.0.0.1:<port>, logging to a file."""

    def __init__(
        self,
        workdir,
        port=None,
        log_level="DEBUG1",
        subsystem="/usr/lib/openssh/sftp-server",
        include_dir=None,
    ):
        self.workdir = Path(workdir)
        self.subsystem = subsystem
        self.include_dir = Path(include_dir) if include_dir else None
        self.port = port or free_port()
        self.host_key = self.workdir / "ssh_host_ed25519_key"
        self.config = self.workdir / "sshd_config"
        self.log = self.workdir / "sshd.log"
        self.pidfile = self.workdir / "sshd.pid"
        self.log_level = log_level
        self.proc = None

    def write_config(self):
        keygen(self.host_key, "sshd-test-host")
        # Forwarding, agent forwarding and ptys are allowed server-wide on purpose: what
        # refuses them for the check user is its authorized_keys line, which the tests check.
        # Like Debian's sshd_config: drop-ins are included first (first value wins).
        include = [f"Include {self.include_dir}/*.conf"] if self.include_dir else []
        if self.include_dir:
            self.include_dir.mkdir(mode=0o755, exist_ok=True)
        self.config.write_text(
            "\n".join(
                [
                    *include,
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.pidfile}",
                    "AuthorizedKeysFile .ssh/authorized_keys",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "PermitRootLogin no",
                    "StrictModes yes",
                    "AllowAgentForwarding yes",
                    "AllowTcpForwarding yes",
                    "X11Forwarding no",
                    "PermitTTY yes",
                    "MaxStartups 100:30:200",
                    "MaxSessions 50",
                    f"Subsystem sftp {self.subsystem}",
                    f"LogLevel {self.log_level}",
                    "",
                ]
            )
        )

    @property
    def known_hosts_line(self):
        key = Path(f"{self.host_key}.pub").read_text().split()
        return f"[127.0.0.1]:{self.port} {key[0]} {key[1]}"

    def start(self):
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        self.write_config()
        subprocess.run([SSHD, "-t", "-f", str(self.config)], check=True, capture_output=True)
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-f", str(self.config), "-E", str(self.log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not self.wait_ready():
            self.stop()
            raise RuntimeError("sshd did not answer within 10 s")
        return self

    def wait_ready(self, timeout=10):
        """Whether sshd answers with its banner within ``timeout`` s (also after a SIGHUP)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    if sock.recv(64).startswith(b"SSH-2.0"):
                        return True
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self):
        if self.proc is None:
            return
        stop_process(self.proc)
        self.proc = None

    def log_text(self):
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def ssh_argv(sshd, user, key, known_hosts, *extra):
    """ssh client argv against ``sshd`` that reads no user or system config."""
    return [
        "ssh",
        "-F",
        "/dev/null",
        "-p",
        str(sshd.port),
        "-i",
        str(key),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "ConnectTimeout=10",
        *extra,
        "-l",
        user,
        "127.0.0.1",
    ]


def kill_pids(pids, sig=signal.SIGTERM):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def ssh_masters(control_path):
    """PIDs of ssh ControlMaster processes serving ``control_path`` (``ssh: <path> [mux]``)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cmdline.startswith(f"ssh: {control_path}") and "[mux]" in cmdline:
            pids.append(int(entry.name))
    return pids
