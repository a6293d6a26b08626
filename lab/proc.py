"""Child processes of the lab: stopping one it started (or any by pid), waiting for one to be
ready."""

import os
import signal
import subprocess
import time
from pathlib import Path


def stop_process(proc, timeout=10, group=False):
    """SIGTERM ``proc`` (with ``group``, its whole process group), wait up to ``timeout`` s,
    then SIGKILL it and reap it. Nothing to do when it is None or has exited."""
    if proc is None or proc.poll() is not None:
        return
    if group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def wait_for(predicate, timeout, what):
    """Poll ``predicate()`` every 50 ms until it is true; TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready within {timeout}s")


def processes_naming(text):
    """Pids of the processes (but this one) whose command line contains ``text``."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(text) in cmdline:
            pids.append(int(proc.name))
    return pids


def process_table():
    """``{pid: (parent pid, session id)}`` of every process in /proc now, in /proc's order."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                table[int(entry.name)] = (int(fields[1]), int(fields[3]))
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
    return table


def children(pid):
    """The pids whose parent is ``pid``."""
    return [child for child, (ppid, _sid) in process_table().items() if ppid == pid]


def descendants(pid):
    """Every pid below ``pid`` in the process tree."""
    below = {}
    for child, (ppid, _sid) in process_table().items():
        below.setdefault(ppid, []).append(child)
    out, todo = [], [pid]
    while todo:
        for child in below.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def session_pids(pid):
    """The pids of the session ``pid`` leads (it and the children it forked), ``pid`` included
    when it is still there."""
    return [p for p, (_ppid, sid) in process_table().items() if sid == pid or p == pid]


def _alive(pid):
    """A zombie (a child of the caller, not yet reaped) counts as stopped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def stop_pids(pids, timeout=20):
    """SIGTERM, then SIGKILL what is left after ``timeout``; the pids that would not stop."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.2)
        pids = [p for p in pids if _alive(p)]
        if not pids:
            break
    return pids
