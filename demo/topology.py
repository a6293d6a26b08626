"""The demo's hosts, read from the example topology pillar (pillar/webfarm/topology.sls)."""

from dataclasses import dataclass, field
from pathlib import Path

import yaml

import webfarm_topology  # on sys.path by demo/__init__.py's `import lab`

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
    """Every minion of the topology with its address and ``webfarm`` grains, in a stable order
    (:func:`webfarm_topology.hosts`'s: the example pillar's)."""
    topo = topology or load()
    out = []

    def add(entry, role, **where):
        grains = {"role": role, "hw_profile": entry.get("hw_profile", "generic-x86_64"), **where}
        out.append(Host(entry["id"], entry["address"], {"webfarm": grains}))

    for role, entry, where in webfarm_topology.hosts(topo):
        if "member" in where:
            where = {**where, "member": int(where["member"])}
        add(entry, role, **where)
    return out
