"""pytest fixtures over :mod:`lab.sshd` (the service itself lives there)."""

import shutil

import pytest

from lab.sshd import Sshd, short_tmpdir


@pytest.fixture(scope="session")
def sshd_server():
    """One sshd for the session on 127.0.0.1:<free port>; any local user may try to log in."""
    workdir = short_tmpdir("wfsshd-")
    server = Sshd(workdir)
    try:
        yield server.start()
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
