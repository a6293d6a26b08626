"""The demo's hosts, read from the example topology pillar (pillar/webfarm/topology.sls)."""

from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TOPOLOGY_SLS = REPO / "pillar" / "webfarm" / "topology.sls"
MASTER_ADDRESS = "10.77.0.2"


@dataclass
class Host:
    id: str
    address: str
    grains: dict = field(default_factory=dict)


def load(path=TOPOLOGY_SLS):
    return yaml.safe_load(path.read_text())["webfarm"]["topology"]


def hosts(topology=None):
    """Every minion of the topology with its address and ``webfarm`` grains, in a stable order."""
    topo = topology or load()
    out = []

    def add(entry, role, **where):
        grains = {"role": role, "hw_profile": entry.get("hw_profile", "generic-x86_64"), **where}
        out.append(Host(entry["id"], entry["address"], {"webfarm": grains}))

    for lb in topo.get("primary_lb", []):
        add(lb, "lb-primary")
    for site, site_data in topo["sites"].items():
        for lb in site_data.get("lbs", []):
            add(lb, "lb-site", site=site)
        for farm, farm_data in site_data["farms"].items():
            for member, member_data in farm_data["members"].items():
                add(member_data, "web", site=site, farm=farm, member=int(member))
    db = topo.get("db", {})
    if db.get("primary"):
        add(db["primary"], "db-primary")
    for replica in db.get("replicas", []):
        add(replica, "db-replica")
    for role in ("monitor", "logstore"):
        if topo.get(role):
            add(topo[role], role)
    for entry in topo.get("preprod", []):
        add(entry, "preprod")
    return out
