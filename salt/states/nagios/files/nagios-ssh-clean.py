#!/usr/bin/python3
"""Clean the ssh ControlMaster sockets Nagios' check_by_ssh leaves in its control directory.

Deployed by Salt (nagios/server) and run from cron as the Nagios user; imports nothing
from Salt. For every socket in the directory:

- the host is no longer monitored (not in --hosts-file): ask its master to exit;
- the master died (connection refused): remove the socket;
- the master does not answer ``ssh -O check`` within --timeout (hung, or its host is
  unreachable and it is stuck): kill the master process that holds the socket, remove it.

A check therefore never waits on a dead master for longer than its own -t timeout, and the
next check opens a fresh connection. Prints one line per socket it acted on; exit 0.
"""

import argparse
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path


def parse_proc_net_unix(text):
    """(path, inode) of every Unix socket with a path, from the text of /proc/net/unix."""
    sockets = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[7].startswith("/"):
            sockets.append((fields[7], int(fields[6])))
    return sockets


def master_inodes(sockets, socket_path):
    """Inodes bound at ``socket_path``: ssh binds ``<ControlPath>.<16 random characters>``
    then links it to the path; only that exact temporary name counts, so the master of host
    ``h1`` is never mistaken for the one of ``h1.b``."""
    path = str(socket_path)
    temp = re.compile(re.escape(path) + r"\.[A-Za-z0-9]{16}")
    return {inode for name, inode in sockets if name == path or temp.fullmatch(name)}


def holders_of_inode(inode, proc=Path("/proc")):
    """PIDs of processes that hold ``socket:[inode]`` open."""
    wanted = f"socket:[{inode}]"
    pids = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) == wanted:
                    pids.append(int(entry.name))
                    break
        except OSError:
            continue
    return pids


def read_hosts(path):
    if path is None:
        return None
    return {line.strip() for line in Path(path).read_text().splitlines() if line.strip()}


def ssh_control(action, socket_path, timeout):
    """``ssh -O <action>`` against one control socket; returns (returncode, stderr) or None on timeout."""
    argv = ["ssh", "-F", "/dev/null", "-o", f"ControlPath={socket_path}", "-O", action, "x"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None
    return proc.returncode, proc.stderr.strip()


def kill_master(socket_path):
    inodes = master_inodes(parse_proc_net_unix(Path("/proc/net/unix").read_text()), socket_path)
    pids = sorted({pid for inode in inodes for pid in holders_of_inode(inode)} - {os.getpid()})
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def remove(path, seen=None):
    """Unlink ``path``, but only if it is still the socket looked at (``seen``: its stat):
    a check may have started a new master at the same path meanwhile."""
    try:
        if seen is not None:
            now = path.lstat()
            if (now.st_dev, now.st_ino) != (seen.st_dev, seen.st_ino):
                return False
        path.unlink()
    except FileNotFoundError:
        pass
    return True


def clean(control_dir, hosts, timeout):
    """Act on every socket in ``control_dir``; returns a list of (socket name, what was done)."""
    done = []
    for path in sorted(Path(control_dir).iterdir()):
        try:
            seen = path.lstat()
        except FileNotFoundError:
            continue
        if not stat.S_ISSOCK(seen.st_mode):
            continue
        if hosts is not None and path.name not in hosts:
            if ssh_control("exit", path, timeout) is None:
                kill_master(path)
            remove(path)
            done.append((path.name, "host no longer monitored: master stopped"))
            continue
        answer = ssh_control("check", path, timeout)
        if answer is None:
            pids = kill_master(path)
            remove(path)
            done.append((path.name, f"master hung: killed {pids}, socket removed"))
        elif answer[0] != 0:
            if not remove(path, seen):
                continue  # a new master took the path: not stale
            done.append((path.name, f"stale socket removed ({answer[1] or 'no master'})"))
    return done


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("control_dir")
    parser.add_argument("--hosts-file", help="host names still monitored, one a line")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds for ssh -O check")
    args = parser.parse_args(argv)
    if not Path(args.control_dir).is_dir():
        return 0
    for name, what in clean(args.control_dir, read_hosts(args.hosts_file), args.timeout):
        print(f"{name}: {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
