"""Trust from the master (salt/_utils/webfarm_trust.py): a minion no one named, or one that
claims a role the pillar does not give it, is dropped."""

import webfarm_trust
import webfarm_upgrade

TOPOLOGY = {
    "primary_lb": [{"id": "lb-primary", "address": "10.0.0.10"}],
    "sites": {
        "s1": {
            "lbs": [{"id": "lb-s1", "address": "10.0.1.10"}],
            "farms": {"f1": {"members": {1: {"id": "web1", "address": "10.0.1.11"}}}},
        }
    },
    "db": {"primary": {"id": "db1"}, "replicas": [{"id": "db2"}]},
    "monitor": {"id": "mon", "address": "10.0.0.30"},
    "preprod": [{"id": "pp1", "hw_profile": "generic-x86_64"}],
    "minions": {"web2": "web"},
}


def test_topology_roles_and_addresses():
    roles = webfarm_trust.topology_roles(TOPOLOGY)
    assert roles == {
        "lb-primary": {"lb-primary"}, "lb-s1": {"lb-site"}, "web1": {"web"}, "db1": {"db-primary"},
        "db2": {"db-replica"}, "mon": {"monitor"}, "pp1": {"preprod"}, "web2": {"web"},
    }  # fmt: skip
    assert webfarm_trust.topology_addresses(TOPOLOGY)["mon"] == "10.0.0.30"
    assert webfarm_trust.topology_roles(None) == {}


def test_rogue_minions_are_dropped():
    mine = {
        "web1": {"webfarm": {"role": "web"}},
        "web2": {"webfarm": {"role": "web"}},
        "rogue": {"webfarm": {"role": "web"}},
        "db1": {"webfarm": {"role": "monitor"}},  # named, but lies about its role
        "mon": {"webfarm": {"role": "monitor"}},
    }
    assert sorted(webfarm_trust.trusted(mine, TOPOLOGY)) == ["mon", "web1", "web2"]
    assert sorted(webfarm_trust.trusted(mine, TOPOLOGY, role="monitor")) == ["mon"]
    assert webfarm_trust.untrusted(mine, TOPOLOGY) == ["db1", "rogue"]
    assert webfarm_trust.trusted(mine, {}) == {}
    assert webfarm_trust.trusted("junk", TOPOLOGY) == {}


def test_a_minion_that_claims_preprod_gets_no_release():
    """upgrade.preprod deploys to the preprod servers its grains report, after this filter."""
    grains = {
        "pp1": {"webfarm": {"role": "preprod", "hw_profile": "generic-x86_64"}},
        "rogue": {"webfarm": {"role": "preprod", "hw_profile": "epyc-7003"}},
        "web1": {"webfarm": {"role": "preprod", "hw_profile": "xeon-e5"}},  # named as web
    }
    kept = webfarm_trust.trusted(grains, TOPOLOGY)
    assert webfarm_upgrade.preprod_hosts(kept) == {"generic-x86_64": "pp1"}
    assert webfarm_trust.untrusted(grains, TOPOLOGY) == ["rogue", "web1"]
