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
