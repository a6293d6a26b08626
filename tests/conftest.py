"""Session-wide test wiring.

- ``salt/_utils`` is on ``sys.path`` (pyproject's ``pythonpath``, the one place) so unit tests
  import the pure logic directly (``import webfarm_motd``), as Salt's loader lets the
  execution modules do.
- Every ``tests/support/<service>.py`` is a pytest plugin: service fixtures live there,
  one file per service, and are visible to every tier.
"""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WEBFARM_SHARED", REPO.parent / "shared"))

pytest_plugins = [
    f"tests.support.{path.stem}"
    for path in sorted((REPO / "tests" / "support").glob("*.py"))
    if not path.stem.startswith("_")
]


@pytest.fixture(scope="session")
def repo_root():
    return REPO


@pytest.fixture(scope="session")
def shared_data():
    """``../shared/data``; tests that need it skip with the reason when it is absent."""
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip(f"real test data not found at {data} (set WEBFARM_SHARED)")
    return data


@pytest.fixture(scope="session")
def seed_text():
    """The seed document (``../shared/seed/*.txt``); tests that compare against one of its
    scripts skip with the reason when it is absent."""
    found = sorted((SHARED / "seed").glob("*.txt"))
    if not found:
        pytest.skip(f"the seed is not at {SHARED / 'seed'} (set WEBFARM_SHARED)")
    return found[0].read_text(encoding="utf-8")


def pytest_unconfigure(config):
    # Salt's log handlers flush into pytest's closed capture streams at exit; that noise
    # ("--- Logging error ---") is not a test outcome.
    import logging

    logging.raiseExceptions = False
