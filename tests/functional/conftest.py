"""Loader-level fixtures: one module through Salt's loader, no daemons.

``modules``/``states`` load the repo's ``salt/_modules``, ``salt/_states`` and ``salt/_utils``
directly. Tests give pillar with ``loaders_pillar`` (override it in a test module) or pass
settings as keyword arguments.
"""

import pytest
from saltfactories.utils import random_string
from saltfactories.utils.functional import Loaders

from tests.support.salt_env import extension_dirs, file_roots


@pytest.fixture(scope="session")
def minion_config(salt_factories):
    overrides = {"file_client": "local", "file_roots": file_roots(), **extension_dirs()}
    factory = salt_factories.salt_minion_daemon(
        random_string("functional-"), defaults={"pillar": {}}, overrides=overrides
    )
    return factory.config.copy()


@pytest.fixture
def loaders_pillar():
    """Pillar the loaded modules see; override in a test module to give one."""
    return {}


@pytest.fixture
def loaders(minion_config, loaders_pillar):
    opts = dict(minion_config)
    opts["pillar"] = loaders_pillar
    loaders = Loaders(opts)
    yield loaders
    loaders.reset_state()


@pytest.fixture
def modules(loaders):
    return loaders.modules


@pytest.fixture
def states(loaders):
    return loaders.states


@pytest.fixture(params=[False, True], ids=["real", "test"])
def testmode(request):
    return request.param
