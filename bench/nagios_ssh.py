"""Per-check latency and CPU: check_by_ssh with ControlPersist vs a fresh ssh each time vs NRPE.

Standalone (run from the repo root as root: ``.venv/bin/python bench/nagios_ssh.py``). Sets up,
on loopback only: an sshd of its own (lab/sshd.py), the restricted check user by
applying ``nagios/client`` with ``salt-call --local``, and nagios-nrpe-server with its own
config. Every mode runs the same plugin (check_load) ROUNDS x CHECKS times, sequentially.

CPU per check counts every process the check involves: the check_by_ssh/ssh or check_nrpe
clients (children of this script), the ssh ControlMaster, and the server side (sshd or nrpe
with the children they reaped).

Anchors (issue 7): ControlPersist <= 2x NRPE latency; ControlPersist >= 5x faster than fresh ssh.
"""

import json
import os
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import lab as _lab  # noqa: E402, F401 - salt/_utils on sys.path too (lab/__init__.py)
from lab.nagios import client_pillar, remove_user  # noqa: E402
from lab.sshd import Sshd, free_port, keygen, short_tmpdir, ssh_masters  # noqa: E402

PLUGINS = "/usr/lib/nagios/plugins"
CHECK = "check_load -w 1000,1000,1000 -c 2000,2000,2000"
ROUNDS = 3
CHECKS = 100
TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid, children=True):
    """CPU seconds of a process (plus the children it reaped) from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICK


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def apply_client(root, user, pubkey):
    conf = root / "salt"
    conf.mkdir()
    (conf / "minion").write_text(
        json.dumps(
            {
                "id": "bench-nagios",
                "file_client": "local",
                "file_roots": {"base": [str(REPO / "salt" / "states"), str(REPO / "salt")]},
                "cachedir": str(conf / "cache"),
                "pki_dir": str(conf / "pki"),
                "log_file": str(conf / "minion.log"),
                "sock_dir": str(conf / "sock"),
            }
        )
    )
    pillar = client_pillar(root, user, pubkey)
    salt_call = Path(sys.executable).parent / "salt-call"
    proc = subprocess.run(
        [
            str(salt_call),
            "--local",
            "-c",
            str(conf),
            "--out=json",
            "state.sls",
            "nagios.client",
            f"pillar={json.dumps(pillar)}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    result = json.loads(proc.stdout)["local"]
    failed = [v["comment"] for v in result.values() if v["result"] is not True]
    if proc.returncode != 0 or failed:
        raise SystemExit(f"nagios/client failed: {failed or proc.stderr}")


def start_nrpe(root, port):
    cfg = root / "nrpe.cfg"
    cfg.write_text(
        "\n".join(
            [
                f"pid_file={root}/nrpe.pid",
                f"server_port={port}",
                "server_address=127.0.0.1",
                "nrpe_user=nagios",
                "nrpe_group=nagios",
                "allowed_hosts=127.0.0.1",
                "dont_blame_nrpe=0",
                "allow_bash_command_substitution=0",
                "command_timeout=60",
                "connection_timeout=300",
                f"command[check_load]={PLUGINS}/{CHECK}",
                "",
            ]
        )
    )
    proc = subprocess.Popen(
        ["/usr/sbin/nrpe", "-c", str(cfg), "-f"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        probe = subprocess.run(
            [f"{PLUGINS}/check_nrpe", "-H", "127.0.0.1", "-p", str(port)],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0:
            return proc
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"nrpe did not answer: {probe.stdout}{probe.stderr}")


def by_ssh_argv(sshd, user, key, known_hosts, control_path):
    argv = [
        f"{PLUGINS}/check_by_ssh",
        "-H",
        "127.0.0.1",
        "-p",
        str(sshd.port),
        "-l",
        user,
        "-i",
        str(key),
        "-t",
        "20",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
    ]
    if control_path:
        argv += ["-o", "ControlMaster=auto", "-o", "ControlPersist=120"]
        argv += ["-o", f"ControlPath={control_path}"]
    else:
        argv += ["-o", "ControlMaster=no", "-o", "ControlPath=none"]
    return argv + ["-C", CHECK]


def run_mode(argv, server_pid, control_path=None):
    """CHECKS sequential checks; returns (latencies, cpu seconds per check)."""
    if control_path:
        warm = subprocess.run(argv, capture_output=True, text=True)
        assert warm.returncode == 0, warm.stdout + warm.stderr
    (master,) = ssh_masters(control_path) if control_path else (None,)
    client0, server0 = children_cpu(), proc_cpu(server_pid)
    master0 = proc_cpu(master, children=False) if master else 0.0
    latencies = []
    for _ in range(CHECKS):
        started = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True)
        latencies.append(time.perf_counter() - started)
        if proc.returncode != 0 or not proc.stdout.startswith("LOAD OK"):
            raise SystemExit(f"check failed: {proc.stdout}{proc.stderr}")
    master_cpu = proc_cpu(master, children=False) - master0 if master else 0.0
    if control_path:
        subprocess.run(
            ["ssh", "-F", "/dev/null", "-o", f"ControlPath={control_path}", "-O", "exit", "x"],
            capture_output=True,
        )
        time.sleep(0.5)  # the sshd session exits and is reaped into the listener's cutime
    cpu = (children_cpu() - client0) + (proc_cpu(server_pid) - server0) + master_cpu
    return latencies, cpu / CHECKS


def main():
    if os.geteuid() != 0:
        raise SystemExit("run as root: it creates a local user and starts sshd and nrpe")
    root = short_tmpdir("wfbench-")
    user = f"wfbench{secrets.token_hex(3)}"
    sshd = nrpe = None
    try:
        key = root / "monitor_key"
        pubkey = keygen(key, "nagios@bench")
        apply_client(root, user, pubkey)
        sshd = Sshd(root / "sshd", log_level="ERROR")
        sshd.workdir.mkdir(mode=0o755)
        sshd.start()
        known_hosts = root / "known_hosts"
        known_hosts.write_text(sshd.known_hosts_line + "\n")
        nrpe_port = free_port()
        nrpe = start_nrpe(root, nrpe_port)
        nrpe_argv = [f"{PLUGINS}/check_nrpe", "-H", "127.0.0.1", "-p", str(nrpe_port)]
        nrpe_argv += ["-c", "check_load"]
        control_path = root / "cm" / "bench"
        control_path.parent.mkdir(mode=0o700)

        modes = {"persist": [], "fresh": [], "nrpe": []}
        for _ in range(ROUNDS):
            modes["persist"].append(
                run_mode(
                    by_ssh_argv(sshd, user, key, known_hosts, control_path),
                    sshd.proc.pid,
                    control_path,
                )
            )
            modes["fresh"].append(
                run_mode(by_ssh_argv(sshd, user, key, known_hosts, None), sshd.proc.pid)
            )
            modes["nrpe"].append(run_mode(nrpe_argv, nrpe.pid))

        print(f"nagios over ssh: {ROUNDS} rounds x {CHECKS} sequential checks ({CHECK}), loopback")
        print(f"{'mode':<28}{'median ms':>10}{'p95 ms':>9}{'CPU ms/check':>14}")
        summary = {}
        labels = {
            "persist": "check_by_ssh ControlPersist",
            "fresh": "check_by_ssh fresh ssh",
            "nrpe": "check_nrpe (NRPE)",
        }
        for mode, runs in modes.items():
            median = statistics.median(statistics.median(lat) for lat, _ in runs) * 1000
            p95 = statistics.median(sorted(lat)[int(0.95 * len(lat)) - 1] for lat, _ in runs) * 1000
            cpu = statistics.median(c for _, c in runs) * 1000
            summary[mode] = (median, cpu)
            print(f"{labels[mode]:<28}{median:>10.1f}{p95:>9.1f}{cpu:>14.1f}")
        persist_vs_nrpe = summary["persist"][0] / summary["nrpe"][0]
        fresh_vs_persist = summary["fresh"][0] / summary["persist"][0]
        print(
            f"ControlPersist / NRPE latency:   {persist_vs_nrpe:.2f}x   (anchor: <= 2x)   "
            f"{'met' if persist_vs_nrpe <= 2 else 'NOT met'}"
        )
        print(
            f"fresh ssh / ControlPersist:      {fresh_vs_persist:.2f}x   (anchor: >= 5x)   "
            f"{'met' if fresh_vs_persist >= 5 else 'NOT met'}"
        )
        print(
            f"CPU per check: ControlPersist / NRPE {summary['persist'][1] / summary['nrpe'][1]:.2f}x, "
            f"fresh / ControlPersist {summary['fresh'][1] / summary['persist'][1]:.2f}x"
        )
    finally:
        if nrpe is not None:
            nrpe.send_signal(signal.SIGTERM)
            nrpe.wait(timeout=10)
        for pid in ssh_masters(root / "cm" / "bench"):
            os.kill(pid, signal.SIGKILL)
        if sshd is not None:
            sshd.stop()
        remove_user(user)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
