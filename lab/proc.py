"""Child processes of the lab: stopping one it started, waiting for one to be ready."""

import os
import signal
import subprocess
import time


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
