"""HAProxy tiers: render/validate/apply the generated configs, drive the runtime API.

Topology: pillar ``webfarm:topology`` (or the Salt mine when ``webfarm:topology:from_mine``).
Settings: pillar ``haproxy`` (see ``pillar/haproxy.sls``); every path and bind is overridable::

    haproxy:
      primary: {config: /etc/haproxy/primary.cfg, pidfile: ..., socket: ..., bind: 10.0.0.1:80}
      site:    {config: /etc/haproxy/site.cfg, name: s1, bind: [10.0.1.10:80]}

Farm addressing on a site LB: ``drain(farm="f1")`` acts on every member of farm f1
(servers ``f1_m<member>``); ``drain(farm="f1", server="f1_m3")`` on one member. On the primary
LB the groups are sites: ``drain(site="s2")``.

Events: ``webfarm/haproxy/drain/done`` and ``webfarm/haproxy/ready/done`` with
``{tier, site, farm, servers, ...}`` in the payload (which group: the payload says, the tag
names the action).
"""

import logging
import os
import shutil
import signal
import socket as socketlib
import subprocess
import tempfile
import time

from salt.exceptions import CommandExecutionError, SaltInvocationError

import webfarm_events
import webfarm_files
import webfarm_haproxy
import webfarm_topology

log = logging.getLogger(__name__)

__virtualname__ = "haproxy_tier"

SOCKET_TIMEOUT = 10
RELOAD_TIMEOUT = 15


def __virtual__():
    binary = (__pillar__.get("haproxy") or {}).get("binary") or "haproxy"
    if shutil.which(binary) is None:
        return False, f"haproxy_tier: {binary} is not installed (apt-get install haproxy)"
    return __virtualname__


# --------------------------------------------------------------------------- settings


def _defaults():
    """salt/states/haproxy/defaults.yaml, through webfarm.defaults."""
    return __salt__["webfarm.defaults"]("haproxy")


def _from_pillar(read, *args):
    """``read(pillar haproxy, *args, defaults)``: a bad pillar is a clean SaltInvocationError."""
    try:
        return read(__pillar__.get("haproxy"), *args, _defaults())
    except ValueError as exc:
        raise SaltInvocationError(str(exc)) from None


def _settings(tier):
    return _from_pillar(webfarm_haproxy.tier_settings, tier)


def _in_netns(netns, argv):
    """``argv`` run inside network namespace ``netns`` (as it is when ``netns`` is empty)."""
    return ["ip", "netns", "exec", str(netns), *argv] if netns else list(argv)


def _tier(tier, farm=None, site=None):
    if tier is None:
        tier = "primary" if site is not None and farm is None else "site"
    if tier not in webfarm_haproxy.TIERS:
        raise SaltInvocationError(f"tier must be 'primary' or 'site', got {tier!r}")
    return tier


def topology():
    """
    Return the validated topology (pillar ``webfarm:topology``, or the mine).

    With ``webfarm:topology:from_mine: true`` it is built from mine function
    ``webfarm:topology:mine_function`` (default ``webfarm_grains``: ``grains.item webfarm
    ipv4`` published by every minion); ``member_port``, ``lb_port`` and ``mine_network``
    in the same pillar key tune it. Trust from the master (docs/trust.md): a mine entry is used
    only when the pillar topology names its minion (``webfarm:topology:minions: {id: role}``
    or an ``id`` in the topology) in the role it claims; the others are dropped and logged.

    CLI Example:

    .. code-block:: bash

        salt lb-s1 haproxy_tier.topology
    """
    raw = (__pillar__.get("webfarm") or {}).get("topology")
    if not isinstance(raw, dict):
        raise SaltInvocationError("pillar webfarm:topology is missing")
    try:
        if raw.get("from_mine"):
            mine = __salt__["trust.mine"](
                raw.get("mine_target", "*"), raw.get("mine_function", "webfarm_grains")
            )
            raw = {
                **raw,
                **webfarm_haproxy.topology_from_mine(
                    mine,
                    member_port=raw.get("member_port", 80),
                    lb_port=raw.get("lb_port", 80),
                    network=raw.get("mine_network"),
                ),
            }
        return webfarm_haproxy.validate_topology(raw)
    except ValueError as exc:
        raise SaltInvocationError(str(exc)) from None


def _site_name(settings, topo, site):
    site = site or settings.get("name") or __salt__["grains.get"]("webfarm:site") or None
    if site is None:
        lb = webfarm_topology.find(topo, __opts__.get("id"), role="lb-site")
        site = lb[2]["site"] if lb else None
    if site is None:
        raise SaltInvocationError(
            "which site does this LB serve? pass site=, or set pillar haproxy:site:name "
            "or grain webfarm:site"
        )
    return str(site)


def _binds(settings, topo, site):
    try:
        if settings.get("bind"):
            binds = webfarm_haproxy.parse_bind(settings["bind"])
            vip = webfarm_haproxy.tier_vip(topo, settings["tier"], site)
            if vip and settings.get("bind_vip", True):
                binds.append((vip["address"], vip["port"], True))
            return binds
    except ValueError as exc:
        raise SaltInvocationError(f"pillar haproxy:{settings['tier']}:bind: {exc}") from None
    lbs = webfarm_haproxy.tier_lbs(topo, settings["tier"], site)
    me = __opts__.get("id")
    mine = [(lb["address"], lb["port"]) for lb in lbs if lb["id"] == me]
    if not mine:
        raise SaltInvocationError(
            f"minion {me} is not a {settings['tier']} LB in webfarm:topology: "
            f"set pillar haproxy:{settings['tier']}:bind"
        )
    # The tier's VIP (webfarm:topology), bound `transparent` on every LB of the tier: the
    # VRRP backup's socket is ready before keepalived moves the address to it.
    vip = webfarm_haproxy.tier_vip(topo, settings["tier"], site)
    if vip and settings.get("bind_vip", True):
        mine.append((vip["address"], vip["port"], True))
    return mine


def render(tier="site", site=None):
    """
    Render the HAProxy config of ``tier`` (``primary`` or ``site``) from the topology.

    site
        Site tier only: the site to render (default pillar ``haproxy:site:name``, grain
        ``webfarm:site``, or the site whose ``lbs`` list this minion).

    CLI Example:

    .. code-block:: bash

        salt lb-s1 haproxy_tier.render site
        salt lb-primary haproxy_tier.render primary
    """
    tier = _tier(tier)
    settings = _settings(tier)
    topo = topology()
    if tier == "site":
        site = _site_name(settings, topo, site)
        if site not in topo["sites"]:
            raise SaltInvocationError(f"site {site!r} is not in webfarm:topology")
    else:
        site = None
        if not topo["sites"]:
            raise SaltInvocationError("webfarm:topology has no sites")
    binds = _binds(settings, topo, site)
    try:
        return webfarm_haproxy.render(topo, settings, site=site, binds=binds)
    except ValueError as exc:
        raise SaltInvocationError(str(exc)) from None


# --------------------------------------------------------------------------- config files


def _rendered(tier, site):
    """``tier`` checked, its settings and its config rendered from the topology."""
    tier = _tier(tier)
    return tier, _settings(tier), render(tier, site)


def _check_file(settings, path):
    proc = subprocess.run(
        [settings["binary"], "-c", "-f", path],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    alerts = [line for line in lines if "[ALERT]" in line]
    return proc.returncode == 0, "\n".join(alerts or lines)


def validate(tier="site", site=None):
    """
    Render the config of ``tier`` into a temporary file and check it with ``haproxy -c``.

    Returns ``{"valid": True, "output": ...}``; raises when the topology or the config is
    invalid. Nothing is replaced.

    CLI Example:

    .. code-block:: bash

        salt lb-s1 haproxy_tier.validate site
    """
    tier, settings, text = _rendered(tier, site)
    fd, tmp = tempfile.mkstemp(prefix="haproxy-check.", suffix=".cfg")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        valid, output = _check_file(settings, tmp)
    finally:
        os.unlink(tmp)
    if not valid:
        raise CommandExecutionError(f"haproxy -c rejected the rendered {tier} config: {output}")
    return {"valid": True, "output": output}


def _master_pid(settings):
    try:
        with open(settings["pidfile"], encoding="ascii") as handle:
            pid = int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read().split(b"\0")
    except OSError:
        return None
    if not cmdline or b"haproxy" not in os.path.basename(cmdline[0]):
        return None
    return pid


def _worker_pid(settings):
    try:
        info = webfarm_haproxy.parse_show_info(_command(settings["socket"], "show info", 2))
        return int(info["Pid"])
    except (CommandExecutionError, KeyError, ValueError):
        return None


def _systemd_service(settings):
    return settings.get("service") if os.path.isdir("/run/systemd/system") else None


def status(tier="site"):
    """
    Whether the HAProxy of ``tier`` runs: master pid (pidfile), worker pid (stats socket).

    CLI Example:

    .. code-block:: bash

        salt lb-s1 haproxy_tier.status site
    """
    settings = _settings(_tier(tier))
    master = _master_pid(settings)
    worker = _worker_pid(settings) if master or _systemd_service(settings) else None
    return {
        "running": bool(worker),
        "master_pid": master,
        "worker_pid": worker,
        "config": settings["config"],
        "socket": settings["socket"],
    }


def plan(tier="site", site=None):
    """
    Compare the rendered config of ``tier`` with the file in place; change nothing.

    Returns ``{"config", "changed", "diff", "running"}``.

    CLI Example:

    .. code-block:: bash

        salt lb-s1 haproxy_tier.plan site
    """
    tier, settings, wanted = _rendered(tier, site)
    current = webfarm_files.read_text(settings["config"])
    return {
        "config": settings["config"],
        "changed": current != wanted,
        "diff": webfarm_haproxy.diff(current, wanted, settings["config"]),
        "running": status(tier)["running"],
    }


def _write_state_file(settings):
    """Save the servers' runtime states so the new worker keeps drains/maints/weights."""
    try:
        text = _command(settings["socket"], "show servers state", 5)
    except CommandExecutionError as exc:
        log.warning("servers state not saved before reload: %s", exc)
        return
    webfarm_files.write_atomic(settings["state_file"], text, 0o600)


def _wait_new_worker(settings, old_worker, timeout=RELOAD_TIMEOUT, resignal=None):
    """Wait until the stats socket answers from a worker other than ``old_worker``.

    ``resignal`` re-sends the reload signal every 2s: a master that is still finishing its
    previous reload may miss a SIGUSR2 (a second one only means one more graceful reload).
    """
    deadline = time.monotonic() + timeout
    next_signal = time.monotonic() + 2
    while time.monotonic() < deadline:
        worker = _worker_pid(settings)
        if worker and worker != old_worker:
            return worker
        if resignal and time.monotonic() >= next_signal:
            resignal()
            next_signal = time.monotonic() + 2
        time.sleep(0.05)
    raise CommandExecutionError(
        f"HAProxy ({settings['tier']}) did not answer on {settings['socket']} with a new worker "
        f"within {timeout}s: look at its log (syslog) and `haproxy -c -f {settings['config']}`"
    )


def reload(tier="site"):
    """
    Gracefully reload the running master-worker HAProxy of ``tier`` (no dropped connection).

    The servers' runtime states are saved first (``server-state-file``) so drained servers
    stay drained. Uses ``systemctl reload <haproxy:<tier>:service>`` where systemd runs and a
    service is set, else SIGUSR2 to the master pid from the pidfile. Waits for the new worker.

    CLI Example:

    .. code-block:: bash

        salt lb-s1 haproxy_tier.reload site
    """
    tier = _tier(tier)
    settings = _settings(tier)
    old_worker = _worker_pid(settings)
    _write_state_file(settings)
    service = _systemd_service(settings)
    if service:
        proc = subprocess.run(
            ["systemctl", "reload", service], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise CommandExecutionError(
                f"systemctl reload {service} failed: {proc.stderr.strip()}; see journalctl -u {service}"
            )
        master = None
    else:
        master = _master_pid(settings)
        if master is None:
            raise CommandExecutionError(
                f"HAProxy ({tier}) is not running (no live master in {settings['pidfile']}): "
                f"start it with haproxy_tier.start {tier}"
            )
        os.kill(master, signal.SIGUSR2)
    resignal = None if service else (lambda: os.kill(master, signal.SIGUSR2))
    worker = _wait_new_worker(settings, old_worker, resignal=resignal)
    return {"master_pid": master, "old_worker_pid": old_worker, "worker_pid": worker}


def start(tier="site"):
    """
    Start HAProxy of ``tier`` in master-worker mode from the config file in place.

    CLI Example:

    .. code-block:: bash

        salt lb-s1 haproxy_tier.start site
    """
    tier = _tier(tier)
    settings = _settings(tier)
    if status(tier)["running"]:
        raise CommandExecutionError(f"HAProxy ({tier}) already runs; use haproxy_tier.reload")
    for path in (settings["pidfile"], settings["socket"], settings["state_file"]):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    proc = subprocess.run(
        [settings["binary"], "-W", "-D", "-p", settings["pidfile"], "-f", settings["config"]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise CommandExecutionError(
            f"haproxy ({tier}) did not start: {(proc.stdout + proc.stderr).strip()}"
        )
    worker = _wait_new_worker(settings, None)
    # The worker can answer before the daemonized master has rewritten the pidfile (one left
    # by a killed HAProxy names a dead pid until then).
    deadline = time.monotonic() + RELOAD_TIMEOUT
    master = _master_pid(settings)
    while master is None and time.monotonic() < deadline:
        time.sleep(0.05)
        master = _master_pid(settings)
    return {"master_pid": master, "worker_pid": worker}


def apply(tier="site", site=None, start_if_stopped=True):
    """
    Render, validate with ``haproxy -c``, then atomically replace the config and reload.

    The candidate is written next to the config and checked first: a topology or config
    error leaves the file in place and the running HAProxy untouched. Nothing is done when
    the config is already as rendered and HAProxy runs.

    CLI Example:

    .. code-block:: bash

        salt lb-s1 haproxy_tier.apply site
    """
    tier, settings, wanted = _rendered(tier, site)
    path = settings["config"]
    current = webfarm_files.read_text(path)
    running = status(tier)["running"]
    result = {"config": path, "changed": False, "diff": "", "reloaded": None, "started": None}
    if current != wanted:

        def _validate(tmp):
            valid, output = _check_file(settings, tmp)
            if not valid:
                raise CommandExecutionError(
                    f"haproxy -c rejected the new {tier} config, {path} and the running "
                    f"HAProxy are unchanged: {output}"
                )

        webfarm_files.write_atomic(path, wanted, 0o644, check=_validate)
        result.update(
            changed=True, diff=webfarm_haproxy.diff(current, wanted, path), previous=current
        )
        if running:
            result["reloaded"] = reload(tier)
    if not running and start_if_stopped:
        result["started"] = start(tier)
    return result


# --------------------------------------------------------------------------- runtime API


def _command(path, command, timeout=SOCKET_TIMEOUT):
    """One command on the stats socket; returns the answer text."""
    try:
        with socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except OSError as exc:
        raise CommandExecutionError(
            f"cannot talk to HAProxy on {path} ({exc}): is it running "
            "(haproxy_tier.status)? is pillar haproxy:<tier>:socket right?"
        ) from exc
    return b"".join(chunks).decode("utf-8", "replace")


def _set(path, command):
    answer = _command(path, command).strip()
    if answer:
        raise CommandExecutionError(f"HAProxy refused '{command}': {answer}")


def _socket(tier, socket):
    return socket or _settings(tier)["socket"]


def _snapshot(path):
    stat_rows = webfarm_haproxy.parse_show_stat(_command(path, "show stat"))
    state_rows = webfarm_haproxy.parse_servers_state(_command(path, "show servers state"))
    return stat_rows, webfarm_haproxy.group_servers(stat_rows, state_rows)


def servers(tier="site", socket=None):
    """
    Servers of the running HAProxy grouped by farm (site tier) or site (primary tier).

    Each server: ``status`` (UP/DOWN/DRAIN/MAINT), ``admin`` (ready/drain/maint), ``weight``,
    ``sessions`` (current), ``total``, ``address``, ``port``, ``backend``.

    CLI Example:

    .. code-block:: bash

        salt lb-s1 haproxy_tier.servers
        salt lb-primary haproxy_tier.servers tier=primary
    """
    tier = _tier(tier)
    return _snapshot(_socket(tier, socket))[1]


def _targets(groups, tier, group, server):
    """[(group, server_name, info)] addressed by group and/or server name."""
    kind = webfarm_haproxy.group_kind(tier)
    if group is None and server is None:
        raise SaltInvocationError(f"name a {kind} ({kind}=...) or a server (server=...)")
    if group is not None:
        group = str(group)
        if group not in groups:
            raise SaltInvocationError(
                f"no {kind} {group!r} in this HAProxy ({kind}s: {', '.join(groups) or 'none'})"
            )
        candidates = {group: groups[group]}
    else:
        candidates = groups
    found = [
        (g, name, info)
        for g, members in candidates.items()
        for name, info in members.items()
        if server is None or name == server
    ]
    if not found:
        where = f"{kind} {group}" if group else "this HAProxy"
        raise SaltInvocationError(f"no server {server!r} in {where}")
    return found


def _resolve(farm, server, site, tier, socket):
    tier = _tier(tier, farm, site)
    group = site if tier == "primary" else farm
    path = _socket(tier, socket)
    stat_rows, groups = _snapshot(path)
    return tier, group, path, stat_rows, _targets(groups, tier, group, server)


def _pick(tier):
    return webfarm_haproxy.pick_backend(tier)


def _payload(tier, stat_rows, targets, path, **extra):
    groups = sorted({g for g, _, _ in targets})
    site = webfarm_haproxy.frontend_site(stat_rows)
    payload = {
        "tier": tier,
        "site": groups[0] if tier == "primary" else site,
        "farm": groups[0] if tier == "site" else None,
        "servers": [name for _, name, _ in targets],
        "socket": path,
    }
    payload.update(extra)
    return payload


def _fire(action, payload):
    return webfarm_events.fire(__salt__, "haproxy", action, "done", payload)


def _sessions(path, tier, targets):
    _, groups = _snapshot(path)
    return sum(groups[g][name]["sessions"] for g, name, _ in targets if name in groups.get(g, {}))


def _wait(path, tier, targets, timeout, interval):
    started = time.monotonic()
    deadline = started + float(timeout)
    while True:
        left = _sessions(path, tier, targets)
        if left == 0 or time.monotonic() >= deadline:
            return left, round(time.monotonic() - started, 3)
        time.sleep(interval)


def _timeout(timeout):
    try:
        timeout = float(timeout)
    except (TypeError, ValueError):
        raise SaltInvocationError(f"timeout must be a number of seconds, got {timeout!r}") from None
    if timeout < 0:
        raise SaltInvocationError("timeout must be >= 0")
    return timeout


def drain(farm=None, server=None, site=None, timeout=60, tier=None, socket=None, interval=0.1):
    """
    Drain a farm (or one server) on a site LB, or a site on the primary LB.

    Its servers stop getting new requests at once (``drain`` in the group backend, ``maint``
    in the pick backend, so sticky clients move to another farm of the site and get a new
    cookie); once their sessions reach 0, or after ``timeout`` seconds, they go to ``maint``.
    Fires ``webfarm/haproxy/drain/done``.

    farm / site
        The group to drain (``site`` alone means the primary tier).
    server
        One server, e.g. ``f1_m3``; alone or with ``farm``.
    timeout
        Seconds to wait for running sessions (default 60).

    CLI Example:

    .. code-block:: bash

        salt lb-s1 haproxy_tier.drain farm=f1
        salt lb-s1 haproxy_tier.drain server=f1_m3 timeout=30
        salt lb-primary haproxy_tier.drain site=s2
    """
    timeout = _timeout(timeout)
    tier, _group, path, stat_rows, targets = _resolve(farm, server, site, tier, socket)
    pick = _pick(tier)
    for _, name, info in targets:
        if info["admin"] != "maint":
            _set(path, f"set server {info['backend']}/{name} state drain")
        _set(path, f"set server {pick}/{name} state maint")
    left, seconds = _wait(path, tier, targets, timeout, interval)
    for _, name, info in targets:
        _set(path, f"set server {info['backend']}/{name} state maint")
    payload = _payload(
        tier, stat_rows, targets, path, sessions_left=left, timed_out=left > 0, seconds=seconds
    )
    payload["event_sent"] = _fire("drain", payload)
    return payload


def wait_drained(farm=None, server=None, site=None, timeout=60, tier=None, socket=None):
    """
    Wait until the servers of a farm (or one server) have no session, at most ``timeout`` s.

    Returns ``{"drained": bool, "sessions": n, "seconds": t}``; changes nothing.

    CLI Example:

    .. code-block:: bash

        salt lb-s1 haproxy_tier.wait_drained farm=f1 timeout=120
    """
    timeout = _timeout(timeout)
    tier, _, path, _, targets = _resolve(farm, server, site, tier, socket)
    left, seconds = _wait(path, tier, targets, timeout, 0.1)
    return {"drained": left == 0, "sessions": left, "seconds": seconds}


def ready(farm=None, server=None, site=None, tier=None, socket=None):
    """
    Put a farm (or one server) back in service: ``ready`` in both backends.

    Fires ``webfarm/haproxy/ready/done``.

    CLI Example:

    .. code-block:: bash

        salt lb-s1 haproxy_tier.ready farm=f1
        salt lb-primary haproxy_tier.ready site=s2
    """
    tier, _group, path, stat_rows, targets = _resolve(farm, server, site, tier, socket)
    pick = _pick(tier)
    previous = {name: info["admin"] for _, name, info in targets}
    for _, name, info in targets:
        _set(path, f"set server {info['backend']}/{name} state ready")
        _set(path, f"set server {pick}/{name} state ready")
    payload = _payload(tier, stat_rows, targets, path, previous=previous)
    payload["event_sent"] = _fire("ready", payload)
    return payload


def set_weight(weight, farm=None, server=None, site=None, tier=None, socket=None):
    """
    Set the weight of a farm's servers (or one server): 0-256, or a percentage of the
    configured weight such as ``"50%"``. Lasts until the next restart (reloads keep it).

    CLI Example:

    .. code-block:: bash

        salt lb-s1 haproxy_tier.set_weight 50 server=f1_m3
        salt lb-s1 haproxy_tier.set_weight 50% farm=f2
    """
    text = str(weight).strip()
    number = text[:-1] if text.endswith("%") else text
    if not number.isdigit() or (not text.endswith("%") and int(number) > 256):
        raise SaltInvocationError(f"weight must be 0-256 or a percentage like 50%, got {weight!r}")
    tier, _, path, _, targets = _resolve(farm, server, site, tier, socket)
    pick = _pick(tier)
    for _, name, info in targets:
        _set(path, f"set weight {info['backend']}/{name} {text}")
        _set(path, f"set weight {pick}/{name} {text}")
    _, groups = _snapshot(path)
    return {name: groups[g][name]["weight"] for g, name, _ in targets}


# --------------------------------------------------------------------------- VRRP (keepalived)


def _vrrp():
    return _from_pillar(webfarm_haproxy.vrrp_settings)


def _vrrp_text(vrrp):
    """The real keepalived.conf (holds the VRRP password: never return or log it)."""
    topo = topology()
    monitor_uri = _settings("primary")["monitor_uri"]
    try:
        return webfarm_haproxy.render_vrrp(topo, __opts__.get("id"), vrrp, monitor_uri)
    except ValueError as exc:
        raise SaltInvocationError(webfarm_haproxy.mask_secret(str(exc))) from None


def vrrp_render():
    """
    Render this LB's keepalived.conf from the topology (the password masked).

    One VRRP instance per tier (``primary``, ``site_<site>``) whose LB list names this
    minion and which has a ``vip`` (``webfarm:topology:primary_vip`` /
    ``webfarm:topology:sites:<site>:vip``). Settings: pillar ``haproxy:vrrp`` (VRRPv3 by
    default); the VRRPv2 password is ``haproxy:vrrp:auth_pass`` and never appears in a return.

    CLI Example:

    .. code-block:: bash

        salt 'lb-*' haproxy_tier.vrrp_render
    """
    return webfarm_haproxy.mask_secret(_vrrp_text(_vrrp()))


def _keepalived_pid(vrrp):
    try:
        with open(vrrp["pidfile"], encoding="ascii") as handle:
            pid = int(handle.read().split()[0])
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            cmdline = handle.read().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    if not cmdline or b"keepalived" not in os.path.basename(cmdline[0]):
        return None
    return pid


def _vrrp_addresses(vrrp):
    argv = _in_netns(vrrp.get("netns"), ["ip", "-o", "addr", "show"])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        raise CommandExecutionError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return {line.split()[3].split("/")[0] for line in proc.stdout.splitlines() if "inet" in line}


def vrrp_status():
    """
    Whether keepalived runs (pidfile) and which of this LB's VIPs it holds now.

    Returns ``{"running", "pid", "vips": {instance: {"address", "held"}}}``: a held VIP
    means this LB is that tier's VRRP master.

    CLI Example:

    .. code-block:: bash

        salt 'lb-*' haproxy_tier.vrrp_status
    """
    vrrp = _vrrp()
    topo = topology()
    pid = _keepalived_pid(vrrp)
    held = _vrrp_addresses(vrrp)
    vips = {
        name: {"address": vip["address"], "held": vip["address"] in held}
        for name, _tier, _site, _lbs, vip in webfarm_haproxy.vrrp_instances(
            topo, __opts__.get("id")
        )
    }
    return {"running": pid is not None, "pid": pid, "config": vrrp["config"], "vips": vips}


def vrrp_plan():
    """
    Compare the rendered keepalived.conf with the file in place; change nothing.

    Returns ``{"config", "changed", "diff", "running"}``; the diff has the password masked.

    CLI Example:

    .. code-block:: bash

        salt 'lb-*' haproxy_tier.vrrp_plan
    """
    vrrp = _vrrp()
    wanted = _vrrp_text(vrrp)
    current = webfarm_files.read_text(vrrp["config"])
    return {
        "config": vrrp["config"],
        "changed": current != wanted,
        "diff": webfarm_haproxy.mask_secret(webfarm_haproxy.diff(current, wanted, vrrp["config"])),
        "running": _keepalived_pid(vrrp) is not None,
    }


def _keepalived_check(vrrp, path):
    argv = _in_netns(vrrp.get("netns"), [vrrp["binary"], "--config-test", "-f", path])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        output = webfarm_haproxy.mask_secret((proc.stdout + proc.stderr).strip())
        raise CommandExecutionError(
            f"keepalived --config-test rejected the new config, {vrrp['config']} and the "
            f"running keepalived are unchanged: {output}"
        )


def vrrp_start():
    """
    Start keepalived (VRRP only) from the config in place, in ``haproxy:vrrp:netns`` if set.

    CLI Example:

    .. code-block:: bash

        salt 'lb-*' haproxy_tier.vrrp_start
    """
    vrrp = _vrrp()
    if _keepalived_pid(vrrp):
        raise CommandExecutionError("keepalived already runs; use haproxy_tier.vrrp_apply")
    for path in (vrrp["pidfile"], vrrp["vrrp_pidfile"]):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    argv = _in_netns(
        vrrp.get("netns"),
        [vrrp["binary"], "--vrrp", "-f", vrrp["config"], "-p", vrrp["pidfile"],
         "-r", vrrp["vrrp_pidfile"]],
    )  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise CommandExecutionError(
            "keepalived did not start: "
            + webfarm_haproxy.mask_secret((proc.stdout + proc.stderr).strip())
        )
    deadline = time.monotonic() + RELOAD_TIMEOUT
    while time.monotonic() < deadline:
        pid = _keepalived_pid(vrrp)
        if pid:
            return {"pid": pid}
        time.sleep(0.05)
    raise CommandExecutionError(
        f"keepalived wrote no live pid to {vrrp['pidfile']} within {RELOAD_TIMEOUT}s: "
        "look at its log (syslog)"
    )


def vrrp_apply(start_if_stopped=True):
    """
    Render this LB's keepalived.conf, check it with ``keepalived --config-test``, replace it
    atomically (mode 0600: it holds the password) and reload keepalived (SIGHUP), or start it.

    A topology or config error leaves the file and the running keepalived untouched.

    CLI Example:

    .. code-block:: bash

        salt 'lb-*' haproxy_tier.vrrp_apply
    """
    vrrp = _vrrp()
    wanted = _vrrp_text(vrrp)
    path = vrrp["config"]
    current = webfarm_files.read_text(path)
    pid = _keepalived_pid(vrrp)
    result = {"config": path, "changed": False, "diff": "", "reloaded": None, "started": None}
    if current != wanted:
        webfarm_files.write_atomic(
            path, wanted, 0o600, check=lambda tmp: _keepalived_check(vrrp, tmp)
        )
        result["changed"] = True
        result["diff"] = webfarm_haproxy.mask_secret(webfarm_haproxy.diff(current, wanted, path))
        if pid:
            os.kill(pid, signal.SIGHUP)
            result["reloaded"] = {"pid": pid}
    if pid is None and start_if_stopped:
        result["started"] = vrrp_start()
    return result


# --------------------------------------------------------------------------- sysctl


def _sysctl_wanted():
    return _from_pillar(webfarm_haproxy.sysctl_wanted)


def _sysctl_persisted(netns, missing):
    """The values to persist: the wanted ones, but a ceiling the host already exceeds at
    the host's value (never lowered)."""
    wanted = {k: v for k, v in _sysctl_wanted().items() if k not in missing}
    current = sysctl_current(netns)
    for key in wanted:
        if key in webfarm_haproxy.SYSCTL_AT_LEAST and current.get(key):
            if webfarm_haproxy.sysctl_satisfied(key, current[key], wanted[key]):
                wanted[key] = current[key]
    return wanted


def sysctl_current(netns=None):
    """
    The current value of every key ``haproxy.sysctl`` manages (None: not on this kernel).

    netns
        Read inside this network namespace (``net.*`` keys are per namespace).

    CLI Example:

    .. code-block:: bash

        salt 'lb-*' haproxy_tier.sysctl_current
    """
    out = {}
    for key in _sysctl_wanted():
        proc = subprocess.run(
            _in_netns(netns, ["sysctl", "-n", key]),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        out[key] = webfarm_haproxy.sysctl_normal(proc.stdout) if proc.returncode == 0 else None
    return out


def sysctl_plan(netns=None):
    """
    ``{key: {"old", "new"}}`` for each managed sysctl that differs; ``missing``: keys the
    kernel does not have (optional ones, e.g. conntrack when nf_conntrack is not loaded).

    CLI Example:

    .. code-block:: bash

        salt 'lb-*' haproxy_tier.sysctl_plan
    """
    wanted = _sysctl_wanted()
    current = sysctl_current(netns)
    changes, missing = {}, []
    for key, value in wanted.items():
        if current.get(key) is None:
            missing.append(key)
            continue
        if not webfarm_haproxy.sysctl_satisfied(key, current[key], value):
            changes[key] = {"old": current[key], "new": webfarm_haproxy.sysctl_normal(value)}
    required = [k for k in missing if k not in webfarm_haproxy.SYSCTL_OPTIONAL]
    return {"changes": changes, "missing": missing, "required_missing": required}


def sysctl_apply(netns=None, persist=None):
    """
    Set every managed sysctl that differs (``sysctl -w``) and, with ``persist`` (a path such
    as ``/etc/sysctl.d/60-webfarm-haproxy.conf``), write them there for the next boot.

    CLI Example:

    .. code-block:: bash

        salt 'lb-*' haproxy_tier.sysctl_apply persist=/etc/sysctl.d/60-webfarm-haproxy.conf
    """
    plan_ = sysctl_plan(netns)
    if plan_["required_missing"]:
        raise CommandExecutionError(
            f"this kernel has no {', '.join(plan_['required_missing'])}: nothing was set"
        )
    for key, change in plan_["changes"].items():
        proc = subprocess.run(
            _in_netns(netns, ["sysctl", "-q", "-w", f"{key}={change['new']}"]),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if proc.returncode != 0:
            raise CommandExecutionError(f"sysctl -w {key} failed: {proc.stderr.strip()}")
    wanted = _sysctl_persisted(netns, plan_["missing"])
    persisted = False
    if persist:
        text = webfarm_haproxy.sysctl_file(wanted)
        if webfarm_files.read_text(persist) != text:
            webfarm_files.write_atomic(persist, text, 0o644)
            persisted = True
    return {"changes": plan_["changes"], "missing": plan_["missing"], "persisted": persisted}


def sysctl_persist_stale(persist, netns=None):
    """
    True when the persistent sysctl file ``persist`` differs from what ``haproxy.sysctl``
    would write (so the state can report it under ``test=True``).

    CLI Example:

    .. code-block:: bash

        salt 'lb-*' haproxy_tier.sysctl_persist_stale /etc/sysctl.d/60-webfarm-haproxy.conf
    """
    wanted = _sysctl_persisted(netns, sysctl_plan(netns)["missing"])
    return webfarm_files.read_text(persist) != webfarm_haproxy.sysctl_file(wanted)
