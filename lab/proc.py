"""Stopping a child process the fixtures started (not a plugin)."""

import os
import signal
import subprocess


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
