"""Salt configuration shared by the functional (loader) and integration (daemon) tiers."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def file_roots():
    return {"base": [str(REPO / "salt" / "states"), str(REPO / "salt")]}


def extension_dirs():
    """Point a minion straight at the repo's extension modules (no sync needed)."""
    return {
        "module_dirs": [str(REPO / "salt" / "_modules")],
        "states_dirs": [str(REPO / "salt" / "_states")],
        "utils_dirs": [str(REPO / "salt" / "_utils")],
    }


@pytest.fixture(scope="session")
def salt_factories_config():
    return {"code_dir": str(REPO), "inject_sitecustomize": False, "start_timeout": 120}
