"""The pillar topology (``webfarm:topology``), walked in one place (pure logic, no Salt, no I/O).

Its shape (``pillar/webfarm/topology.sls`` is the example)::

    primary_lb: [{id, address, port}, ...]          the primary tier's LBs
    primary_vip: {address, port, vrid, prefix}      optional, the primary tier's VRRP address
    sites:
      <site>:
        lbs: [{id, address, port}, ...]             the site tier's LBs
        vip: {address, port, vrid, prefix}          optional
        farms:
          <farm>:
            memcached: {address, port}
            members: {<number>: {id, address, port}, ...}
    db: {primary: {id, address, port}, replicas: [{id, address, port}, ...]}
    monitor: {id, address}
    logstore: {id, address, port}
    preprod: [{id, address, port, hw_profile}, ...]
    minions: {<id>: <role> or [<role>, ...]}        mine mode: minions named without an entry

The walkers take the pillar as it comes (from YAML or JSON, maybe incomplete) and never fail on
its shape: a part that is not what the shape says is skipped. An *entry* (a host) is a
non-empty mapping; a slot that holds one entry may also hold a list of them. Entries are
returned as they are in the pillar (not copied), in the pillar's order; a member's number is
its key as the pillar spells it (an int from YAML, a string from JSON: ``int(number)`` it).
Saying what is wrong with a topology is :func:`webfarm_haproxy.validate_topology`'s job.
"""

# The top-level keys that hold one host entry or a list of them, with the role they give.
TOP_LEVEL_ROLES = (
    ("primary_lb", "lb-primary"),
    ("monitor", "monitor"),
    ("logstore", "logstore"),
    ("preprod", "preprod"),
)


def _mapping(value):
    return value if isinstance(value, dict) else {}


def entries(value):
    """The host entries of a slot that holds one entry or a list of them.

    A mapping is one entry (none when empty); in a list or tuple, its non-empty mappings;
    anything else holds none.
    """
    if isinstance(value, dict):
        return [value] if value else []
    if isinstance(value, (list, tuple)):
        return [item for item in value if isinstance(item, dict) and item]
    return []


def sites(topology):
    """``[(site, data)]``: the sites whose data is a mapping, in pillar order."""
    raw = _mapping(_mapping(topology).get("sites"))
    return [(site, data) for site, data in raw.items() if isinstance(data, dict)]


def farms(topology):
    """``[(site, farm, data)]``: every farm of every site, in pillar order.

    ``data`` is the farm's value as the pillar has it (None for a farm written with no value):
    a farm is named by its key, whatever it holds.
    """
    return [
        (site, farm, data)
        for site, site_data in sites(topology)
        for farm, data in _mapping(site_data.get("farms")).items()
    ]


def farm(topology, site, name):
    """The mapping of farm ``name`` of ``site``, or None when the topology has no such farm."""
    site_data = _mapping(_mapping(_mapping(topology).get("sites")).get(site))
    data = _mapping(site_data.get("farms")).get(name)
    return data if isinstance(data, dict) else None


def farm_members(farm_data):
    """``[(number, entry)]`` of a farm's ``members``, in pillar order."""
    raw = _mapping(_mapping(farm_data).get("members"))
    return [(number, entry) for number, entry in raw.items() if isinstance(entry, dict) and entry]


def members(topology):
    """``[(site, farm, number, entry)]``: every member of every farm, in pillar order."""
    return [
        (site, name, number, entry)
        for site, name, data in farms(topology)
        for number, entry in farm_members(data)
    ]


def tiers(topology):
    """``[(tier, site, lbs, vip)]``: the LBs of each HAProxy tier and its VIP (or None).

    First the primary tier (``"primary"``, site None: ``primary_lb``, ``primary_vip``), then
    one site tier per site (``"site"``, the site: its ``lbs``, its ``vip``), in pillar order.
    """
    topology = _mapping(topology)
    vip = topology.get("primary_vip")
    out = [("primary", None, entries(topology.get("primary_lb")), _mapping(vip) or None)]
    for site, data in sites(topology):
        out.append(("site", site, entries(data.get("lbs")), _mapping(data.get("vip")) or None))
    return out


def top_level_hosts(topology):
    """``[(role, entry, {})]`` of the keys of :data:`TOP_LEVEL_ROLES`, in that order."""
    topology = _mapping(topology)
    return [
        (role, entry, {}) for key, role in TOP_LEVEL_ROLES for entry in entries(topology.get(key))
    ]


def site_hosts(topology):
    """``[(role, entry, where)]`` of the sites: per site in pillar order, its LBs
    (``lb-site``, where ``{"site"}``), then its farms' members (``web``, where
    ``{"site", "farm", "member"}``, the member's number as the pillar spells it)."""
    out = []
    for site, data in sites(topology):
        out += [("lb-site", entry, {"site": site}) for entry in entries(data.get("lbs"))]
        out += [
            ("web", entry, {"site": site, "farm": name, "member": number})
            for name, farm_data in _mapping(data.get("farms")).items()
            for number, entry in farm_members(farm_data)
        ]
    return out


def db_hosts(topology):
    """``[(role, entry, {})]``: ``db.primary`` (``db-primary``), then ``db.replicas``
    (``db-replica``)."""
    db = _mapping(_mapping(topology).get("db"))
    return [("db-primary", entry, {}) for entry in entries(db.get("primary"))] + [
        ("db-replica", entry, {}) for entry in entries(db.get("replicas"))
    ]


def hosts(topology):
    """``[(role, entry, where)]`` of every host entry of the topology, in the order the
    example pillar lists them: the primary LBs, each site's LBs and members
    (:func:`site_hosts`), the DB primary and replicas, the monitor, the log store, the
    preprod servers.

    ``where`` is the host's place as its ``webfarm`` grains name it: ``{}``, ``{"site"}`` for
    a site LB, ``{"site", "farm", "member"}`` for a farm member.
    """
    top = top_level_hosts(topology)
    primary = [host for host in top if host[0] == "lb-primary"]
    others = [host for host in top if host[0] != "lb-primary"]
    return primary + site_hosts(topology) + db_hosts(topology) + others


def listed_minions(topology):
    """``[(minion_id, role)]`` of the ``minions`` mapping (``{id: role or [roles]}``), in
    pillar order; ids as strings, roles that are not non-empty strings left out."""
    named = _mapping(_mapping(topology).get("minions"))
    return [
        (str(minion), one)
        for minion, role in named.items()
        for one in (role if isinstance(role, (list, tuple)) else [role])
        if isinstance(one, str) and one
    ]


def find(topology, minion_id, role=None):
    """The first ``(role, entry, where)`` of :func:`hosts` whose entry's ``id`` is
    ``minion_id`` (and whose role is ``role``, if given), or None."""
    for host in hosts(topology):
        ident = host[1].get("id")
        if ident is not None and ident == minion_id and role in (None, host[0]):
            return host
    return None
