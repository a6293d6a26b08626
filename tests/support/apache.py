"""pytest fixtures over :mod:`lab.apache` (the service itself lives there)."""

import os

import pytest

from lab.apache import APACHE2, Apache


@pytest.fixture
def apache_factory(tmp_path):
    """Make Apache instances: ``apache_factory(include, marker)``; stopped by PID at teardown."""
    if not os.path.exists(APACHE2):
        pytest.skip("apache2 is not installed (apt-get install apache2)")
    made = []

    def make(include, marker):
        apache = Apache(tmp_path / f"apache{len(made)}", include, marker)
        made.append(apache)
        return apache

    yield make
    for apache in made:
        apache.cleanup()
