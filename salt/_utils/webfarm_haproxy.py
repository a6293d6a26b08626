"""HAProxy tiers: topology validation, config rendering, runtime-API parsing (no Salt here).

Two tiers are generated from one topology (pillar ``webfarm:topology`` or the Salt mine):

- **primary**: balances the sites' LBs; cookie ``SITEID`` (value = site name).
- **site**: one config per site, balancing that site's farms; cookie ``FARMID`` (value = farm
  name, shared by every member of the farm).

Both tiers have the same shape, so "a group" below is a site (primary tier) or a farm (site
tier)::

    frontend lb_<tier>            routes a client whose cookie names a group with usable
                                  servers to that group's backend
    backend <kind>_<group>        one per group: round robin over its servers, health checks;
                                  this is what drain/ready act on
    backend pick_<kind>           every server of every group (tracking the group backends'
                                  checks and states): chooses a group for a client without a
                                  usable cookie and inserts the cookie

Draining a group puts its servers in ``drain`` in the group backend (no new requests, running
ones finish; then ``maint``) and in ``maint`` in the pick backend. The group then has no usable
server, so its sticky clients fall through to ``pick_<kind>``, where their cookie matches no
running server: they get another group and a new cookie. Inside a
group the requests of sticky clients are still spread over all its members (a cookie value
shared by servers of one backend would pin them all to the first one).

Server names: ``<farm>_m<member>`` on the site tier, ``<site>_lb<n>`` on the primary tier.
"""

import csv
import difflib
import io
import ipaddress
import re

TIERS = ("primary", "site")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
MEMBER_LIMIT = 9999

# Bits of srv_admin_state in `show servers state` (HAProxy's SRV_ADMF_*).
ADMF_FMAINT = 0x01
ADMF_IMAINT = 0x02
ADMF_CMAINT = 0x04
ADMF_FDRAIN = 0x08
ADMF_IDRAIN = 0x10
ADMF_RMAINT = 0x20
ADMF_HMAINT = 0x40
ADMF_MAINT = ADMF_FMAINT | ADMF_IMAINT | ADMF_CMAINT | ADMF_RMAINT | ADMF_HMAINT
ADMF_DRAIN = ADMF_FDRAIN | ADMF_IDRAIN

DEFAULTS = {
    "binary": "haproxy",
    "user": "haproxy",
    "group": "haproxy",
    "maxconn": 4096,
    "nbthread": None,
    "log": "/dev/log",
    "log_facility": "local0",
    "retries": 3,
    "postonly": False,
    "check": {"path": "/", "inter": "2s", "fall": 3, "rise": 2},
    "timeouts": {
        "connect": "5s",
        "client": "30s",
        "server": "30s",
        "http-request": "10s",
        "http-keep-alive": "10s",
        "queue": "30s",
        "check": "5s",
    },
    "monitor_uri": "/haproxy-health",
    "primary": {
        "config": "/etc/haproxy/primary.cfg",
        "pidfile": "/run/haproxy/primary.pid",
        "socket": "/run/haproxy/primary.sock",
        "state_file": "/var/lib/haproxy/primary.state",
        "cookie": "SITEID",
        "bind": None,
    },
    "site": {
        "config": "/etc/haproxy/site.cfg",
        "pidfile": "/run/haproxy/site.pid",
        "socket": "/run/haproxy/site.sock",
        "state_file": "/var/lib/haproxy/site.state",
        "cookie": "FARMID",
        "bind": None,
        "name": None,
    },
}


class TopologyError(ValueError):
    """The topology cannot be rendered; ``errors`` lists every problem found."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__("invalid topology: " + "; ".join(self.errors))


# --------------------------------------------------------------------------- topology


def _check_name(kind, name, where, errors):
    if not isinstance(name, str) or not NAME_RE.match(name):
        errors.append(
            f"{where}: {kind} name {name!r} must be 1-32 characters of letters, digits, '_', '.', '-'"
        )
        return False
    return True


def _endpoint(entry, where, errors, need_id=True):
    """Validate one ``{id, address, port}`` entry; return a clean copy or None."""
    if not isinstance(entry, dict):
        errors.append(f"{where}: expected a mapping with id, address, port, got {entry!r}")
        return None
    ok = True
    ident = entry.get("id")
    if need_id and (not isinstance(ident, str) or not ident):
        errors.append(f"{where}: missing id")
        ok = False
    address = entry.get("address")
    try:
        address = str(ipaddress.ip_address(str(address).strip()))
    except ValueError:
        errors.append(f"{where}: bad address {entry.get('address')!r} (must be an IP address)")
        ok = False
    port = entry.get("port", 80)
    if isinstance(port, bool) or not isinstance(port, int | str):
        port = None
    try:
        port = int(port)
    except (TypeError, ValueError):
        port = None
    if port is None or not 1 <= port <= 65535:
        errors.append(f"{where}: bad port {entry.get('port')!r} (must be 1-65535)")
        ok = False
    weight = entry.get("weight", 100)
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 256:
        errors.append(f"{where}: bad weight {weight!r} (must be an integer 0-256)")
        ok = False
    if not ok:
        return None
    return {"id": ident, "address": address, "port": port, "weight": weight}


def _member_index(key, where, errors):
    try:
        index = int(key)
    except (TypeError, ValueError):
        index = None
    if index is None or isinstance(key, bool) or not 1 <= index <= MEMBER_LIMIT:
        errors.append(f"{where}: member index {key!r} must be an integer 1-{MEMBER_LIMIT}")
        return None
    return index


def validate_topology(topology):
    """Return a normalised copy of ``topology`` or raise :class:`TopologyError`.

    Catches: unknown shape, bad site/farm names, a site without LBs or farms, a farm without
    members, bad addresses/ports/weights, the same server (address:port) or minion id used
    twice. Every problem is reported at once.
    """
    errors = []
    if not isinstance(topology, dict):
        raise TopologyError([f"topology must be a mapping, got {type(topology).__name__}"])
    seen_endpoints = {}
    seen_ids = {}

    def remember(entry, where):
        key = (entry["address"], entry["port"])
        if key in seen_endpoints:
            errors.append(
                f"{where}: duplicate server {entry['address']}:{entry['port']}"
                f" (already {seen_endpoints[key]})"
            )
        else:
            seen_endpoints[key] = where
        if entry["id"] is not None:
            if entry["id"] in seen_ids:
                errors.append(
                    f"{where}: duplicate id {entry['id']!r} (already {seen_ids[entry['id']]})"
                )
            else:
                seen_ids[entry["id"]] = where

    primary = []
    raw_primary = topology.get("primary_lb") or []
    if not isinstance(raw_primary, list):
        errors.append("primary_lb: must be a list of {id, address, port}")
        raw_primary = []
    for number, raw in enumerate(raw_primary, 1):
        where = f"primary_lb[{number}]"
        entry = _endpoint(raw, where, errors)
        if entry:
            remember(entry, where)
            primary.append(entry)

    sites = {}
    raw_sites = topology.get("sites")
    if not isinstance(raw_sites, dict) or not raw_sites:
        errors.append("sites: the topology has no sites")
        raw_sites = {}
    for site, raw_site in raw_sites.items():
        where_site = f"sites.{site}"
        if not _check_name("site", site, where_site, errors):
            continue
        if not isinstance(raw_site, dict):
            errors.append(f"{where_site}: must be a mapping with lbs and farms")
            continue
        lbs = []
        raw_lbs = raw_site.get("lbs") or []
        if not isinstance(raw_lbs, list) or not raw_lbs:
            errors.append(f"{where_site}: site has no lbs")
            raw_lbs = []
        for number, raw in enumerate(raw_lbs, 1):
            where = f"{where_site}.lbs[{number}]"
            entry = _endpoint(raw, where, errors)
            if entry:
                remember(entry, where)
                lbs.append(entry)
        farms = {}
        raw_farms = raw_site.get("farms")
        if not isinstance(raw_farms, dict) or not raw_farms:
            errors.append(f"{where_site}: site has no farms")
            raw_farms = {}
        for farm, raw_farm in raw_farms.items():
            where_farm = f"{where_site}.farms.{farm}"
            if not _check_name("farm", farm, where_farm, errors):
                continue
            raw_members = (raw_farm or {}).get("members") if isinstance(raw_farm, dict) else None
            if not isinstance(raw_members, dict) or not raw_members:
                errors.append(f"{where_farm}: farm without members")
                continue
            members = {}
            for key, raw in raw_members.items():
                where = f"{where_farm}.members.{key}"
                index = _member_index(key, where, errors)
                if index is None:
                    continue
                if index in members:
                    errors.append(f"{where}: duplicate member index {index}")
                    continue
                entry = _endpoint(raw, where, errors, need_id=False)
                if entry:
                    remember(entry, where)
                    members[index] = entry
            farms[farm] = {
                "members": dict(sorted(members.items())),
                "memcached": (raw_farm or {}).get("memcached"),
            }
        sites[site] = {"lbs": lbs, "farms": farms}
    if errors:
        raise TopologyError(errors)
    clean = {key: value for key, value in topology.items() if key not in ("sites", "primary_lb")}
    clean["primary_lb"] = primary
    clean["sites"] = sites
    return clean


def _pick_address(addresses, network):
    candidates = [a for a in addresses or [] if a]
    if network:
        net = ipaddress.ip_network(network, strict=False)
        candidates = [a for a in candidates if ipaddress.ip_address(a) in net]
    else:
        candidates = [a for a in candidates if not ipaddress.ip_address(a).is_loopback]
    return candidates[0] if candidates else None


def topology_from_mine(mine, member_port=80, lb_port=80, network=None):
    """Build a topology from mine data ``{minion_id: {"webfarm": {...}, "ipv4": [...]}}``.

    Each minion's grain ``webfarm`` gives ``role`` (``web``, ``lb-primary``, ``lb-site``),
    ``site``, ``farm``, ``member`` and optionally ``address``/``port``; otherwise the address is
    the first ``ipv4`` inside ``network`` (or the first non-loopback one). Minions of other
    roles are ignored. The result still has to pass :func:`validate_topology`.
    """
    if not isinstance(mine, dict):
        raise TopologyError([f"mine data must be a mapping, got {type(mine).__name__}"])
    errors = []
    topology = {"primary_lb": [], "sites": {}}
    for minion in sorted(mine):
        data = mine[minion] or {}
        grains = data.get("webfarm") or {}
        role = grains.get("role")
        if role not in ("web", "lb-primary", "lb-site"):
            continue
        address = grains.get("address") or _pick_address(data.get("ipv4"), network)
        if address is None:
            errors.append(f"mine {minion}: no usable ipv4 address")
            continue
        default_port = member_port if role == "web" else lb_port
        entry = {"id": minion, "address": address, "port": grains.get("port", default_port)}
        if role == "lb-primary":
            topology["primary_lb"].append(entry)
            continue
        site = grains.get("site")
        if not site:
            errors.append(f"mine {minion}: role {role} without webfarm:site")
            continue
        site_entry = topology["sites"].setdefault(str(site), {"lbs": [], "farms": {}})
        if role == "lb-site":
            site_entry["lbs"].append(entry)
            continue
        farm, member = grains.get("farm"), grains.get("member")
        if not farm or member in (None, ""):
            errors.append(f"mine {minion}: web server without webfarm:farm/member")
            continue
        members = site_entry["farms"].setdefault(str(farm), {"members": {}})["members"]
        if str(member) in members:
            errors.append(
                f"mine {minion}: duplicate server {site}/{farm}/{member}"
                f" (already {members[str(member)]['id']})"
            )
            continue
        members[str(member)] = entry
    if errors:
        raise TopologyError(errors)
    return topology


# --------------------------------------------------------------------------- settings


def _merge(base, override):
    out = dict(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def tier_settings(pillar_haproxy, tier):
    """Merge pillar ``haproxy`` over :data:`DEFAULTS`; return the flat settings of ``tier``."""
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {', '.join(TIERS)}, got {tier!r}")
    if pillar_haproxy is not None and not isinstance(pillar_haproxy, dict):
        raise ValueError("pillar haproxy must be a mapping")
    merged = _merge(DEFAULTS, pillar_haproxy or {})
    settings = {k: v for k, v in merged.items() if k not in TIERS}
    settings.update(merged[tier])
    settings["tier"] = tier
    return settings


def parse_bind(bind):
    """``"127.0.0.1:8080"``, ``{"address", "port"}`` or a list of those -> [(address, port)]."""
    if bind is None:
        return []
    items = bind if isinstance(bind, list) else [bind]
    out = []
    for item in items:
        if isinstance(item, dict):
            address, port = item.get("address"), item.get("port")
        else:
            address, _, port = str(item).rpartition(":")
        try:
            address = str(ipaddress.ip_address(str(address).strip("[]")))
            port = int(port)
        except (TypeError, ValueError):
            raise ValueError(f"bad bind {item!r}: expected <ip>:<port>") from None
        if not 1 <= port <= 65535:
            raise ValueError(f"bad bind {item!r}: port must be 1-65535")
        out.append((address, port))
    return out


# --------------------------------------------------------------------------- rendering


def server_name(tier, group, index):
    return f"{group}_lb{index}" if tier == "primary" else f"{group}_m{index}"


def group_kind(tier):
    return "site" if tier == "primary" else "farm"


def backend_name(tier, group):
    return f"{group_kind(tier)}_{group}"


def pick_backend(tier):
    return f"pick_{group_kind(tier)}"


def tier_groups(topology, tier, site=None):
    """``{group: [(server_name, entry), ...]}`` of the tier (sites or one site's farms)."""
    if tier == "primary":
        return {
            name: [(server_name(tier, name, n), lb) for n, lb in enumerate(data["lbs"], 1)]
            for name, data in topology["sites"].items()
        }
    if site not in topology["sites"]:
        known = ", ".join(topology["sites"]) or "none"
        raise TopologyError([f"site {site!r} is not in the topology (sites: {known})"])
    return {
        farm: [(server_name(tier, farm, n), m) for n, m in data["members"].items()]
        for farm, data in topology["sites"][site]["farms"].items()
    }


def _addr(address, port):
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _global_section(settings):
    lines = ["global", "    master-worker"]
    if settings.get("log"):
        lines.append(f"    log {settings['log']} len 4096 {settings['log_facility']}")
    lines.append(f"    maxconn {int(settings['maxconn'])}")
    if settings.get("nbthread"):
        lines.append(f"    nbthread {int(settings['nbthread'])}")
    if settings.get("user"):
        lines.append(f"    user {settings['user']}")
    if settings.get("group"):
        lines.append(f"    group {settings['group']}")
    lines += [
        f"    stats socket {settings['socket']} mode 600 level admin expose-fd listeners",
        "    stats timeout 30s",
        f"    server-state-file {settings['state_file']}",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option httplog",
        "    option dontlognull",
        "    option forwardfor",
        "    option redispatch",
        # On reload the old process keeps idle keep-alive connections until it has answered
        # their next request (with Connection: close) instead of resetting them under a
        # client that is sending one at that moment.
        "    option idle-close-on-response",
        f"    retries {int(settings['retries'])}",
        "    load-server-state-from-file global",
    ]
    for name, value in settings["timeouts"].items():
        lines.append(f"    timeout {name} {value}")
    check = settings["check"]
    lines += [
        f"    default-server inter {check['inter']} fall {int(check['fall'])} rise {int(check['rise'])}",
        "",
    ]
    return lines


def render(topology, settings, site=None, binds=None):
    """Render the HAProxy 2.6 config of ``settings["tier"]`` (for ``site`` on the site tier).

    ``topology`` must come from :func:`validate_topology`; ``binds`` is [(address, port)].
    """
    tier = settings["tier"]
    groups = tier_groups(topology, tier, site)
    if not binds:
        raise TopologyError([f"no listen address for the {tier} tier"])
    cookie = settings["cookie"]
    pick = pick_backend(tier)
    check = settings["check"]
    # The site tier's members answer the app path; the primary tier checks the site LBs'
    # monitor URI, which fails when that site LB has no usable farm.
    check_path = settings["monitor_uri"] if tier == "primary" else check["path"]
    front = f"lb_{tier}" if tier == "primary" else f"lb_site_{site}"
    lines = [
        "# Generated by salt (haproxy_tier) from webfarm:topology - local edits are overwritten.",
        f"# tier: {tier}" + (f", site: {site}" if site else ""),
    ]
    lines += _global_section(settings)
    lines += [f"frontend {front}"]
    lines += [f"    bind {_addr(a, p)}" for a, p in binds]
    lines += [
        f"    monitor-uri {settings['monitor_uri']}",
        f"    monitor fail if {{ nbsrv({pick}) lt 1 }}",
    ]
    for group in groups:
        backend = backend_name(tier, group)
        lines.append(
            f"    use_backend {backend} if {{ req.cook({cookie}) -m str {group} }}"
            f" {{ nbsrv({backend}) gt 0 }}"
        )
    lines += [f"    default_backend {pick}", ""]
    insert = "insert indirect nocache" + (" postonly" if settings.get("postonly") else "")
    lines += [
        f"backend {pick}",
        "    balance roundrobin",
        f"    cookie {cookie} {insert}",
    ]
    for group, servers in groups.items():
        backend = backend_name(tier, group)
        for name, entry in servers:
            lines.append(
                f"    server {name} {_addr(entry['address'], entry['port'])} cookie {group}"
                f" weight {entry['weight']} track {backend}/{name}"
            )
    lines.append("")
    for group, servers in groups.items():
        lines += [
            f"backend {backend_name(tier, group)}",
            "    balance roundrobin",
            "    option httpchk",
            f"    http-check send meth GET uri {check_path}",
            "    http-check expect status 200",
        ]
        for name, entry in servers:
            lines.append(
                f"    server {name} {_addr(entry['address'], entry['port'])} check"
                f" weight {entry['weight']}"
            )
        lines.append("")
    return "\n".join(lines)


def diff(current, wanted, path="haproxy.cfg"):
    """Unified diff between two config texts ('' when equal)."""
    return "".join(
        difflib.unified_diff(
            (current or "").splitlines(True),
            (wanted or "").splitlines(True),
            fromfile=f"{path} (running)",
            tofile=f"{path} (wanted)",
        )
    )


# --------------------------------------------------------------------------- runtime API


def parse_show_stat(text):
    """Rows of ``show stat`` (CSV with a ``# pxname,...`` header) as dicts."""
    text = text.lstrip()
    if not text.startswith("# "):
        raise ValueError(f"unexpected 'show stat' output: {text[:80]!r}")
    reader = csv.DictReader(io.StringIO(text[2:]))
    return [{k: v for k, v in row.items() if k} for row in reader if row.get("pxname") is not None]


def parse_servers_state(text):
    """Rows of ``show servers state`` (version line, ``# be_id ...`` header) as dicts."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or lines[0].strip() != "1":
        raise ValueError(f"unexpected 'show servers state' output: {text[:80]!r}")
    header = None
    rows = []
    for line in lines[1:]:
        if line.startswith("#"):
            header = line[1:].split()
            continue
        if header is None:
            raise ValueError("'show servers state' output without a header line")
        rows.append(dict(zip(header, line.split(), strict=False)))
    return rows


def admin_state(bits):
    """``maint``, ``drain`` or ``ready`` from a ``srv_admin_state`` value."""
    bits = int(bits)
    if bits & ADMF_MAINT:
        return "maint"
    if bits & ADMF_DRAIN:
        return "drain"
    return "ready"


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def group_servers(stat_rows, state_rows):
    """Combine ``show stat`` and ``show servers state`` into ``{group: {server: info}}``.

    A server appears in its group backend and in the pick backend; ``sessions`` is the sum
    of both, state and weights come from the group backend, ``pick_admin`` is its admin
    state in the pick backend (``maint`` while drained: no new client gets its group).
    """
    state = {(r["be_name"], r["srv_name"]): r for r in state_rows}
    picks = {}
    groups = {}
    for row in stat_rows:
        pxname, svname = row["pxname"], row["svname"]
        if svname in ("FRONTEND", "BACKEND"):
            continue
        if pxname.startswith("pick_"):
            picks[svname] = row
            continue
        kind, _, group = pxname.partition("_")
        if kind not in ("farm", "site") or not group:
            continue
        srv_state = state.get((pxname, svname), {})
        groups.setdefault(group, {})[svname] = {
            "backend": pxname,
            "address": srv_state.get("srv_addr") or row.get("addr", ""),
            "port": _int(srv_state.get("srv_port")) or None,
            "status": row.get("status", ""),
            "admin": admin_state(srv_state.get("srv_admin_state", 0)),
            "weight": _int(row.get("weight")),
            "initial_weight": _int(srv_state.get("srv_iweight")),
            "sessions": _int(row.get("scur")),
            "total": _int(row.get("stot")),
            "check": row.get("check_status", ""),
        }
    pick_states = {r["srv_name"]: r for r in state_rows if r["be_name"].startswith("pick_")}
    for servers in groups.values():
        for name, info in servers.items():
            if name in pick_states:
                info["pick_admin"] = admin_state(pick_states[name].get("srv_admin_state", 0))
            pick = picks.get(name)
            if pick:
                info["sessions"] += _int(pick.get("scur"))
                info["total"] += _int(pick.get("stot"))
    return dict(sorted(groups.items()))


def frontend_site(stat_rows):
    """The site a site-tier HAProxy serves (from its ``lb_site_<site>`` frontend), else None."""
    for row in stat_rows:
        if row.get("svname") == "FRONTEND" and row["pxname"].startswith("lb_site_"):
            return row["pxname"][len("lb_site_") :]
    return None


def parse_show_info(text):
    """``show info`` ``Key: value`` lines as a dict."""
    info = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info
