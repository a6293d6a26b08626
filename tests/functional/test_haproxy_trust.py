"""``haproxy_tier.topology`` in mine mode trusts the master: a lying minion is no backend.

Through Salt's loader with the masterless mine (real ``mine.update``/``mine.get``): this
minion sets grain ``webfarm`` to claim a web server's role and publishes it to the mine.
The pillar topology (master-side) decides whether that claim is used (docs/trust.md).
"""

import pytest
from saltfactories.utils.functional import Loaders

pytestmark = pytest.mark.timeout(60)

CLAIM = {"role": "web", "site": "s1", "farm": "f1", "member": 1, "address": "127.0.0.1"}


def topology_of(minion_config, named):
    """haproxy_tier.topology() with this minion claiming CLAIM; ``named``: pillar minions."""
    opts = dict(minion_config)
    opts["pillar"] = {
        "mine_functions": {"webfarm_grains": [{"mine_function": "grains.item"}, "webfarm", "ipv4"]},
        "webfarm": {"topology": {"from_mine": True, "minions": named}},
    }
    loaders = Loaders(opts)
    try:
        loaders.opts["grains"]["webfarm"] = CLAIM  # what the minion says about itself
        assert loaders.modules.mine.update() is not False
        mine = loaders.modules.mine.get("*", "webfarm_grains")
        assert mine[opts["id"]]["webfarm"]["role"] == "web"  # the claim is in the mine
        try:
            return loaders.modules.haproxy_tier.topology()
        except Exception as exc:  # noqa: BLE001 - the module's clean error is the result
            return exc
    finally:
        loaders.reset_state()


def test_a_minion_the_topology_does_not_name_is_no_backend(minion_config):
    # Named as something else (a monitor) or not at all: its web claim is dropped.
    for named in ({}, {minion_config["id"]: "monitor"}, {"other-minion": "web"}):
        result = topology_of(minion_config, named)
        assert "the topology has no sites" in str(result), (named, result)


def test_a_named_web_minion_is_taken_from_the_mine(minion_config):
    result = topology_of(minion_config, {minion_config["id"]: "web"})
    # Accepted as member s1/f1/1; the topology is then incomplete only for lack of an LB.
    assert "sites.s1: site has no lbs" in str(result), result
