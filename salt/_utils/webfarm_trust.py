"""Trust from the master: which minions the pillar topology names, and in which roles.

Grains and mine data are written by the minion itself, so they never decide on their own who
gets access (an authorized key, a ``from=`` address) or traffic (an HAProxy backend, an
upgrade wave). The pillar topology (``webfarm:topology``, compiled on the master) does:
:func:`topology_roles` lists the minion IDs it names with their roles, and :func:`trusted`
keeps only the entries of minion-reported data (``{minion_id: data}``, as ``mine.get`` or
``grains.item`` return it) whose minion is named there, in a role the pillar gives it.

Pure functions, no Salt: used by ``haproxy_tier`` (mine mode), the ``upgrade`` runner and the
``trust`` execution module (which the Nagios SLS call).
"""

import webfarm_topology


def _add(roles, entry, role, addresses=None):
    minion = entry.get("id") if isinstance(entry, dict) else None
    if isinstance(minion, str) and minion:
        roles.setdefault(minion, set()).add(role)
        if addresses is not None and entry.get("address") and minion not in addresses:
            addresses[minion] = str(entry["address"])


def topology_addresses(topology):
    """``{minion_id: address}`` of the minions the topology gives an address (first one wins)."""
    addresses = {}
    topology_roles(topology, addresses)
    return addresses


def topology_roles(topology, _addresses=None):
    """``{minion_id: {roles}}`` of every minion the topology names.

    Looked at: ``primary_lb`` (lb-primary), ``sites.<s>.lbs`` (lb-site),
    ``sites.<s>.farms.<f>.members`` (web), ``db.primary``/``db.replicas``, ``monitor``,
    ``logstore``, ``preprod`` (an entry or a list of entries with an ``id``), and ``minions``: a mapping
    ``{minion_id: role or [roles]}`` that names minions for mine mode, where the rest of the
    topology comes from the mine. The walk is :mod:`webfarm_topology`'s.
    """
    roles = {}
    # The top-level keys first, then the sites, then the DB (the first address found wins).
    named = (
        webfarm_topology.top_level_hosts(topology)
        + webfarm_topology.site_hosts(topology)
        + webfarm_topology.db_hosts(topology)
    )
    for role, entry, _where in named:
        _add(roles, entry, role, _addresses)
    for minion, role in webfarm_topology.listed_minions(topology):
        roles.setdefault(minion, set()).add(role)
    return roles


def _claimed_role(data):
    webfarm = data.get("webfarm") if isinstance(data, dict) else None
    return webfarm.get("role") if isinstance(webfarm, dict) else None


def trusted(data, topology, role=None):
    """Only the entries of ``data`` (``{minion_id: minion-reported data}``) the master trusts.

    An entry is kept when the topology names its minion, and, if the entry claims a role
    (``data["webfarm"]["role"]``, grains or mine) or ``role`` is given, when the topology gives
    the minion that role. Everything else (a minion no one named, or one that claims a role
    the pillar does not give it) is dropped.
    """
    if not isinstance(data, dict):
        return {}
    roles = topology_roles(topology)
    kept = {}
    for minion, entry in data.items():
        allowed = roles.get(minion)
        if not allowed:
            continue
        claimed = _claimed_role(entry)
        if claimed is not None and claimed not in allowed:
            continue
        if role is not None and role not in allowed:
            continue
        kept[minion] = entry
    return kept


def untrusted(data, topology, role=None):
    """Sorted minion IDs of ``data`` that :func:`trusted` drops (for a log line or a comment)."""
    kept = trusted(data, topology, role)
    return sorted(m for m in (data if isinstance(data, dict) else {}) if m not in kept)
