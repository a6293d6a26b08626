"""pytest fixtures over :mod:`lab.mongo` (the service itself lives there)."""

import shutil

import pytest

from lab.mongo import SECANTUSD, MongoServer


def _require_server():
    if not SECANTUSD.exists():
        pytest.skip(f"{SECANTUSD} not found: install the dev requirements (secantusdb)")


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory):
    """A session-wide server on a free loopback port."""
    _require_server()
    server = MongoServer(tmp_path_factory.mktemp("mongo") / "data").start()
    yield server
    server.stop()


@pytest.fixture
def mongo_factory(tmp_path):
    """Make private servers (stop/start them freely); all are stopped at teardown."""
    _require_server()
    servers = []

    def make():
        server = MongoServer(tmp_path / f"mongo{len(servers)}" / "data")
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()
    for server in servers:
        shutil.rmtree(server.storage, ignore_errors=True)
