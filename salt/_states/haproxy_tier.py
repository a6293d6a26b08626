"""HAProxy tiers: the generated config in place and running; farms drained or ready.

.. code-block:: yaml

    haproxy-site:
      haproxy_tier.configured:
        - tier: site

    drain-f1-for-upgrade:
      haproxy_tier.drained:
        - name: f1            # a farm on a site LB (tier: primary -> a site)
        - timeout: 120

    f1-back-in-service:
      haproxy_tier.ready:
        - name: f1
"""

from salt.exceptions import SaltException

__virtualname__ = "haproxy_tier"


def __virtual__():
    if "haproxy_tier.servers" in __salt__:
        return __virtualname__
    return False, "haproxy_tier states need the haproxy_tier execution module (install haproxy)"


def _ret(name, comment):
    return {"name": name, "result": True, "comment": comment, "changes": {}}


def _config_managed(name, what, service, start, plan, apply, args, reload_changes, validate=None):
    """A rendered config in place and its ``service`` running: ``plan`` (an execution
    function, called with ``args``) says what differs, ``validate`` (if any) checks the
    candidate in test mode, ``apply`` replaces it and reloads or starts the service;
    ``reload_changes(done["reloaded"])`` is what a reload adds to the changes."""
    ret = _ret(name, f"{what} config is already as wanted and running")
    try:
        planned = __salt__[plan](**args)
        if not planned["changed"] and (planned["running"] or not start):
            return ret
        if __opts__["test"]:
            if validate and planned["changed"]:
                __salt__[validate](**args)
            actions = []
            if planned["changed"]:
                actions.append(f"replaced {planned['config']}")
                ret["changes"]["diff"] = planned["diff"]
            if planned["running"] and planned["changed"]:
                actions.append(f"reloaded {service}")
            elif not planned["running"] and start:
                actions.append(f"started {service}")
                ret["changes"]["started"] = True
            ret["result"] = None
            ret["comment"] = "Would have " + " and ".join(actions)
            return ret
        done = __salt__[apply](**args, start_if_stopped=start)
    except SaltException as exc:
        ret["result"] = False
        ret["comment"] = str(exc)
        return ret
    if done["changed"]:
        ret["changes"]["diff"] = done["diff"]
    if done["reloaded"]:
        ret["changes"].update(reload_changes(done["reloaded"]))
    if done["started"]:
        ret["changes"]["started"] = done["started"]
    ret["comment"] = f"{what} config " + (
        "replaced and reloaded"
        if done["reloaded"]
        else f"written and {service} started"
        if done["started"]
        else "written"
    )
    return ret


def configured(name, tier="site", site=None, start=True):
    """
    The config of ``tier`` rendered from the topology is in place and HAProxy runs it.

    The candidate config is validated (topology, then ``haproxy -c``) before it replaces the
    file; a running HAProxy gets a graceful reload, a stopped one is started when ``start``.
    An invalid topology or config fails the state and leaves the file and HAProxy untouched.

    name
        Any ID.
    tier
        ``site`` (default) or ``primary``.
    site
        Site tier: which site (default pillar ``haproxy:site:name`` / grain ``webfarm:site``).

    CLI Example:

    .. code-block:: bash

        salt 'lb-s*' state.single haproxy_tier.configured site-lb tier=site
        salt lb-primary state.single haproxy_tier.configured primary-lb tier=primary test=True
    """
    return _config_managed(
        name,
        f"HAProxy {tier}",
        "HAProxy",
        start,
        plan="haproxy_tier.plan",
        apply="haproxy_tier.apply",
        args={"tier": tier, "site": site},
        reload_changes=lambda reloaded: {
            "worker_pid": {"old": reloaded["old_worker_pid"], "new": reloaded["worker_pid"]}
        },
        validate="haproxy_tier.validate",
    )


def _group_args(name, tier):
    return {"site": name} if tier == "primary" else {"farm": name}


def _admin_states(name, server, tier, socket):
    groups = __salt__["haproxy_tier.servers"](tier=tier, socket=socket)
    if name not in groups:
        raise SaltException(f"no {'site' if tier == 'primary' else 'farm'} {name!r} in HAProxy")
    members = groups[name]
    if server is not None:
        if server not in members:
            raise SaltException(f"no server {server!r} in {name}")
        members = {server: members[server]}
    return {
        srv: info["admin"] if info.get("pick_admin", "ready") == "ready" else "maint"
        for srv, info in members.items()
    }


def _admin_managed(name, server, tier, socket, want, already, would, act):
    """The servers of ``name`` (or its ``server``) in admin state ``want`` (``ready`` or
    ``maint``). ``would`` is the test-mode comment with ``{}`` for the servers to move;
    ``act(todo)`` moves them through the execution module and returns the comment."""
    ret = _ret(name, already)
    try:
        states = _admin_states(name, server, tier, socket)
        todo = sorted(srv for srv, state in states.items() if state != want)
        if not todo:
            return ret
        changes = {srv: {"old": states[srv], "new": want} for srv in todo}
        if __opts__["test"]:
            ret["result"] = None
            ret["comment"] = would.format(", ".join(todo))
            ret["changes"] = changes
            return ret
        comment = act(todo)
    except SaltException as exc:
        ret["result"] = False
        ret["comment"] = str(exc)
        return ret
    ret["changes"] = changes
    ret["comment"] = comment
    return ret


def drained(name, server=None, tier="site", timeout=60, socket=None):
    """
    The farm ``name`` (a site with ``tier: primary``), or its ``server``, is drained:
    no new requests, running sessions finished (or ``timeout`` passed), then in maintenance.

    Its sticky clients move to another farm of the site without a failed request.
    Fires ``webfarm/haproxy/drain/done``.

    CLI Example:

    .. code-block:: bash

        salt lb-s1 state.single haproxy_tier.drained f1 timeout=120
    """

    def drain(todo):
        done = __salt__["haproxy_tier.drain"](
            server=server, timeout=timeout, tier=tier, socket=socket, **_group_args(name, tier)
        )
        if done["timed_out"]:
            return (
                f"Drained {', '.join(todo)}: timed out after {timeout}s with "
                f"{done['sessions_left']} session(s) still running, now in maint"
            )
        return f"Drained {', '.join(todo)} in {done['seconds']}s"

    return _admin_managed(
        name,
        server,
        tier,
        socket,
        want="maint",
        already=f"{name} is already drained (maint)",
        would="Would have drained {}",
        act=drain,
    )


def ready(name, server=None, tier="site", socket=None):
    """
    The farm ``name`` (a site with ``tier: primary``), or its ``server``, takes traffic.

    Fires ``webfarm/haproxy/ready/done`` when something changed.

    CLI Example:

    .. code-block:: bash

        salt lb-s1 state.single haproxy_tier.ready f1
    """

    def put_back(todo):
        __salt__["haproxy_tier.ready"](
            server=server, tier=tier, socket=socket, **_group_args(name, tier)
        )
        return f"Put {', '.join(todo)} back in service"

    return _admin_managed(
        name,
        server,
        tier,
        socket,
        want="ready",
        already=f"{name} is already ready",
        would="Would have put {} back in service",
        act=put_back,
    )


def vrrp_configured(name, start=True):
    """
    This LB's keepalived.conf, rendered from the topology, is in place and keepalived runs
    it: one VRRP instance per tier of this minion with a ``vip``, tracking the local HAProxy.

    The candidate is checked with ``keepalived --config-test`` before it replaces the file;
    a running keepalived is reloaded (SIGHUP), a stopped one started when ``start``. The
    VRRPv2 password (pillar ``haproxy:vrrp:auth_pass``) is masked in every diff and comment;
    a password with VRRPv3 (the default) is an error, nothing changed.

    CLI Example:

    .. code-block:: bash

        salt 'lb-*' state.single haproxy_tier.vrrp_configured vrrp
    """
    return _config_managed(
        name,
        "keepalived",
        "keepalived",
        start,
        plan="haproxy_tier.vrrp_plan",
        apply="haproxy_tier.vrrp_apply",
        args={},
        reload_changes=lambda reloaded: {"reloaded": True},
    )


def sysctl_tuned(name, netns=None, persist=None):
    """
    The LB host's connection-rate sysctls (pillar ``haproxy:sysctl`` over the documented
    defaults, ``sysctl`` in ``salt/states/haproxy/defaults.yaml``) are set, and persisted to
    ``persist``.

    netns
        Apply inside this network namespace (tests, the demo).
    persist
        A file such as ``/etc/sysctl.d/60-webfarm-haproxy.conf`` (None: runtime only).

    CLI Example:

    .. code-block:: bash

        salt 'lb-*' state.single haproxy_tier.sysctl_tuned lb persist=/etc/sysctl.d/60-webfarm-haproxy.conf
    """
    ret = _ret(name, "LB sysctls are already as wanted")
    try:
        plan = __salt__["haproxy_tier.sysctl_plan"](netns=netns)
        if plan["required_missing"]:
            ret["result"] = False
            ret["comment"] = f"this kernel has no {', '.join(plan['required_missing'])}"
            return ret
        skipped = ""
        if plan["missing"]:
            skipped = f" ({', '.join(plan['missing'])} not present: module not loaded, bypassed)"
        persist_stale = False
        if persist:
            persist_stale = __salt__["haproxy_tier.sysctl_persist_stale"](persist, netns=netns)
        if not plan["changes"] and not persist_stale:
            ret["comment"] += skipped
            return ret
        if __opts__["test"]:
            ret["result"] = None
            ret["changes"] = dict(plan["changes"])
            if persist_stale:
                ret["changes"]["persist"] = persist
            ret["comment"] = f"Would have set {len(plan['changes'])} sysctl(s)" + (
                f" and written {persist}" if persist_stale else ""
            )
            ret["comment"] += skipped
            return ret
        done = __salt__["haproxy_tier.sysctl_apply"](netns=netns, persist=persist)
    except SaltException as exc:
        ret["result"] = False
        ret["comment"] = str(exc)
        return ret
    ret["changes"] = dict(done["changes"])
    if done["persisted"]:
        ret["changes"]["persist"] = persist
    ret["comment"] = f"Set {len(done['changes'])} sysctl(s)" + (
        f" and wrote {persist}" if done["persisted"] else ""
    )
    ret["comment"] += skipped
    return ret
