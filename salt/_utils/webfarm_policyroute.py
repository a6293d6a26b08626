"""Source-based policy routing: validation, desired state, diff, ordered plan, rollback.

Plain Python (no Salt, no netlink): the execution module reads the kernel into :class:`Route`
and :class:`Rule` values, asks :func:`plan` what to change and hands :func:`execute` a function
that sends a batch of operations to the kernel.

Ownership (what webfarm may change; everything else is never touched):

- routes whose protocol is :data:`PROTO` (77, named ``webfarm`` in ``rt_protos.d``);
- rules whose protocol is :data:`PROTO` *and* whose priority is inside
  :data:`PRIORITY_MIN`..:data:`PRIORITY_MAX` (pillar priorities must be inside that range).
"""

import ipaddress
import re
from dataclasses import dataclass, field

import webfarm_values

PROTO = 77
PROTO_NAME = "webfarm"
PRIORITY_MIN = 1000
PRIORITY_MAX = 9999
DEFAULT_PRIORITY = 1000
TABLE_MAX = 2**32 - 1
IPV6_DEFAULT_METRIC = 1024
MAIN = 254
RESERVED_TABLES = {0: "unspec", 253: "default", 254: "main", 255: "local"}
RESERVED_NAMES = {"unspec", "default", "main", "local", "all"}
AF_INET = 2
AF_INET6 = 10
FILE_NAME = "webfarm.conf"
SETTINGS = ("netns", "iproute2_dir", "persist_dir", "systemd_dir", "networkd", "networkd_conf_dir")
TABLE_KEYS = {"id", "gateway", "dev", "sources", "priority", "routes", "metric"}
DEFAULT_KEYS = {"gateway", "dev", "metric"}
ROUTE_KEYS = {"dst", "gateway", "dev", "metric"}

# pyroute2 0.7.0 and 0.7.1 add a rule given ``table=`` with a bogus action ("lookup 1 none"
# in ``ip rule``; pyroute2 issue 964, fixed in 0.7.2).
MIN_PYROUTE2 = (0, 7, 2)


def pyroute2_supported(version):
    """True when pyroute2 ``version`` (a string such as "0.9.7" or "0.7.2.post1") is at
    least :data:`MIN_PYROUTE2`; False for a version string that does not parse."""
    parts = []
    for piece in str(version).split(".")[:3]:
        digits = re.match(r"\d+", piece)
        if not digits:
            return False
        parts.append(int(digits.group(0)))
    return tuple(parts + [0] * (3 - len(parts))) >= MIN_PYROUTE2


_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")

# Fault-injection point: when set, execute() calls it with each batch before sending it; an
# exception it raises is handled like a kernel error on that batch (tests use it).
before_batch_hook = None


class PolicyRouteError(ValueError):
    """The configuration is invalid or does not fit the system; nothing was changed."""


def _family(version):
    return AF_INET if version == 4 else AF_INET6


@dataclass(frozen=True, order=True)
class Route:
    family: int
    table: int
    dst: str
    metric: int
    gateway: str | None
    dev: str

    @property
    def key(self):
        return (self.family, self.table, self.dst, self.metric)

    def describe(self, names=None):
        dst = "default" if self.dst.endswith("/0") else self.dst
        text = dst
        if self.gateway:
            text += f" via {self.gateway}"
        text += f" dev {self.dev} table {_table_name(self.table, names)}"
        if self.metric:
            text += f" metric {self.metric}"
        return text


@dataclass(frozen=True, order=True)
class Rule:
    family: int
    src: str
    table: int
    priority: int

    def describe(self, names=None):
        return f"priority {self.priority} from {self.src} lookup {_table_name(self.table, names)}"


@dataclass(frozen=True)
class Table:
    name: str
    id: int
    priority: int


@dataclass
class Desired:
    tables: dict = field(default_factory=dict)
    routes: list = field(default_factory=list)
    rules: list = field(default_factory=list)
    manages_default: bool = False

    @property
    def names(self):
        return {table.id: table.name for table in self.tables.values()}


def _table_name(table_id, names):
    if names and table_id in names:
        return names[table_id]
    return RESERVED_TABLES.get(table_id, str(table_id))


def _address(value, where):
    try:
        return ipaddress.ip_address(str(value).strip())
    except ValueError:
        raise PolicyRouteError(f"{where}: {value!r} is not an IP address") from None


def _is_ipv4(text):
    """A dotted quad exactly as the kernel prints it (no leading zeros): the fast path for the
    thousands of plain IPv4 sources, ~10x quicker than ipaddress."""
    parts = text.split(".")
    return len(parts) == 4 and all(
        p.isdigit() and p.isascii() and (p == "0" or p[0] != "0") and int(p) <= 255 for p in parts
    )


def _network(value, where):
    """``(family, "address/prefixlen", prefixlen)``, the address as the kernel dump prints it.

    Plain addresses (the common case, thousands of sources) skip the network parse.
    """
    text = str(value).strip()
    if text == "default":
        raise PolicyRouteError(f"{where}: give 'default' routes as a gateway, not a dst")
    if "%" in text:
        raise PolicyRouteError(f"{where}: {value!r}: a scoped address (%zone) is not routable here")
    if "/" not in text:
        if _is_ipv4(text):
            return AF_INET, f"{text}/32", 32
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            pass
        else:
            bits = 32 if address.version == 4 else 128
            return _family(address.version), f"{address}/{bits}", bits
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise PolicyRouteError(
            f"{where}: {value!r} is not an IP address or network ({exc})"
        ) from None
    address = net.network_address
    return _family(net.version), f"{address}/{net.prefixlen}", net.prefixlen


def _int(value, where, low, high):
    return webfarm_values.as_int(value, where, low, high, PolicyRouteError)


def _list(value, where):
    if value is None:
        return []
    if isinstance(value, str | int):
        return [value]
    if isinstance(value, list | tuple):
        return list(value)
    raise PolicyRouteError(f"{where} must be an address or a list of addresses, got {value!r}")


def _dev(value, where):
    if not isinstance(value, str) or not value or len(value) > 15 or "/" in value or " " in value:
        raise PolicyRouteError(f"{where}: dev must be an interface name, got {value!r}")
    return value


def _unknown_keys(mapping, allowed, where):
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise PolicyRouteError(f"{where}: unknown keys {unknown} (allowed: {sorted(allowed)})")


def _metric(family, metric):
    """The kernel stores an IPv6 route given metric 0 with metric 1024; mirror it."""
    return IPV6_DEFAULT_METRIC if family == AF_INET6 and metric == 0 else metric


def _gateway_routes(gateways, table, dev, metric, where):
    routes, seen = [], set()
    for raw in _list(gateways, f"{where}.gateway"):
        gateway = _address(raw, f"{where}.gateway")
        if gateway.version in seen:
            raise PolicyRouteError(f"{where}.gateway: two IPv{gateway.version} gateways")
        seen.add(gateway.version)
        dst = "0.0.0.0/0" if gateway.version == 4 else "::/0"
        family = _family(gateway.version)
        routes.append(Route(family, table, dst, _metric(family, metric), str(gateway), dev))
    return routes


def _extra_routes(items, table, dev, where):
    if not isinstance(items, list):
        raise PolicyRouteError(f"{where}.routes must be a list of {{dst, gateway, dev}}")
    routes = []
    for index, item in enumerate(items):
        here = f"{where}.routes[{index}]"
        if not isinstance(item, dict) or "dst" not in item:
            raise PolicyRouteError(f"{here} must be a mapping with at least 'dst'")
        _unknown_keys(item, ROUTE_KEYS, here)
        family, dst, prefixlen = _network(item["dst"], f"{here}.dst")
        if prefixlen == 0:
            raise PolicyRouteError(f"{here}.dst: give default routes with the table's gateway")
        gateway = None
        if item.get("gateway") is not None:
            gateway = _address(item["gateway"], f"{here}.gateway")
            if _family(gateway.version) != family:
                raise PolicyRouteError(f"{here}: gateway {gateway} and dst {dst} differ in family")
            gateway = str(gateway)
        route_dev = _dev(item.get("dev", dev), f"{here}")
        metric = _int(item.get("metric", 0), f"{here}.metric", 0, TABLE_MAX)
        routes.append(Route(family, table, dst, _metric(family, metric), gateway, route_dev))
    return routes


def parse(config):
    """Validate a pillar-like mapping (``default``, ``tables``) and return :class:`Desired`.

    Raises :class:`PolicyRouteError` naming the offending key; checks that need the system
    (devices, connected networks, foreign routes) are in :func:`check_system`.
    """
    if not isinstance(config, dict):
        raise PolicyRouteError(f"policyroute must be a mapping, got {type(config).__name__}")
    _unknown_keys(config, {"default", "tables", *SETTINGS}, "policyroute")
    desired = Desired()
    default = config.get("default")
    if default:
        if not isinstance(default, dict) or not default.get("gateway") or not default.get("dev"):
            raise PolicyRouteError("policyroute.default needs gateway and dev")
        _unknown_keys(default, DEFAULT_KEYS, "policyroute.default")
        dev = _dev(default["dev"], "policyroute.default")
        metric = _int(default.get("metric", 0), "policyroute.default.metric", 0, TABLE_MAX)
        desired.routes += _gateway_routes(
            default["gateway"], MAIN, dev, metric, "policyroute.default"
        )
        desired.manages_default = True
    tables = config.get("tables") or {}
    if not isinstance(tables, dict):
        raise PolicyRouteError("policyroute.tables must be a mapping of name -> table")
    ids, owner_of_source = {}, {}
    for name, spec in tables.items():
        where = f"policyroute.tables.{name}"
        if not isinstance(name, str) or not _NAME_RE.match(name) or name in RESERVED_NAMES:
            raise PolicyRouteError(
                f"{where}: table name must start with a letter, use [A-Za-z0-9_.-] and not be "
                f"one of {sorted(RESERVED_NAMES)}"
            )
        if not isinstance(spec, dict) or "id" not in spec:
            raise PolicyRouteError(f"{where} must be a mapping with at least 'id'")
        _unknown_keys(spec, TABLE_KEYS, where)
        table_id = _int(spec["id"], f"{where}.id", 1, TABLE_MAX)
        if table_id in RESERVED_TABLES:
            raise PolicyRouteError(
                f"{where}.id: table {table_id} is reserved ({RESERVED_TABLES[table_id]}); "
                f"use 1-252 or 256-{TABLE_MAX}"
            )
        if table_id in ids:
            raise PolicyRouteError(
                f"{where}.id: table id {table_id} is also used by {ids[table_id]}"
            )
        ids[table_id] = name
        priority = _int(
            spec.get("priority", DEFAULT_PRIORITY), f"{where}.priority", PRIORITY_MIN, PRIORITY_MAX
        )
        dev = _dev(spec["dev"], where) if spec.get("dev") is not None else None
        metric = _int(spec.get("metric", 0), f"{where}.metric", 0, TABLE_MAX)
        routes = []
        if spec.get("gateway") is not None:
            if dev is None:
                raise PolicyRouteError(f"{where}: a gateway needs dev")
            routes += _gateway_routes(spec["gateway"], table_id, dev, metric, where)
        routes += _extra_routes(spec.get("routes", []), table_id, dev, where)
        if not routes:
            raise PolicyRouteError(f"{where}: give a gateway (and dev) or routes")
        seen = {}
        for route in routes:
            if route.key in seen:
                raise PolicyRouteError(f"{where}: two routes to {route.dst} metric {route.metric}")
            seen[route.key] = route
        families = {route.family for route in routes}
        rules = []
        for raw in _list(spec.get("sources"), f"{where}.sources"):
            family, src, prefixlen = _network(raw, f"{where}.sources")
            if prefixlen == 0:
                raise PolicyRouteError(f"{where}.sources: {src} matches everything; use default")
            if family not in families:
                version = 4 if family == AF_INET else 6
                raise PolicyRouteError(
                    f"{where}.sources: {src} is IPv{version} but the table has no IPv{version} route"
                )
            if src in owner_of_source:
                raise PolicyRouteError(
                    f"{where}.sources: {src} is also a source of table "
                    f"{owner_of_source[src]}; a source belongs to one table"
                )
            owner_of_source[src] = name
            rules.append(Rule(family, src, table_id, priority))
        desired.tables[name] = Table(name, table_id, priority)
        desired.routes += routes
        desired.rules += rules
    return desired


def check_system(desired, links, foreign_routes):
    """Check ``desired`` against the host; raise :class:`PolicyRouteError` on a mismatch.

    ``links`` maps interface name -> list of ``ipaddress.ip_interface`` on it;
    ``foreign_routes`` are the routes not owned by webfarm (same :class:`Route` shape).
    """
    foreign = {route.key: route for route in foreign_routes}
    for route in desired.routes:
        where = route.describe(desired.names)
        if route.dev not in links:
            raise PolicyRouteError(
                f"{where}: unknown device {route.dev!r} (present: {', '.join(sorted(links))})"
            )
        if route.gateway:
            gateway = ipaddress.ip_address(route.gateway)
            connected = gateway.version == 6 and gateway.is_link_local
            connected = connected or any(
                gateway in iface.network and gateway != iface.ip for iface in links[route.dev]
            )
            if not connected:
                nets = ", ".join(str(i.network) for i in links[route.dev]) or "none"
                raise PolicyRouteError(
                    f"{where}: gateway {gateway} is not on a network connected to {route.dev} "
                    f"(connected: {nets})"
                )
        clash = foreign.get(route.key)
        if clash is not None:
            raise PolicyRouteError(
                f"{where}: the table already has a route to {route.dst} metric {route.metric} "
                f"not owned by webfarm ({clash.describe()}); remove it or give another metric"
            )


def owned_rule(protocol, priority):
    return protocol == PROTO and PRIORITY_MIN <= priority <= PRIORITY_MAX


@dataclass(frozen=True)
class Op:
    """One netlink change: ``action`` is add, replace or delete; ``item`` a Route or Rule."""

    action: str
    item: object
    old: object = None

    @property
    def phase(self):
        kind = "route" if isinstance(self.item, Route) else "rule"
        return {
            ("route", "add"): 0,
            ("route", "replace"): 0,
            ("rule", "add"): 1,
            ("rule", "delete"): 2,
            ("route", "delete"): 3,
        }[(kind, self.action)]

    def inverse(self):
        if self.action == "add":
            return Op("delete", self.item)
        if self.action == "delete":
            return Op("add", self.item)
        return Op("replace", self.old, self.item)

    def describe(self, names=None):
        text = f"{self.action} {'route' if isinstance(self.item, Route) else 'rule'} "
        return text + self.item.describe(names)


@dataclass
class Plan:
    ops: list
    names: dict

    def __bool__(self):
        return bool(self.ops)

    def changes(self):
        """The plan as a Salt ``changes`` dict; empty when nothing would change."""
        out = {}
        routes = {
            "added": [o.item.describe(self.names) for o in self.ops if _is(o, Route, "add")],
            "removed": [o.item.describe(self.names) for o in self.ops if _is(o, Route, "delete")],
            "changed": [
                {"old": o.old.describe(self.names), "new": o.item.describe(self.names)}
                for o in self.ops
                if _is(o, Route, "replace")
            ],
        }
        rules = {
            "added": [o.item.describe(self.names) for o in self.ops if _is(o, Rule, "add")],
            "removed": [o.item.describe(self.names) for o in self.ops if _is(o, Rule, "delete")],
        }
        for key, section in (("routes", routes), ("rules", rules)):
            section = {k: v for k, v in section.items() if v}
            if section:
                out[key] = section
        return out


def _is(op, kind, action):
    return isinstance(op.item, kind) and op.action == action


def plan(desired, current_routes, current_rules, scope=None, names=None):
    """Order the operations turning the owned ``current_*`` into ``desired``.

    ``scope`` limits the plan to a set of table ids (None: every webfarm-owned route and rule,
    so what is no longer in ``desired`` is removed). Order: routes added or replaced, then
    rules added, then rules deleted, then routes deleted -- a rule never points at a table
    that is not ready, and a moved source is covered by its new rule before the old one goes.
    """

    def in_scope(table):
        return scope is None or table in scope

    wanted_routes = {r.key: r for r in desired.routes if in_scope(r.table)}
    have_routes = {r.key: r for r in current_routes if in_scope(r.table)}
    wanted_rules = {r for r in desired.rules if in_scope(r.table)}
    have_rules = {r for r in current_rules if in_scope(r.table)}
    ops = []
    for key in sorted(wanted_routes):
        new, old = wanted_routes[key], have_routes.get(key)
        if old is None:
            ops.append(Op("add", new))
        elif old != new:
            ops.append(Op("replace", new, old))
    ops += [Op("add", rule) for rule in sorted(wanted_rules - have_rules)]
    ops += [Op("delete", rule) for rule in sorted(have_rules - wanted_rules)]
    ops += [Op("delete", have_routes[key]) for key in sorted(set(have_routes) - set(wanted_routes))]
    all_names = dict(names or {})
    all_names.update(desired.names)
    return Plan(ops, all_names)


@dataclass
class Outcome:
    applied: list
    failed: list = field(default_factory=list)
    rolled_back: list = field(default_factory=list)
    rollback_errors: list = field(default_factory=list)

    @property
    def ok(self):
        return not self.failed


def _batches(ops, size):
    batch = []
    for op in ops:
        if batch and (len(batch) >= size or op.phase != batch[-1].phase):
            yield batch
            batch = []
        batch.append(op)
    if batch:
        yield batch


def execute(ops, send, batch_size=512):
    """Apply ``ops`` in order; on the first failing batch undo what was applied, newest first.

    ``send(batch)`` applies a list of :class:`Op` and returns one error (``None`` when it
    worked) per op; a batch holds ops of one phase only, so the next phase starts only when
    the previous one fully succeeded. Returns an :class:`Outcome`.
    """
    applied = []
    for batch in _batches(ops, batch_size):
        try:
            if before_batch_hook is not None:
                before_batch_hook(batch)
            errors = send(batch)
        except Exception as exc:  # noqa: BLE001 - any failure mid-way must roll back
            errors = [f"{type(exc).__name__}: {exc}"] * len(batch)
        failed = [(op, err) for op, err in zip(batch, errors, strict=True) if err is not None]
        applied += [op for op, err in zip(batch, errors, strict=True) if err is None]
        if failed:
            undo = [op.inverse() for op in reversed(applied)]
            try:
                undo_errors = send(undo) if undo else []
            except Exception as exc:  # noqa: BLE001 - reported, the caller says what to do
                undo_errors = [f"{type(exc).__name__}: {exc}"] * len(undo)
            rollback_errors = [
                (op, err) for op, err in zip(undo, undo_errors, strict=True) if err is not None
            ]
            return Outcome(applied, failed, undo, rollback_errors)
    return Outcome(applied)


def render_rt_tables(names):
    """``rt_tables.d/webfarm.conf`` from ``{id: name}``: one ``<id>\\t<name>`` line per table."""
    lines = ["# Managed by Salt (webfarm policyroute); edits are overwritten."]
    lines += [f"{table_id}\t{names[table_id]}" for table_id in sorted(names)]
    return "\n".join(lines) + "\n"


def render_rt_protos():
    """``rt_protos.d/webfarm.conf``: names protocol 77 so ``ip route`` shows ``proto webfarm``."""
    return f"# Managed by Salt (webfarm policyroute).\n{PROTO}\t{PROTO_NAME}\n"


def parse_rt_tables(text):
    """Read ``<id> <name>`` lines (comments and junk ignored) into ``{id: name}``."""
    names = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[0].isdigit():
            names[int(fields[0])] = fields[1]
    return names


def resolve_table(table, names):
    """A table given as id or name -> id (``names`` maps id -> name)."""
    text = str(table).strip()
    if text.isdigit():
        return _int(text, "table", 1, TABLE_MAX)
    for table_id, name in names.items():
        if name == text:
            return table_id
    raise PolicyRouteError(f"unknown table {table!r} (known: {sorted(names.values())})")
