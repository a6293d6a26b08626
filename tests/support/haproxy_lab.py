"""pytest fixtures over :mod:`lab.haproxy_lab` (the service itself lives there)."""

import pytest

from lab.haproxy_lab import Lab


@pytest.fixture(scope="session")
def haproxy_lab(tmp_path_factory):
    """Backends, two site LBs and a primary LB; stopped by PID at the end of the session."""
    lab = Lab(tmp_path_factory.mktemp("haproxy-lab"))
    try:
        yield lab.start()
    finally:
        lab.stop()
