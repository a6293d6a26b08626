"""pytest fixtures over :mod:`lab.haproxy_vrrp_lab` (the service itself lives there)."""

import os
import shutil

import pytest

from lab.haproxy_vrrp_lab import VrrpLab


def lab_prerequisites():
    """Skip (with the reason) where the lab cannot run: not root, a tool missing."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    for tool in ("haproxy", "keepalived", "curl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/apt-packages.txt)")


@pytest.fixture(scope="module")
def wf18_vrrp_lab(tmp_path_factory):
    """The VRRP lab of this module's docstring with keepalived on every LB but ``pb`` (a test
    starts that one through the state); torn down by PID, namespaces deleted."""
    lab_prerequisites()
    lab = VrrpLab(
        tmp_path_factory.mktemp("vrrp-lab"), f"wf18v{os.getpid() % 10000}",
        hosts=("client", "flood"),
    )  # fmt: skip
    try:
        yield lab.start(skip_keepalived=("pb",))
    finally:
        lab.close()
