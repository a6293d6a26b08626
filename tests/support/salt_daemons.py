"""Real salt-master and salt-minion daemons configured like a production master.

The master takes ``docs/master.d-example.conf`` (file_roots, pillar_roots, reactor) with the
checkout's path put in, so the tests exercise the snippet the README tells operators to use.
Per-minion pillar overrides (to point paths at a temp root) go through a ``file_tree``
ext_pillar: ``pillar_override(minion_id, {...})`` writes them.
"""

from pathlib import Path

import pytest
import yaml

from lab.pillar_tree import PillarOverrides
from lab.upgrade import webfarm_grains  # noqa: F401 - the tests import it from here too

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CONF = REPO / "docs" / "master.d-example.conf"


def master_config(repo=REPO):
    """The example master.d snippet with /srv/webfarm replaced by ``repo``."""
    text = EXAMPLE_CONF.read_text().replace("/srv/webfarm", str(repo))
    return yaml.safe_load(text)


@pytest.fixture(scope="session")
def pillar_overrides(tmp_path_factory):
    return PillarOverrides(tmp_path_factory.mktemp("pillar-overrides"))


@pytest.fixture(scope="session")
def salt_master(salt_factories, pillar_overrides):
    overrides = master_config()
    overrides["ext_pillar"] = [{"file_tree": {"root_dir": str(pillar_overrides.root)}}]
    overrides["ext_pillar_first"] = False
    factory = salt_factories.salt_master_daemon("wf-master", overrides=overrides)
    with factory.started():
        yield factory


def stop_and_forget(salt_master, factory):
    """Stop a minion a module started and delete its key (and cached data) on the session's
    master, so the later tests' ``salt '*'`` does not wait for a minion that is gone."""
    factory.terminate()
    ret = salt_master.salt_key_cli().run("-d", factory.id, "-y")
    assert ret.returncode == 0, ret


SMOKE_MINIONS = {
    "web-s1-f1-m1": webfarm_grains("web", "s1", "f1", 1),
    "web-s1-f2-m1": webfarm_grains("web", "s1", "f2", 1),
    "db-replica": webfarm_grains("db-replica"),
}


@pytest.fixture(scope="session")
def salt_minions(salt_master):
    """Three real minions with webfarm grains, keys accepted, running until the session ends."""
    factories = [
        salt_master.salt_minion_daemon(minion_id, overrides={"grains": grains})
        for minion_id, grains in SMOKE_MINIONS.items()
    ]
    started = []
    try:
        for factory in factories:
            factory.start()
            started.append(factory)
        yield {factory.id: factory for factory in started}
    finally:
        for factory in started:
            factory.terminate()


@pytest.fixture(scope="session")
def salt_cli(salt_master):
    return salt_master.salt_cli(timeout=120)


@pytest.fixture(scope="session")
def salt_run_cli(salt_master):
    return salt_master.salt_run_cli(timeout=300)
