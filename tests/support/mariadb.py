"""pytest fixtures over :mod:`lab.mariadb` (the service itself lives there)."""

import pytest

from lab.mariadb import Writer, can_run_lab, start_lab


@pytest.fixture(scope="session")
def mariadb_lab():
    """Session-wide primary + replica (replica datadir on btrfs on a loop device)."""
    reason = can_run_lab()
    if reason:
        pytest.fail(f"MariaDB lab cannot start: {reason}")
    lab = start_lab()
    yield lab
    lab.stop()


@pytest.fixture
def mariadb_writer(mariadb_lab):
    """A writer thread inserting into the primary for the duration of one test."""
    writer = Writer(mariadb_lab.primary).start()
    yield writer
    writer.stop()
