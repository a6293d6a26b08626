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

import webfarm_topology

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

# The defaults are salt/states/haproxy/defaults.yaml (webfarm.defaults haproxy on a minion),
# shaped as pillar haproxy: the tier settings at the top, ``vrrp`` and ``sysctl`` sections.
# The functions that need them take them as ``defaults``.
SECTIONS = ("vrrp", "sysctl")


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
    seen_vrids = {}

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

    def lb_list(raw_lbs, where_list):
        """The LBs of ``raw_lbs`` that validate, each remembered; the others in errors."""
        lbs = []
        for number, raw in enumerate(raw_lbs, 1):
            where = f"{where_list}[{number}]"
            entry = _endpoint(raw, where, errors)
            if entry:
                remember(entry, where)
                lbs.append(entry)
        return lbs

    raw_primary = topology.get("primary_lb") or []
    if not isinstance(raw_primary, list):
        errors.append("primary_lb: must be a list of {id, address, port}")
        raw_primary = []
    primary = lb_list(raw_primary, "primary_lb")

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
        raw_lbs = raw_site.get("lbs") or []
        if not isinstance(raw_lbs, list) or not raw_lbs:
            errors.append(f"{where_site}: site has no lbs")
            raw_lbs = []
        lbs = lb_list(raw_lbs, f"{where_site}.lbs")
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
                if entry and entry["id"] is not None and not isinstance(entry["id"], str):
                    errors.append(f"{where}: bad id {entry['id']!r} (must be a minion id string)")
                    continue
                if entry:
                    remember(entry, where)
                    members[index] = entry
            farms[farm] = {
                "members": dict(sorted(members.items())),
                "memcached": (raw_farm or {}).get("memcached"),
            }
        sites[site] = {"lbs": lbs, "farms": farms}
        if raw_site.get("vip") is not None:
            vip = _vip(raw_site["vip"], f"{where_site}.vip", lbs, errors, seen_vrids)
            if vip:
                sites[site]["vip"] = vip
    primary_vip = None
    if topology.get("primary_vip") is not None:
        primary_vip = _vip(topology["primary_vip"], "primary_vip", primary, errors, seen_vrids)
    if errors:
        raise TopologyError(errors)
    clean = {key: value for key, value in topology.items() if key not in ("sites", "primary_lb")}
    clean["primary_lb"] = primary
    clean["sites"] = sites
    if primary_vip:
        clean["primary_vip"] = primary_vip
    return clean


def _vip(raw, where, lbs, errors, seen_vrids):
    """Validate a tier's virtual IP ``{address, port, vrid, prefix, interface}``.

    ``port`` defaults to the tier's first LB's port, ``prefix`` to 24 (64 for IPv6); ``vrid``
    (the VRRP virtual router id, 1-255) must be unique in the topology, and a tier with a VIP
    needs at least one LB that is not using the VIP's address as its own.
    """
    if not isinstance(raw, dict):
        errors.append(f"{where}: expected a mapping with address, port, vrid, got {raw!r}")
        return None
    default_port = lbs[0]["port"] if lbs else 80
    entry = _endpoint({"port": default_port, **raw, "id": None}, where, errors, need_id=False)
    if entry is None:
        return None
    ok = True
    vrid = raw.get("vrid")
    if isinstance(vrid, bool) or not isinstance(vrid, int) or not 1 <= vrid <= 255:
        errors.append(f"{where}: vrid {vrid!r} must be an integer 1-255 (the VRRP router id)")
        ok = False
    elif vrid in seen_vrids:
        errors.append(f"{where}: vrid {vrid} is already used by {seen_vrids[vrid]}")
        ok = False
    else:
        seen_vrids[vrid] = where
    family_max = 32 if ":" not in entry["address"] else 128
    prefix = raw.get("prefix", 24 if family_max == 32 else 64)
    if isinstance(prefix, bool) or not isinstance(prefix, int) or not 1 <= prefix <= family_max:
        errors.append(f"{where}: prefix {prefix!r} must be an integer 1-{family_max}")
        ok = False
    if any(lb["address"] == entry["address"] for lb in lbs):
        errors.append(f"{where}: the VIP {entry['address']} is also an LB's own address")
        ok = False
    interface = raw.get("interface")
    if interface is not None and (
        not isinstance(interface, str) or not re.match(r"^[A-Za-z0-9_.@-]{1,15}$", interface)
    ):
        errors.append(f"{where}: bad interface {interface!r}")
        ok = False
    if not ok:
        return None
    return {
        "address": entry["address"],
        "port": entry["port"],
        "vrid": vrid,
        "prefix": prefix,
        "interface": interface,
    }


def tier_vip(topology, tier, site=None):
    """The validated VIP of ``tier`` (``site`` on the site tier), or None."""
    if tier == "primary":
        return topology.get("primary_vip")
    return (topology["sites"].get(site) or {}).get("vip")


def tier_lbs(topology, tier, site=None):
    """The LB entries of ``tier`` (``site`` on the site tier)."""
    if tier == "primary":
        return topology["primary_lb"]
    return topology["sites"][site]["lbs"]


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


def tier_settings(pillar_haproxy, tier, defaults):
    """Merge pillar ``haproxy`` over ``defaults`` (salt/states/haproxy/defaults.yaml, less its
    ``vrrp`` and ``sysctl`` sections); return the flat settings of ``tier``."""
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {', '.join(TIERS)}, got {tier!r}")
    if pillar_haproxy is not None and not isinstance(pillar_haproxy, dict):
        raise ValueError("pillar haproxy must be a mapping")
    base = {k: v for k, v in defaults.items() if k not in SECTIONS}
    merged = _merge(base, pillar_haproxy or {})
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
    """``{group: [(server_name, entry), ...]}`` of the tier (sites or one site's farms).

    On the primary tier a site with a ``vip`` is one server ``<site>_vip`` (its LBs share
    that address by VRRP, so the primary LB must not balance over them one by one); a site
    without one is its LBs ``<site>_lb<n>``.
    """
    if tier == "primary":
        groups = {}
        for kind, name, lbs, vip in webfarm_topology.tiers(topology):
            if kind != "site":
                continue
            if vip:
                entry = {"address": vip["address"], "port": vip["port"], "weight": 100, "vip": True}
                groups[name] = [(f"{name}_vip", entry)]
            else:
                groups[name] = [(server_name(tier, name, n), lb) for n, lb in enumerate(lbs, 1)]
        return groups
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
    for key, value in sorted((settings.get("tune") or {}).items()):
        if not re.match(r"^[a-z0-9_.-]+$", str(key)) or not re.match(
            r"^[A-Za-z0-9_.:-]+$", str(value)
        ):
            raise TopologyError([f"bad haproxy:tune entry {key!r}: {value!r}"])
        lines.append(f"    tune.{key} {value}")
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
        f"    maxconn {int(settings.get('frontend_maxconn') or settings['maxconn'])}",
    ]
    if settings.get("backlog"):
        lines.append(f"    backlog {int(settings['backlog'])}")
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

    ``topology`` must come from :func:`validate_topology`; ``binds`` is [(address, port)]
    or [(address, port, transparent)].
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
    # A third item "transparent" binds an address this host may not hold (the VIP on the
    # VRRP backup: the socket is ready the moment keepalived moves the address here).
    lines += [
        f"    bind {_addr(b[0], b[1])}" + (" transparent" if len(b) > 2 and b[2] else "")
        for b in binds
    ]
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
            # A site VIP is down only while its site tier fails over (a few seconds of VRRP):
            # marking it DOWN sooner would send the site's sticky clients to another site.
            fall = f" fall {int(check['vip_fall'])}" if entry.get("vip") else ""
            lines.append(
                f"    server {name} {_addr(entry['address'], entry['port'])} check"
                f" weight {entry['weight']}{fall}"
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


# --------------------------------------------------------------------------- VRRP (keepalived)


MASK = "********"


def vrrp_settings(pillar_haproxy, defaults):
    """Pillar ``haproxy:vrrp`` over ``defaults["vrrp"]`` (salt/states/haproxy/defaults.yaml;
    ValueError on a bad shape)."""
    if pillar_haproxy is not None and not isinstance(pillar_haproxy, dict):
        raise ValueError("pillar haproxy must be a mapping")
    raw = (pillar_haproxy or {}).get("vrrp") or {}
    if not isinstance(raw, dict):
        raise ValueError("pillar haproxy:vrrp must be a mapping")
    return _merge(defaults["vrrp"], raw)


def vrrp_instances(topology, minion_id):
    """``[(name, tier, site, lbs, vip)]``: the VRRP instances ``minion_id`` takes part in
    (each tier with a VIP whose LB list names it)."""
    return [
        ("primary" if tier == "primary" else f"site_{site}", tier, site, lbs, vip)
        for tier, site, lbs, vip in webfarm_topology.tiers(topology)
        if vip and any(lb["id"] == minion_id for lb in lbs)
    ]


def _priority(vrrp, lbs, minion_id):
    priorities = vrrp.get("priorities") or {}
    if not isinstance(priorities, dict):
        raise TopologyError(["haproxy:vrrp:priorities must map minion ids to 1-254"])
    if minion_id in priorities:
        value = priorities[minion_id]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 254:
            raise TopologyError([f"haproxy:vrrp:priorities:{minion_id}: {value!r} is not 1-254"])
        return value
    index = next(n for n, lb in enumerate(lbs) if lb["id"] == minion_id)
    return max(1, 150 - 10 * index)


def _check_secret(secret):
    if not isinstance(secret, str) or not secret:
        raise TopologyError(["pillar haproxy:vrrp:auth_pass (the VRRP password) is not set"])
    if len(secret) > 8 or not re.match(r"^[!-~]+$", secret):
        raise TopologyError(
            [
                "haproxy:vrrp:auth_pass must be 1-8 printable characters without spaces "
                "(VRRP PASS authentication uses only 8)"
            ]  # fmt: skip
        )


def _check_version(vrrp):
    """``(version, advert_int text)`` of ``vrrp``, checked (TopologyError naming the keys)."""
    version = vrrp.get("version")
    advert = vrrp.get("advert_int")
    if version not in (2, 3) or isinstance(version, bool):
        raise TopologyError([f"haproxy:vrrp:version {version!r} must be 2 or 3"])
    number = isinstance(advert, (int, float)) and not isinstance(advert, bool)
    if version == 2:
        _check_secret(vrrp.get("auth_pass"))
        if not number or advert != int(advert) or not 1 <= advert <= 255:
            raise TopologyError(
                [f"haproxy:vrrp:advert_int {advert!r} must be 1-255 whole seconds with version 2"]
            )
        return 2, str(int(advert))
    if vrrp.get("auth_pass") is not None:
        raise TopologyError(
            [
                "haproxy:vrrp:auth_pass is set but haproxy:vrrp:version is 3, which has no "
                "authentication: remove haproxy:vrrp:auth_pass (peers are restricted to the "
                "topology's LBs) or set haproxy:vrrp:version: 2"
            ]  # fmt: skip
        )
    if not number or abs(round(advert * 100) - advert * 100) > 1e-6 or not 0.01 <= advert <= 40.95:
        raise TopologyError(
            [f"haproxy:vrrp:advert_int {advert!r} must be 0.01-40.95 seconds with version 3"]
        )
    return 3, f"{advert:g}"


def render_vrrp(topology, minion_id, vrrp, monitor_uri="/haproxy-health"):
    """The keepalived.conf of ``minion_id``: one VRRP instance per tier it is an LB of.

    Every LB of a tier gets the same instance (router id, VIP, version, adverts, the
    password with version 2, peers by unicast from the topology with ``check_unicast_src``,
    so adverts from hosts the master does not name are dropped); only the priority, the
    unicast source and the checked address differ.
    """
    instances = vrrp_instances(topology, minion_id)
    if not instances:
        raise TopologyError(
            [
                f"{minion_id} is no LB of a tier with a vip in webfarm:topology (nothing to fail over)"
            ]
        )
    version, advert = _check_version(vrrp)
    check = vrrp["check"]
    for key in ("interval", "timeout", "fall", "rise"):
        value = check.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 60:
            raise TopologyError([f"haproxy:vrrp:check:{key} {value!r} must be 1-60"])
    if not re.match(r"^/[A-Za-z0-9_./-]*$", monitor_uri or ""):
        raise TopologyError([f"bad monitor_uri {monitor_uri!r}"])
    lines = [
        "# Generated by salt (haproxy_tier) from webfarm:topology - local edits are overwritten.",
        "global_defs {",
        f"    router_id {minion_id}",
        "    script_user root",
        "    enable_script_security",
        "}",
        "",
    ]
    for name, _tier, _site, lbs, _vip in instances:
        me = next(lb for lb in lbs if lb["id"] == minion_id)
        url = f"http://{_addr(me['address'], me['port'])}{monitor_uri}"
        lines += [
            f"vrrp_script chk_haproxy_{name} {{",
            f'    script "{vrrp["curl"]} -s -o /dev/null -m {check["timeout"]} {url}"',
            f"    interval {check['interval']}",
            f"    timeout {check['timeout'] + 1}",
            f"    fall {check['fall']}",
            f"    rise {check['rise']}",
            "}",
            "",
        ]
    for name, _tier, _site, lbs, vip in instances:
        me = next(lb for lb in lbs if lb["id"] == minion_id)
        interface = vip.get("interface") or vrrp["interface"]
        if not re.match(r"^[A-Za-z0-9_.@-]{1,15}$", str(interface)):
            raise TopologyError([f"bad haproxy:vrrp:interface {interface!r}"])
        peers = [lb["address"] for lb in lbs if lb["id"] != minion_id]
        lines += [
            f"vrrp_instance {name} {{",
            "    state BACKUP",
            f"    interface {interface}",
            f"    virtual_router_id {vip['vrid']}",
            f"    priority {_priority(vrrp, lbs, minion_id)}",
            f"    version {version}",
            f"    advert_int {advert}",
        ]
        if not vrrp.get("preempt"):
            lines.append("    nopreempt")
        if version == 2:
            lines += [
                "    authentication {",
                "        auth_type PASS",
                f"        auth_pass {vrrp['auth_pass']}",
                "    }",
            ]
        lines += [
            # Adverts only to, and accepted only from, the tier's LBs in the topology.
            "    check_unicast_src",
            f"    unicast_src_ip {me['address']}",
            "    unicast_peer {",
            *[f"        {peer}" for peer in peers],
            "    }",
            "    virtual_ipaddress {",
            f"        {vip['address']}/{vip['prefix']} dev {interface}",
            "    }",
            "    track_script {",
            f"        chk_haproxy_{name}",
            "    }",
            "}",
            "",
        ]
    return "\n".join(lines)


def mask_secret(text):
    """``text`` with every ``auth_pass`` value replaced (for diffs, comments and logs)."""
    return re.sub(r"(?m)^([-+ ]?\s*auth_pass\s+)\S+", r"\g<1>" + MASK, text or "")


def parse_vrrp_state(text):
    """``{instance: state}`` from keepalived's data dump (``/tmp/keepalived.data``)."""
    states = {}
    current = None
    for line in (text or "").splitlines():
        match = re.match(r"^\s*VRRP Instance = (\S+)", line)
        if match:
            current = match.group(1)
            continue
        match = re.match(r"^\s*State = (\S+)", line)
        if match and current and current not in states:
            states[current] = match.group(1)
    return states


# --------------------------------------------------------------------------- sysctl

# Connection-rate tuning of an LB host (haproxy.sysctl): the ``sysctl`` section of
# salt/states/haproxy/defaults.yaml, every value with why; pillar ``haproxy:sysctl``
# overrides or adds keys (a null value leaves that key alone).

# Keys that may be missing on a host (module not loaded); missing ones are skipped, not errors.
SYSCTL_OPTIONAL = ("net.netfilter.nf_conntrack_max",)

# Capacity ceilings: a host already above the value keeps its own (never lowered).
SYSCTL_AT_LEAST = (
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.core.netdev_max_backlog",
    "fs.file-max",
    "fs.nr_open",
    "net.netfilter.nf_conntrack_max",
)


def sysctl_satisfied(key, current, wanted):
    """Whether ``current`` (a string from the kernel) is as ``wanted`` for ``key``."""
    current, wanted = sysctl_normal(current), sysctl_normal(wanted)
    if key in SYSCTL_AT_LEAST and current.isdigit() and wanted.isdigit():
        return int(current) >= int(wanted)
    return current == wanted


_SYSCTL_KEY = re.compile(r"^[a-z0-9_]+(\.[A-Za-z0-9_-]+)+$")


def sysctl_wanted(pillar_haproxy, defaults):
    """``{key: value}`` the LB host wants: ``defaults["sysctl"]`` (salt/states/haproxy/
    defaults.yaml) + pillar ``haproxy:sysctl``."""
    raw = ((pillar_haproxy or {}) if isinstance(pillar_haproxy, dict) else {}).get("sysctl")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError("pillar haproxy:sysctl must map sysctl keys to values")
    wanted = dict(defaults["sysctl"])
    for key, value in raw.items():
        if not isinstance(key, str) or not _SYSCTL_KEY.match(key):
            raise ValueError(f"bad sysctl key {key!r}")
        if value is None:
            wanted.pop(key, None)
            continue
        if isinstance(value, bool) or not re.match(r"^[0-9 \t]+$", str(value)):
            raise ValueError(f"sysctl {key}: value {value!r} must be numbers")
        wanted[key] = str(value)
    return wanted


def sysctl_normal(value):
    """A sysctl value with whitespace collapsed (the kernel prints tabs between numbers)."""
    return " ".join(str(value).split())


def sysctl_file(wanted):
    """The persistent ``/etc/sysctl.d`` file for ``wanted``."""
    lines = ["# Generated by salt (haproxy.sysctl) - connection-rate tuning of an LB host."]
    lines += [f"{key} = {sysctl_normal(value)}" for key, value in sorted(wanted.items())]
    return "\n".join(lines) + "\n"
