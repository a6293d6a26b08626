"""Topologies of any size, and the Nagios config rendered from them the way Salt renders it.

Shared by ``tests/unit/test_scale_512.py`` (512 members on paper) and ``bench/scale.py``
(N real minions): the seed's shape is 4 sites x 8 farms x 16 members, a primary LB and one
LB per site (:func:`cluster`); :func:`sized` picks sites x farms x members to fill N minions.

The Nagios server config has no Python renderer: ``salt/states/nagios/server.sls`` builds the
host list in Jinja (from ``mine.get`` and pillar ``nagios``) and ``files/*.jinja`` render
it. :func:`render_nagios` renders both with Salt's own Jinja renderer
(``salt.utils.templates.render_jinja_tmpl``: Salt's filters and extensions, ``map.jinja``
imported from the state tree) with ``salt['mine.get']`` answering the given mine data and
``salt['pillar.get']`` the given pillar; what it does not cover is the file/cmd states
around the templates (staging copy, ``nagios4 -v`` on the monitor, reload).
"""

import copy
import os
from pathlib import Path

from demo.topology import REPO, hosts

STATES = REPO / "salt" / "states"
NAGIOS_FILES = ("nagios.cfg", "resource.cfg", "webfarm.cfg")
MONITOR = {"id": "monitor", "address": "10.0.0.30"}


def cluster(sites, farms, members, port=80):
    """The ``webfarm:topology`` pillar of ``sites`` x ``farms`` farms.

    ``members`` is the member count of every farm (int) or a list of per-farm counts, site
    by site (``sites * farms`` entries). Addresses: member ``m`` of farm ``f`` of site ``s``
    is ``10.<s>.<f>.<m + 10>``, site LB ``10.<s>.0.10``, primary LB ``10.0.0.10``, the monitor
    ``10.0.0.30``; each farm's
    memcached runs on its member 1.
    """
    counts = members if isinstance(members, list) else [members] * (sites * farms)
    if len(counts) != sites * farms or min(counts) < 1 or max(counts) > 200:
        raise ValueError(f"need {sites * farms} farm sizes of 1-200 members, got {counts}")
    topo = {
        "from_mine": False,
        "primary_lb": [{"id": "lb-primary", "address": "10.0.0.10", "port": port}],
        "sites": {},
        "monitor": dict(MONITOR),
    }
    for s in range(1, sites + 1):
        site = {"lbs": [{"id": f"lb-s{s}", "address": f"10.{s}.0.10", "port": port}], "farms": {}}
        for f in range(1, farms + 1):
            count = counts[(s - 1) * farms + (f - 1)]
            site["farms"][f"f{f}"] = {
                "memcached": {"address": f"10.{s}.{f}.11", "port": 11211},
                "members": {
                    m: {
                        "id": f"web-s{s}-f{f}-m{m}",
                        "address": f"10.{s}.{f}.{m + 10}",
                        "port": port,
                    }
                    for m in range(1, count + 1)
                },
            }
        topo["sites"][f"s{s}"] = site
    return topo


def sized(n):
    """``(sites, farms, [members per farm])`` whose :func:`cluster` (with a monitor host) has
    ``n`` minions: 2 sites up to 30 minions, then 3, then 4; about 4 members a farm up to
    8 farms a site (the seed's 4 x 8 x 16 = 512 members needs n = 518)."""
    sites = 2 if n <= 30 else 3 if n <= 60 else 4
    web = n - 1 - sites - 1  # primary LB, one LB per site, the monitor
    if web < 2 * sites:
        raise ValueError(f"{n} minions are too few for {sites} sites of 2 farms")
    farms = max(2, min(8, round(web / (sites * 4))))
    total = sites * farms
    counts = [web // total + (1 if i < web % total else 0) for i in range(total)]
    return sites, farms, counts


def minions(topology):
    """``{minion_id: grains}`` of every host in ``topology`` (the monitor included):
    ``webfarm`` grains as :func:`demo.topology.hosts` sets them, with the host's ``address``."""
    out = {}
    for host in hosts(topology):
        grains = copy.deepcopy(host.grains)
        grains["webfarm"]["address"] = host.address
        out[host.id] = grains
    return out


def nagios_mine(grains_by_minion):
    """What ``mine.get '*' webfarm_nagios_host`` answers when every minion publishes
    ``grains.item webfarm ipv4`` (pillar/nagios.sls)."""
    return {
        mid: {"webfarm": g["webfarm"], "ipv4": ["127.0.0.1", g["webfarm"]["address"]]}
        for mid, g in grains_by_minion.items()
    }


def _pillar_get(pillar):
    import salt.utils.data
    import salt.utils.dictupdate

    def get(key, default="", merge=False, **_):
        value = salt.utils.data.traverse_dict_and_list(pillar, key, KeyError, delimiter=":")
        if value is KeyError:
            return default
        if merge and isinstance(default, dict) and isinstance(value, dict):
            return salt.utils.dictupdate.merge(copy.deepcopy(default), value)
        return value

    return get


def _render(path, context):
    """Render the state-tree file ``path`` like Salt's jinja renderer, ``{% from %}`` /
    ``{% import %}`` resolved from the state tree (salt/states)."""
    import salt.config
    import salt.utils.templates

    opts = salt.config.DEFAULT_MINION_OPTS.copy()
    opts.update({"file_client": "local", "file_roots": {"base": [str(STATES)]}})
    # tpldir as Salt's state system gives it (the template's folder in the state tree):
    # map.jinja imports its defaults.yaml by it.
    tpldir = Path(path).parent.relative_to(STATES).as_posix()
    full = {"opts": opts, "saltenv": None, "tpldir": tpldir, **context}
    # No saltenv: Salt's renderer loads imports with a FileSystemLoader on the template's
    # directory, so hand it a path directly under the state tree.
    text = Path(path).read_text()
    return salt.utils.templates.render_jinja_tmpl(text, full, tmplpath=str(STATES / "x.sls"))


def render_nagios(mine, pillar, topology, minion_id="monitor"):
    """``{"sls": rendered server.sls data, "files": {name: text}}`` of the Nagios server.

    ``mine`` is the answer of ``mine.get <mine_target> webfarm_nagios_host``, ``pillar`` the
    monitor's pillar (its ``nagios`` key), ``topology`` the master's ``webfarm:topology``:
    the ``trust.*`` functions the SLS calls answer from it as the ``trust`` module does.
    Raises ``ValueError`` when the SLS refuses the pillar (its ``nagios-server-pillar``
    failure) or renders no host.
    """
    import salt.utils.yaml

    import webfarm_trust

    funcs = {
        "pillar.get": _pillar_get(pillar),
        "mine.get": lambda tgt, fun, tgt_type="glob", **_: copy.deepcopy(mine),
        "trust.minions": lambda: {
            m: sorted(r) for m, r in webfarm_trust.topology_roles(topology).items()
        },
        "trust.addresses": lambda: webfarm_trust.topology_addresses(topology),
        "trust.mine": lambda tgt, fun, role=None, **_: webfarm_trust.trusted(
            copy.deepcopy(mine), topology, role
        ),
        "file.dirname": os.path.dirname,
        "file.file_exists": lambda p: False,
    }
    grains = {"id": minion_id}
    ctx = {"salt": funcs, "grains": grains, "pillar": pillar}
    sls = salt.utils.yaml.safe_load(_render(STATES / "nagios" / "server.sls", ctx))
    if "nagios-server-pillar" in sls:
        raise ValueError(sls["nagios-server-pillar"]["test.configurable_test_state"][-1])
    staged = sls.get("nagios-server-staged-webfarm.cfg")
    if not staged:
        raise ValueError("nagios/server rendered no host config (no host from mine or pillar)")
    file_ctx = next(
        a["context"] for a in staged["file.managed"] if isinstance(a, dict) and "context" in a
    )
    files = {
        name: _render(STATES / "nagios" / "files" / f"{name}.jinja", {**ctx, **file_ctx})
        for name in NAGIOS_FILES
    }
    return {"sls": sls, "files": files}
