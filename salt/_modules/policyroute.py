"""Source-based policy routing over netlink (pyroute2): per-table default routes and
``from <source> lookup <table>`` rules, without ``ip`` subprocesses.

Pillar ``policyroute``:

.. code-block:: yaml

    policyroute:
      default: {gateway: 10.12.0.254, dev: eth0}          # table main
      tables:
        uplink1:
          id: 1
          gateway: [85.14.228.254, "2001:db8:85::254"]    # one per family
          dev: eth1
          sources: [85.14.228.248, "2001:db8:85::248"]
          priority: 1000                                   # 1000-9999
          routes: [{dst: 192.0.2.0/24, gateway: 85.14.228.253}]
      iproute2_dir: /etc/iproute2      # where rt_tables.d/ and rt_protos.d/ live
      netns: null                      # a named network namespace instead of the host's

Ownership: webfarm writes routes and rules with protocol 77 (named ``webfarm`` in
``rt_protos.d/webfarm.conf``) and rules only at priorities 1000-9999. It reads, changes and
removes nothing else. Table names go to ``rt_tables.d/webfarm.conf`` so ``ip rule`` shows them.
"""

import ipaddress
import json
import logging
import os
import socket
import sys

from salt.exceptions import CommandExecutionError, SaltInvocationError

import webfarm_events
import webfarm_files
import webfarm_policyroute as pr
import webfarm_policyroute_codec as codec

try:
    from pyroute2 import IPRoute
    from pyroute2 import netns as pyroute2_netns
    from pyroute2.netlink.exceptions import NetlinkError

    HAS_PYROUTE2 = True
except ImportError:
    HAS_PYROUTE2 = False

log = logging.getLogger(__name__)

__virtualname__ = "policyroute"

DEFAULT_IPROUTE2_DIR = "/etc/iproute2"
NETNS_DIR = "/run/netns"
BATCH_SIZE = 512
ACK_TIMEOUT = 10
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11


def __virtual__():
    if not sys.platform.startswith("linux"):
        return (False, "policyroute needs Linux (netlink policy routing)")
    if not HAS_PYROUTE2:
        return (False, "policyroute needs pyroute2: pip install pyroute2 (or python3-pyroute2)")
    version = _pyroute2_version()
    if not pr.pyroute2_supported(version):
        wanted = ".".join(map(str, pr.MIN_PYROUTE2))
        return (
            False,
            f"policyroute needs pyroute2 >= {wanted} (found {version}: older releases add "
            f"rules given table= wrongly): pip install 'pyroute2>={wanted}'",
        )
    return __virtualname__


def _pyroute2_version():
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pyroute2")
    except PackageNotFoundError:
        import pyroute2

        return getattr(pyroute2, "__version__", "unknown")


class _Netlink:
    """Reads through pyroute2's IPRoute; writes batches of pre-encoded messages on one socket."""

    def __init__(self, netns):
        self.netns = netns
        self._sock = None
        self._seq = 0
        try:
            self.ipr = IPRoute(netns=netns, flags=0) if netns else IPRoute()
        except OSError as exc:
            raise CommandExecutionError(
                f"cannot open netlink{_where(netns)}: {exc}; check the namespace exists"
            ) from exc

    def close(self):
        self.ipr.close()
        if self._sock is not None:
            self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, _tb):
        self.close()
        if exc_type is not None and issubclass(exc_type, OSError | NetlinkError):
            raise CommandExecutionError(
                f"netlink failed{_where(self.netns)}: {exc}; check the namespace and the "
                "interfaces, then try again"
            ) from exc

    def links(self):
        """``{name: index}`` and ``{name: [ip_interface, ...]}``."""
        index = {link.get("ifname"): link["index"] for link in self.ipr.get_links()}
        by_index = {i: name for name, i in index.items()}
        addrs = {name: [] for name in index}
        for msg in self.ipr.get_addr():
            name = by_index.get(msg["index"])
            address = msg.get("IFA_ADDRESS")
            if name is not None and address:
                addrs[name].append(ipaddress.ip_interface(f"{address}/{msg['prefixlen']}"))
        return index, addrs

    def routes(self, by_index):
        """(owned, foreign) unicast routes of every table, both families."""
        owned, foreign = [], []
        for family in (pr.AF_INET, pr.AF_INET6):
            for msg in self.ipr.get_routes(family=family):
                if msg["type"] != codec.RTN_UNICAST or msg.get("RTA_MULTIPATH"):
                    continue
                zero = "0.0.0.0" if family == pr.AF_INET else "::"
                route = pr.Route(
                    family=family,
                    table=msg.get("RTA_TABLE") or msg["table"],
                    dst=f"{msg.get('RTA_DST') or zero}/{msg['dst_len']}",
                    metric=msg.get("RTA_PRIORITY") or 0,
                    gateway=msg.get("RTA_GATEWAY"),
                    dev=by_index.get(msg.get("RTA_OIF"), str(msg.get("RTA_OIF"))),
                )
                (owned if msg["proto"] == pr.PROTO else foreign).append(route)
        return owned, foreign

    def rules(self):
        """Owned rules (protocol 77, priority in the webfarm range).

        Read straight from the dump: pyroute2 decodes every attribute of every rule in Python
        (~70 ms for 1000 rules), while only four fields are needed here.
        """
        owned = []
        for family in (pr.AF_INET, pr.AF_INET6):
            for data, offset, length in self._dump(codec.RTM_GETRULE, family):
                owned += codec.owned_rule(data, offset, length)
        return owned

    def _dump(self, kind, family):
        """Yield ``(buffer, offset, length)`` of each message a dump request returns."""
        sock = self._socket()
        self._seq += 1
        seq = self._seq
        sock.send(codec.dump_request(kind, family, seq))
        while True:
            data = sock.recv(1 << 16)
            for offset, length, msg_type, _flags, msg_seq in codec.messages(data):
                if msg_seq != seq:
                    continue
                if msg_type == codec.NLMSG_DONE:
                    return
                if msg_type == codec.NLMSG_ERROR:
                    code = codec.error_code(data, offset)
                    if code:
                        raise CommandExecutionError(
                            f"netlink dump failed{_where(self.netns)}: {os.strerror(-code)}"
                        )
                else:
                    yield data, offset, length

    def _socket(self):
        if self._sock is None:
            if self.netns:
                sock = pyroute2_netns.create_socket(
                    self.netns, socket.AF_NETLINK, socket.SOCK_RAW, 0, flags=0
                )
            else:
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
            sock.bind((0, 0))
            sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.settimeout(ACK_TIMEOUT)
            self._sock = sock
        return self._sock

    def send(self, ops, index):
        """Send ``ops`` as one datagram; return one error text (None: done) per op."""
        sock = self._socket()
        pending, chunks = {}, []
        for position, op in enumerate(ops):
            self._seq += 1
            pending[self._seq] = position
            try:
                chunks.append(codec.encode(op, index, self._seq))
            except codec.DeviceGone as exc:
                raise CommandExecutionError(
                    f"device {exc} disappeared; check the interfaces"
                ) from None
        errors = [None] * len(ops)
        sock.send(b"".join(chunks))
        while pending:
            data = sock.recv(1 << 20)
            for offset, length, kind, flags, seq in codec.messages(data):
                if kind == codec.NLMSG_ERROR and seq in pending:
                    code = codec.error_code(data, offset)
                    position = pending.pop(seq)
                    if code:
                        errors[position] = codec.error_text(-code, data, offset, length, flags)
        return errors


def _where(netns):
    return f" in network namespace {netns}" if netns else ""


def _settings(conf, netns, iproute2_dir):
    netns = netns if netns is not None else conf.get("netns")
    if netns:
        if "/" in str(netns) or not os.path.exists(os.path.join(NETNS_DIR, str(netns))):
            raise SaltInvocationError(f"network namespace {netns!r} does not exist in {NETNS_DIR}")
    iproute2_dir = iproute2_dir or conf.get("iproute2_dir") or DEFAULT_IPROUTE2_DIR
    return netns or None, str(iproute2_dir)


def _source(default, tables, config_file):
    """The pillar-like mapping: arguments, else ``config_file`` (JSON), else pillar."""
    if default is not None or tables is not None:
        return {"default": default, "tables": tables}
    if config_file:
        try:
            with open(config_file, encoding="utf-8") as handle:
                return json.load(handle)
        except (OSError, ValueError) as exc:
            raise SaltInvocationError(f"cannot read {config_file}: {exc}") from exc
    conf = __pillar__.get("policyroute")
    if conf is None:
        raise SaltInvocationError(
            "no policyroute pillar and no default/tables given; "
            "to remove webfarm's routing use policyroute.flush"
        )
    return conf


def _files(iproute2_dir):
    return (
        os.path.join(iproute2_dir, "rt_tables.d", pr.FILE_NAME),
        os.path.join(iproute2_dir, "rt_protos.d", pr.FILE_NAME),
    )


def _file_plan(iproute2_dir, names):
    """``{path: new content or None (remove)}`` for the files that differ."""
    tables_path, protos_path = _files(iproute2_dir)
    wanted = {
        tables_path: pr.render_rt_tables(names) if names else None,
        protos_path: pr.render_rt_protos(),
    }
    return {path: text for path, text in wanted.items() if webfarm_files.read_text(path) != text}


def _file_changes(file_plan):
    out = {}
    for path, text in file_plan.items():
        out[path] = (
            "removed" if text is None else ("updated" if os.path.exists(path) else "created")
        )
    return out


def _write_files(file_plan):
    for path, text in file_plan.items():
        if text is None:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            continue
        webfarm_files.write_atomic(path, text, 0o644)


def _known_names(iproute2_dir):
    text = webfarm_files.read_text(_files(iproute2_dir)[0])
    return pr.parse_rt_tables(text) if text else {}


def _prepare(default, tables, only, netns, iproute2_dir, config_file):
    conf = _source(default, tables, config_file)
    netns, iproute2_dir = _settings(conf if isinstance(conf, dict) else {}, netns, iproute2_dir)
    try:
        desired = pr.parse(conf)
    except pr.PolicyRouteError as exc:
        raise SaltInvocationError(str(exc)) from exc
    scope = None
    if only is not None:
        if only not in desired.tables:
            raise SaltInvocationError(
                f"table {only!r} is not in the configuration (tables: {sorted(desired.tables)})"
            )
        scope = {desired.tables[only].id}
    return desired, scope, netns, iproute2_dir


def _compute(nl, desired, scope, iproute2_dir):
    index, addrs = nl.links()
    by_index = {i: name for name, i in index.items()}
    owned_routes, foreign_routes = nl.routes(by_index)
    try:
        pr.check_system(desired, addrs, foreign_routes)
    except pr.PolicyRouteError as exc:
        raise SaltInvocationError(f"{exc}{_where(nl.netns)}") from exc
    plan = pr.plan(desired, owned_routes, nl.rules(), scope, _known_names(iproute2_dir))
    return plan, index, _file_plan(iproute2_dir, desired.names)


def _changes(plan, file_plan):
    changes = plan.changes()
    files = _file_changes(file_plan)
    if files:
        changes["files"] = files
    return changes


def _run(nl, plan, index, file_plan, action):
    outcome = pr.execute(plan.ops, lambda batch: nl.send(batch, index), BATCH_SIZE)
    if outcome.ok:
        try:
            _write_files(file_plan)
        except (OSError, CommandExecutionError) as exc:
            undo = [op.inverse() for op in reversed(outcome.applied)]
            errors = nl.send(undo, index) if undo else []
            left = sum(err is not None for err in errors)
            raise CommandExecutionError(
                f"cannot write the iproute2 names ({exc}); routing rolled back"
                + (f" except {left} operations: check `ip rule`/`ip route`" if left else "")
                + "; fix the directory permissions and apply again"
            ) from exc
        return
    op, err = outcome.failed[0]
    summary = {
        "failed": op.describe(plan.names),
        "error": err,
        "rolled_back": len(outcome.rolled_back),
        "rollback_errors": [f"{o.describe(plan.names)}: {e}" for o, e in outcome.rollback_errors],
    }
    webfarm_events.fire(__salt__, "policyroute", action, "failed", summary)
    if outcome.rollback_errors:
        raise CommandExecutionError(
            f"netlink refused '{summary['failed']}'{_where(nl.netns)}: {err}. Rolling back "
            f"{len(outcome.rolled_back)} operations left {len(outcome.rollback_errors)} undone: "
            f"{'; '.join(summary['rollback_errors'])}. Fix these by hand (ip rule/ip route), "
            "then apply again."
        )
    raise CommandExecutionError(
        f"netlink refused '{summary['failed']}'{_where(nl.netns)}: {err}. Rolled back "
        f"{len(outcome.rolled_back)} operations; routing is as before. Check that nothing "
        "else changed the routes or rules meanwhile and apply again."
    )


def show(netns=None, iproute2_dir=None):
    """
    Return webfarm's tables (names), routes and rules as data.

    Only what webfarm owns is listed: routes of protocol 77 and rules of protocol 77 at
    priorities 1000-9999.

    netns
        Named network namespace (``/run/netns/<name>``) to read instead of the host's.
    iproute2_dir
        Directory holding ``rt_tables.d`` (default ``/etc/iproute2``).

    CLI Example:

    .. code-block:: bash

        salt '*' policyroute.show
        salt-call --local policyroute.show netns=lab
    """
    conf = __pillar__.get("policyroute") or {}
    netns, iproute2_dir = _settings(conf, netns, iproute2_dir)
    names = _known_names(iproute2_dir)
    with _Netlink(netns) as nl:
        index, _addrs = nl.links()
        by_index = {i: name for name, i in index.items()}
        routes, _foreign = nl.routes(by_index)
        rules = nl.rules()

    def table(table_id):
        return pr.RESERVED_TABLES.get(table_id) or names.get(table_id) or table_id

    return {
        "tables": {name: table_id for table_id, name in sorted(names.items())},
        "routes": [
            {
                "family": 4 if r.family == pr.AF_INET else 6,
                "table": table(r.table),
                "dst": r.dst,
                "gateway": r.gateway,
                "dev": r.dev,
                "metric": r.metric,
            }
            for r in sorted(routes)
        ],
        "rules": [
            {
                "family": 4 if r.family == pr.AF_INET else 6,
                "priority": r.priority,
                "src": r.src,
                "table": table(r.table),
            }
            for r in sorted(rules)
        ],
    }


def diff(default=None, tables=None, only=None, netns=None, iproute2_dir=None, config_file=None):
    """
    Return what :py:func:`apply` would change, as ``{routes: {added, removed, changed},
    rules: {added, removed}, files: {path: created|updated|removed}}`` (empty: nothing).

    default, tables
        Pillar-like configuration (see the module doc); when both are omitted the
        ``config_file`` or the ``policyroute`` pillar is used.
    only
        Limit to one table (by name): other tables and the main default are left alone.
    netns
        Named network namespace to work in instead of the host's.
    iproute2_dir
        Directory holding ``rt_tables.d`` and ``rt_protos.d`` (default ``/etc/iproute2``).
    config_file
        JSON file with the pillar-like mapping (what the ``policyroute`` SLS saves for boot).

    CLI Example:

    .. code-block:: bash

        salt '*' policyroute.diff
        salt '*' policyroute.diff only=uplink1
    """
    desired, scope, netns, iproute2_dir = _prepare(
        default, tables, only, netns, iproute2_dir, config_file
    )
    with _Netlink(netns) as nl:
        plan, _index, file_plan = _compute(nl, desired, scope, iproute2_dir)
    return _changes(plan, file_plan)


def apply(default=None, tables=None, only=None, netns=None, iproute2_dir=None, config_file=None):
    """
    Make the routing match the configuration; return the changes (empty when none).

    Routes are added before the rules that use them and rules removed before their routes.
    Webfarm-owned routes and rules no longer in the configuration are removed (only within
    ``only`` when given). On a netlink error the operations already applied are undone in
    reverse order and CommandExecutionError says what failed. Arguments as for
    :py:func:`diff`. Fires ``webfarm/policyroute/apply/done`` (or ``/failed``).

    CLI Example:

    .. code-block:: bash

        salt '*' policyroute.apply
        salt-call --local policyroute.apply config_file=/etc/webfarm/policyroute.json
    """
    desired, scope, netns, iproute2_dir = _prepare(
        default, tables, only, netns, iproute2_dir, config_file
    )
    with _Netlink(netns) as nl:
        plan, index, file_plan = _compute(nl, desired, scope, iproute2_dir)
        changes = _changes(plan, file_plan)
        if not changes:
            return {}
        _run(nl, plan, index, file_plan, "apply")
    webfarm_events.fire(
        __salt__,
        "policyroute",
        "apply",
        "done",
        {"operations": len(plan.ops), "files": len(file_plan), "netns": netns},
    )
    return changes


def flush(table, netns=None, iproute2_dir=None, test=False):
    """
    Remove webfarm's rules pointing at ``table`` and webfarm's routes in it, and its name.

    table
        Table name (from ``rt_tables.d/webfarm.conf``) or id. A name that file does not
        know has nothing of webfarm's to flush (returns ``{}``); give the id then.
    test
        Only return what would be removed.

    CLI Example:

    .. code-block:: bash

        salt '*' policyroute.flush uplink1
        salt '*' policyroute.flush 7 test=True
    """
    conf = __pillar__.get("policyroute") or {}
    netns, iproute2_dir = _settings(conf if isinstance(conf, dict) else {}, netns, iproute2_dir)
    names = _known_names(iproute2_dir)
    try:
        table_id = pr.resolve_table(table, names)
    except pr.PolicyRouteError as exc:
        if str(table).strip().isdigit():
            raise SaltInvocationError(str(exc)) from exc
        return {}
    if table_id in pr.RESERVED_TABLES:
        raise SaltInvocationError(f"table {table_id} is reserved; flush only webfarm tables")
    keep = {i: n for i, n in names.items() if i != table_id}
    with _Netlink(netns) as nl:
        index, _addrs = nl.links()
        owned_routes, _foreign = nl.routes({i: n for n, i in index.items()})
        plan = pr.plan(pr.Desired(), owned_routes, nl.rules(), {table_id}, names)
        file_plan = {}
        if keep != names:
            file_plan = {_files(iproute2_dir)[0]: pr.render_rt_tables(keep) if keep else None}
        changes = _changes(plan, file_plan)
        if test or not changes:
            return changes
        _run(nl, plan, index, file_plan, "flush")
    webfarm_events.fire(
        __salt__, "policyroute", "flush", "done", {"table": table_id, "netns": netns}
    )
    return changes
