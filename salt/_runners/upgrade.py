"""Rolling upgrades driven from the master (``salt-run state.orchestrate upgrade`` calls
:func:`rollout` through ``salt.runner``; sync it to the master with ``salt-run saltutil.sync_all``).

The waves come from the live grains (``webfarm:role/site/farm/member``) of the minions that
the master's own pillar topology (``webfarm:topology``, compiled on the master for its own ID,
no minion's grains involved) names, see ``webfarm_upgrade.plan_rollout`` and docs/trust.md; sites upgrade concurrently (one farm per site at a time).
Each farm step is at most three Salt round trips:

1. ``haproxy_tier.drain`` on the site LBs (the farm, or the member for ``os``);
2. ``upgrade.upgrade_step`` on the members: release (or OS packages) + health + release check +
   memcached flush, all in one job; a member whose app is already down is left untouched;
3. ``haproxy_tier.ready`` on the site LBs (a member that was down stays in maint).

A failed step (``on_failure: rollback``, the default) gets one more job,
``upgrade.rollback_step`` (back to the version each member ran, health, memcached flush),
then the farm is readied: no session reached the new version, since the farm was drained.
``on_failure: hold`` leaves it drained. Either way the rollout stops (after ``max_failures``
tolerated failures) and ``webfarm/upgrade/step/failed`` says what was done.

The preprod gate: :func:`preprod` deploys a version to the ``webfarm:role: preprod`` servers,
runs its checks and records the outcome per hw-profile on the master (JSON file, master
option ``webfarm_release_record``, default ``<cachedir>/webfarm/releases-tested.json``) and
fires ``webfarm/upgrade/preprod/done``. :func:`rollout` refuses a version not tested OK on every
hw-profile of the members it would upgrade (``webfarm/upgrade/rollout/refused``) unless ``force``.
Events: ``webfarm/upgrade/step/done``, ``webfarm/upgrade/rollout/done``.
"""

import contextvars
import fcntl
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

import salt.client
import salt.exceptions
import salt.pillar
import salt.utils.args
import salt.utils.data

import webfarm_events
import webfarm_trust
import webfarm_upgrade

log = logging.getLogger(__name__)

__virtualname__ = "upgrade"

FAILED_TAG = webfarm_events.tag("upgrade", "step", "failed")
REFUSED_TAG = webfarm_events.tag("upgrade", "rollout", "refused")
TESTED_TAG = webfarm_events.tag("upgrade", "preprod", "done")


def __virtual__():
    return __virtualname__


class StepFailed(Exception):
    pass


def _client():
    # From the master's config file, as Salt's own runners do: a runner started by the
    # reactor carries opts that the publisher does not authenticate.
    conf_file = __opts__.get("conf_file")
    if conf_file:
        return salt.client.get_local_client(conf_file)
    return salt.client.get_local_client(mopts=__opts__)


def _kw(kwarg):
    return {**kwarg, "__kwarg__": True}


def _call(minions, fun, arg=(), kwarg=None, timeout=120, latency=None):
    """Run ``fun`` on ``minions``; return ``{minion: return}`` or raise StepFailed.

    ``fun`` may be a list of functions (one job running them in order, Salt's compound call)
    with ``kwarg`` the list of their keyword arguments; the return is then
    ``{minion: {fun: return}}``.
    """
    started = time.monotonic()
    if isinstance(fun, list):
        call_arg = [[_kw(k)] for k in kwarg]
        call_kwarg = {}
    else:
        call_arg, call_kwarg = list(arg), kwarg or {}
    ret = _client().cmd(
        list(minions),
        fun,
        arg=call_arg,
        kwarg=call_kwarg,
        tgt_type="list",
        timeout=timeout,
        full_return=True,
    )
    name = "+".join(fun) if isinstance(fun, list) else fun
    if latency is not None:
        latency.append(
            {"fun": name, "minions": len(minions), "seconds": time.monotonic() - started}
        )
    missing = sorted(set(minions) - set(ret))
    if missing:
        raise StepFailed(f"{name}: no answer from {', '.join(missing)} within {timeout}s")

    def failed(data):
        if not isinstance(data, dict):
            return True
        code = data.get("retcode", 0)
        return any(c not in (0, None) for c in code.values()) if isinstance(code, dict) else code

    errors = [
        f"{minion}: {data.get('ret')}" for minion, data in sorted(ret.items()) if failed(data)
    ]
    if errors:
        raise StepFailed(f"{name} failed: " + "; ".join(str(e) for e in errors))
    return {minion: data["ret"] for minion, data in ret.items()}


def _grains(tgt, timeout):
    ret = _client().cmd(tgt, "grains.get", arg=["webfarm"], tgt_type="grain", timeout=timeout)
    return {minion: {"webfarm": value} for minion, value in (ret or {}).items()}


def _master_topology():
    """Pillar ``webfarm:topology`` compiled on the master for the master's own ID, with no
    minion's grains (a minion cannot choose what it says); raises PlanError without one."""
    minion_id = __opts__["id"]
    pillar = salt.pillar.Pillar(
        __opts__, {"id": minion_id}, minion_id, "base", pillarenv=__opts__.get("pillarenv")
    ).compile_pillar()
    # As a minion receives it: ext_pillars such as file_tree give bytes values.
    pillar = salt.utils.data.decode(pillar, keep=True)
    errors = pillar.get("_errors") if isinstance(pillar, dict) else None
    topology = (pillar.get("webfarm") or {}).get("topology") if isinstance(pillar, dict) else None
    if errors or not isinstance(topology, dict):
        raise webfarm_upgrade.PlanError(
            [f"no webfarm:topology in the master's pillar ({minion_id}): {errors or 'missing'}"]
        )
    return topology


def _trusted_grains(grains, topology):
    """The minions' grains, only of the minions ``topology`` names in the role they claim."""
    dropped = webfarm_trust.untrusted(grains, topology)
    if dropped:
        log.warning(
            "upgrade: ignoring %s: not named by the master's webfarm:topology in the role "
            "their grains claim",
            ", ".join(dropped),
        )
    return webfarm_trust.trusted(grains, topology)


def _site_lbs(grains):
    lbs = {}
    for minion, data in sorted(grains.items()):
        webfarm = data.get("webfarm") or {}
        if isinstance(webfarm, dict) and webfarm.get("role") == "lb-site" and webfarm.get("site"):
            lbs.setdefault(str(webfarm["site"]), []).append(minion)
    return lbs


def _lb_target(step):
    """drain/ready keyword arguments: the whole farm (app) or its one member (os)."""
    if len(step["members"]) > 1 or len(step["drain"]) != 1:
        return {"farm": step["farm"]}
    return {"farm": step["farm"], "server": step["drain"][0]}


def _drain(lbs, step, timeout, latency):
    out = _call(
        lbs,
        "haproxy_tier.drain",
        kwarg={**_lb_target(step), "timeout": timeout},
        timeout=int(timeout) + 60,
        latency=latency,
    )
    return max([0.0] + [float(r.get("seconds", 0)) for r in out.values() if isinstance(r, dict)])


def _ready(lbs, step, latency, keep_out=()):
    """Ready the farm/member; servers in ``keep_out`` stay in maint. With some kept out,
    each other server is readied by name, all in one job (Salt's compound call)."""
    if not keep_out:
        _call(lbs, "haproxy_tier.ready", kwarg=_lb_target(step), latency=latency)
        return
    names = [name for name in step["drain"] if name not in keep_out]
    if not names:
        return
    _call(
        lbs,
        ["haproxy_tier.ready"] * len(names),
        kwarg=[{"farm": step["farm"], "server": name} for name in names],
        latency=latency,
    )


def _member_kwarg(opts, settings, version=None):
    kwarg = {}
    if settings.get("health_timeout") is not None:
        kwarg["health_timeout"] = settings["health_timeout"]
    if opts["kind"] == "app":
        kwarg["version"] = version or opts["version"]
        if settings.get("source"):
            kwarg["source"] = settings["source"]
    else:
        kwarg["kind"] = opts["kind"]
        if opts.get("version"):
            kwarg["version"] = opts["version"]
        if settings.get("pkgs"):
            kwarg["pkgs"] = settings["pkgs"]
    return kwarg


def _health_wait(settings):
    return int((settings["health_timeout"] if settings["health_timeout"] is not None else 120) + 60)


def _rollback(members, results, settings, latency):
    """Members back on the version they ran before; returns (ok, action text, details)."""
    groups = webfarm_upgrade.rollback_targets(results, members)
    if None in groups:
        return False, "cannot roll back: no earlier version known; held drained", {}
    kwarg = {}
    if settings.get("health_timeout") is not None:
        kwarg["health_timeout"] = settings["health_timeout"]
    calls = [
        (
            _call,
            group,
            "upgrade.rollback_step",
            (),
            {**kwarg, "version": version},
            _health_wait(settings),
            latency,
        )
        for version, group in sorted(groups.items())
    ]
    try:
        answers = {}
        for part in _parallel(calls):
            answers.update(part)
    except StepFailed as exc:
        return False, f"rollback failed ({exc}); held drained", {}
    bad = [m for m, r in answers.items() if not (isinstance(r, dict) and r.get("ok"))]
    if bad:
        return (
            False,
            f"rollback failed ({webfarm_upgrade.member_error(answers, bad)}); held drained",
            answers,
        )
    versions = ", ".join(sorted(groups))
    return True, f"rolled back to {versions}, memcached flushed, back in service", answers


def _parallel(calls):
    """Run ``[(callable, args...)]`` at once; raise the first StepFailed after all finished."""
    if len(calls) == 1:
        fn, *args = calls[0]
        return [fn(*args)]
    with ThreadPoolExecutor(max_workers=min(8, len(calls))) as pool:
        # Salt's dunders live in context variables: every thread gets a copy of ours.
        futures = [pool.submit(contextvars.copy_context().run, fn, *args) for fn, *args in calls]
    results, errors = [], []
    for future in futures:
        try:
            results.append(future.result())
        except StepFailed as exc:
            errors.append(str(exc))
    if errors:
        raise StepFailed("; ".join(errors))
    return results


def _run_step(step, opts, lbs, settings):
    """One farm (app) or member (os) through its phases.

    Returns ``{"ok", "timings", "versions", "error", "action", "drained", "down",
    "round_trips"}``; a failure is data (with what was done about it), not an exception.
    """
    latency = []
    members = [m["id"] for m in step["members"]]
    timings = {}
    out = {"ok": False, "error": None, "action": None, "drained": False, "down": [], "versions": {}}
    site_lbs = lbs.get(step["site"], [])
    if step["drain"]:
        if not site_lbs:
            out["error"] = f"site {step['site']} has no lb-site minion to drain {step['farm']} in"
            return {**out, "timings": timings, "round_trips": 0, "latency": latency}
        started = time.monotonic()
        try:
            timings["drain_wait"] = _drain(site_lbs, step, settings["drain_timeout"], latency)
        except StepFailed as exc:
            out.update(error=str(exc), drained=True, action="drain failed; held drained")
            return {**out, "timings": timings, "round_trips": len(latency), "latency": latency}
        timings["drain"] = time.monotonic() - started
        out["drained"] = True
    started = time.monotonic()
    try:
        results = _call(
            members,
            "upgrade.upgrade_step",
            kwarg=_member_kwarg(opts, settings),
            timeout=settings["job_timeout"] + _health_wait(settings),
            latency=latency,
        )
    except StepFailed as exc:
        results = {"__error__": str(exc)}
    timings["upgrade_step"] = time.monotonic() - started
    error = results.pop("__error__", None)
    good, down, bad = webfarm_upgrade.classify_members(results)
    bad += [m for m in members if m not in results]
    for phase in ("upgrade", "health_wait", "health", "flush"):
        values = [
            float((r.get("timings") or {}).get(phase, 0))
            for r in results.values()
            if isinstance(r, dict)
        ]
        if values:
            timings[phase] = max(values)
    out["versions"] = {
        m: r.get("version") for m, r in results.items() if isinstance(r, dict) and r.get("ok")
    }
    out["down"] = down
    keep_out = (
        [
            webfarm_upgrade.server_name(step["farm"], m["index"])
            for m in step["members"]
            if m["id"] in down
        ]
        if step["drain"]
        else []
    )
    if not bad and not good:
        # Every member was down before the step: nothing changed; they stay in maint.
        out.update(ok=True, action="every member was down before the step; kept in maint")
        return {
            **out,
            "timings": _rounded(timings),
            "round_trips": len(latency),
            "latency": latency,
        }
    if bad:
        out["error"] = error or webfarm_upgrade.member_error(results, bad)
        if opts["on_failure"] == "hold" or not step["drain"] or opts["kind"] != "app":
            action = "held drained" if step["drain"] else "nothing drained"
            out.update(action=action, drained=bool(step["drain"]))
            return {
                **out,
                "timings": _rounded(timings),
                "round_trips": len(latency),
                "latency": latency,
            }
        started = time.monotonic()
        ok, action, answers = _rollback(
            [m for m in members if m not in down], results, settings, latency
        )
        timings["rollback"] = time.monotonic() - started
        out["action"] = action
        out["rollback"] = {
            m: {"version": r.get("version"), "ok": r.get("ok"), "error": r.get("error")}
            for m, r in answers.items()
            if isinstance(r, dict)
        }
        out["versions"] = {m: r.get("version") for m, r in answers.items() if isinstance(r, dict)}
        if not ok:
            return {
                **out,
                "timings": _rounded(timings),
                "round_trips": len(latency),
                "latency": latency,
            }
    else:
        out["ok"] = True
    if step["drain"]:
        started = time.monotonic()
        try:
            _ready(site_lbs, step, latency, keep_out)
            out["drained"] = False
        except StepFailed as exc:
            out.update(ok=False, error=f"{out['error'] + '; ' if out['error'] else ''}{exc}")
            out["action"] = (out["action"] or "upgraded") + "; ready failed, still drained"
        timings["ready"] = time.monotonic() - started
    return {**out, "timings": _rounded(timings), "round_trips": len(latency), "latency": latency}


def _rounded(timings):
    return {k: round(v, 3) for k, v in timings.items()}


def _versions(members):
    try:
        ret = _client().cmd(list(members), "upgrade.version", tgt_type="list", timeout=30)
    except Exception as exc:  # noqa: BLE001 - the report must still be returned
        log.warning("cannot collect versions: %s", exc)
        return {}
    return {m: v for m, v in (ret or {}).items() if v is None or isinstance(v, str)}


# ----------------------------------------------------------------------------- the record


def _record_path():
    path = __opts__.get("webfarm_release_record")
    if not path:
        path = os.path.join(
            __opts__.get("cachedir", "/var/cache/salt/master"), "webfarm", "releases-tested.json"
        )
    return str(path)


def _load_record(path=None):
    path = path or _record_path()
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise salt.exceptions.CommandExecutionError(
            f"release record {path} is unreadable ({exc}): fix or move it"
        ) from exc
    return data if isinstance(data, dict) else {}


def _update_record(update):
    """Apply ``update(record) -> record`` under a lock; write atomically; return the path."""
    path = _record_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "a", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record = update(_load_record(path))
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=1, sort_keys=True)
        os.replace(tmp, path)
    return path


def tested(kind="app", version=None):
    """
    Show the preprod record of the master: every tested release (or one) with its outcome
    per hw-profile.

    CLI Example:

    .. code-block:: bash

        salt-run upgrade.tested
        salt-run upgrade.tested version=2.1.0
    """
    record = _load_record()
    if version is None:
        return {"path": _record_path(), "releases": record}
    key = webfarm_upgrade.release_key(kind, version)
    return {
        "path": _record_path(),
        "release": key,
        "profiles": (record.get(key) or {}).get("profiles", {}),
    }


def preprod(
    kind="app",
    version=None,
    source=None,
    pkgs=None,
    health_timeout=None,
    job_timeout=600,
    tgt="webfarm:role:preprod",
):
    """
    Test a release on the preproduction servers (grain ``webfarm:role: preprod``, one per
    hw-profile, each named ``preprod`` by the master's ``webfarm:topology``): deploy it (``upgrade.upgrade_step``: release or OS packages, HTTP health, the
    release's check command from pillar), record the outcome per hw-profile on the master and
    fire ``webfarm/upgrade/preprod/done`` with it. A production rollout needs ``ok`` on every
    hw-profile its members use.

    CLI Example:

    .. code-block:: bash

        salt-run upgrade.preprod version=2.1.0
        salt-run state.orchestrate upgrade.preprod pillar='{"upgrade": {"kind": "app", "version": "2.1.0"}}'
    """
    try:
        opts = webfarm_upgrade.options(kind, version)
        if opts["version"] is None:
            raise webfarm_upgrade.PlanError([f"a {kind} test needs a version (a release label)"])
        grains = _trusted_grains(_grains(tgt, timeout=60), _master_topology())
        hosts = webfarm_upgrade.preprod_hosts(grains)
    except (webfarm_upgrade.PlanError, salt.exceptions.SaltException) as exc:
        __context__["retcode"] = 1
        return {"result": False, "comment": f"cannot test {kind} {version} on preprod: {exc}"}
    started = time.monotonic()
    settings = {"source": source, "pkgs": pkgs, "health_timeout": health_timeout}
    kwarg = {**_member_kwarg(opts, settings), "flush": False, "precheck": False}
    minions = sorted(hosts.values())
    try:
        results = _call(
            minions,
            "upgrade.upgrade_step",
            kwarg=kwarg,
            timeout=int(job_timeout) + _health_wait(settings),
        )
    except StepFailed as exc:
        results = {m: {"ok": False, "error": str(exc)} for m in minions}
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    entries = {}
    for profile, minion in sorted(hosts.items()):
        result = results.get(minion) if isinstance(results.get(minion), dict) else {}
        entries[profile] = {
            "ok": bool(result.get("ok")),
            "minion": minion,
            "time": stamp,
            "error": result.get("error"),
            "health": (result.get("health") or {}).get("status"),
            "check": (result.get("check") or {}).get("argv"),
        }

    def update(record):
        for profile, entry in entries.items():
            record = webfarm_upgrade.record_tested(
                record, opts["kind"], opts["version"], profile, entry
            )
        return record

    path = _update_record(update)
    ok = all(e["ok"] for e in entries.values())
    payload = {
        "kind": opts["kind"],
        "version": opts["version"],
        "ok": ok,
        "profiles": entries,
        "record": path,
    }
    __salt__["event.send"](TESTED_TAG, data=payload)
    failed = {p: e["error"] for p, e in entries.items() if not e["ok"]}
    comment = (
        f"{opts['kind']} {opts['version']} tested OK on preprod for {', '.join(sorted(entries))}"
        if ok
        else f"{opts['kind']} {opts['version']} FAILED on preprod: "
        + "; ".join(f"{p}: {e}" for p, e in sorted(failed.items()))
    )
    if not ok:
        __context__["retcode"] = 1
    return {
        **payload,
        "result": ok,
        "comment": f"{comment} (recorded in {path})",
        "seconds": round(time.monotonic() - started, 3),
    }


def _gate(opts, grains, waves):
    """None when the rollout may go on, else the refusal comment; sets ``forced`` text."""
    if opts["version"] is None:
        return None, None
    members = [m["id"] for wave in waves for step in wave for m in step["members"]]
    profiles = webfarm_upgrade.hw_profiles(grains, members)
    untested = webfarm_upgrade.untested_profiles(
        _load_record(), opts["kind"], opts["version"], profiles
    )
    if not untested:
        return None, None
    comment = webfarm_upgrade.gate_comment(opts["kind"], opts["version"], untested)
    if opts["force"]:
        return None, "untested on " + ", ".join(f"{p} ({w})" for p, w in sorted(untested.items()))
    return comment, None


#: How a rollout runs, beside its plan options (``webfarm_upgrade.OPTIONS``).
RUN_SETTINGS = {
    "source": None,
    "pkgs": None,
    "drain_timeout": 60,
    "health_timeout": None,
    "job_timeout": 600,
    "tgt": "webfarm:role:*",
}


def _run_settings(run):
    try:
        return {
            "source": run["source"],
            "pkgs": run["pkgs"],
            "drain_timeout": float(run["drain_timeout"]),
            "health_timeout": None
            if run["health_timeout"] is None
            else float(run["health_timeout"]),
            "job_timeout": int(run["job_timeout"]),
        }
    except (TypeError, ValueError):
        raise webfarm_upgrade.PlanError(
            ["drain_timeout, health_timeout and job_timeout must be numbers"]
        ) from None


def rollout(kind, version=None, **kwargs):
    """
    Roll an upgrade over the farms, wave by wave; return the report. The keyword arguments
    are the plan options below (defaults: ``webfarm_upgrade.OPTIONS``) and how it runs
    (``source`` to ``tgt``, defaults: ``RUN_SETTINGS``); any other name is refused.

    kind
        ``app`` (a farm at a time, needs ``version``), ``os`` (member #1 of every farm, then
        #2, ...) or ``os-online`` (everywhere at once, nothing drained).
    version
        The release to deploy (``app``); for ``os`` an optional label of the package set,
        gated like an app version.
    sites, farms
        Limit the rollout (lists or comma-separated; a farm is ``f1`` or ``s1/f1``).
    batch
        Farms upgraded at once (``app``; never two of one site). Default: the number of sites
        (every site upgrades one farm at a time, all sites concurrently).
    max_failures
        Failed steps tolerated before the rollout stops. Default 0.
    on_failure
        ``rollback`` (default): the failed farm goes back to the version it ran, health is
        checked, its memcached flushed and it is readied. ``hold``: it stays drained.
    force
        Roll out a version not tested OK on preprod for every hw-profile (reported).
    source
        rsync source passed to ``upgrade.release`` (default: each member's pillar
        ``upgrade:source``).
    pkgs
        Packages for ``os``/``os-online`` (default: each member's pillar ``upgrade:pkgs``).
    drain_timeout
        Seconds HAProxy waits for a drained server's sessions to end (default 60).
    health_timeout
        Seconds a member's health check keeps trying (default: its pillar
        ``upgrade:health_timeout``, else 30).
    job_timeout
        Seconds a member's step job may take (default 600).
    tgt
        Grain target of the minions whose grains make the plan (default ``webfarm:role:*``;
        only the minions the master's topology names count).

    CLI Example:

    .. code-block:: bash

        salt-run upgrade.rollout app version=2.0.1 sites=s1
        salt-run state.orchestrate upgrade pillar='{"upgrade": {"kind": "app", "version": "2.0.1"}}'
    """
    started = time.monotonic()
    given = salt.utils.args.clean_kwargs(**kwargs)
    run = {name: given.pop(name, default) for name, default in RUN_SETTINGS.items()}
    try:
        opts = webfarm_upgrade.options(kind, version, **given)
        settings = _run_settings(run)
        topology = _master_topology()
        grains = _trusted_grains(_grains(run["tgt"], timeout=60), topology)
        before = None
        if opts["kind"] == "app":
            # Each site's farms go oldest version first (a rolled-back farm before the rest).
            farm_map = webfarm_upgrade.production_farms(grains, topology)
            before = _versions(
                [m for s in farm_map.values() for f in s.values() for m in f.values()]
            )
        farm_map, waves = webfarm_upgrade.plan_rollout(grains, opts, topology, versions=before)
    except (webfarm_upgrade.PlanError, salt.exceptions.SaltException) as exc:
        __context__["retcode"] = 1
        return {"result": False, "comment": f"cannot plan the {kind} upgrade: {exc}"}
    problems = webfarm_upgrade.check_plan(waves, opts["kind"])
    if problems:
        __context__["retcode"] = 1
        return {"result": False, "comment": "unsafe plan: " + "; ".join(problems)}
    try:
        refusal, forced = _gate(opts, grains, waves)
    except salt.exceptions.SaltException as exc:
        __context__["retcode"] = 1
        return {"result": False, "comment": f"cannot check the preprod record: {exc}"}
    if refusal:
        __context__["retcode"] = 1
        __salt__["event.send"](
            REFUSED_TAG,
            data={"kind": opts["kind"], "version": opts["version"], "comment": refusal},
        )
        return {"result": False, "refused": True, "comment": refusal, "steps": []}
    lbs = _site_lbs(grains)
    report = webfarm_upgrade.new_report(opts, waves)
    report["forced"] = forced or False
    report["latency"] = []
    log.info("%s upgrade: %d wave(s) %s", opts["kind"], len(waves), report["waves"])
    for number, planned in enumerate(waves, 1):
        wave = []
        for step in planned:
            reason = webfarm_upgrade.blocker(report, step)
            if reason:
                webfarm_upgrade.skip_step(report, step, reason)
            else:
                wave.append(step)
        if not wave:
            continue

        def run(step):
            try:
                return step, _run_step(step, opts, lbs, settings)
            except Exception as exc:  # noqa: BLE001 - a broken step must not lose the report
                log.exception("upgrade step %s/%s", step["site"], step["farm"])
                return step, {
                    "ok": False,
                    "error": f"{type(exc).__name__}: {exc}",
                    "action": "unexpected error; state unknown",
                    "drained": True,
                    "down": [],
                    "versions": {},
                    "timings": {},
                    "round_trips": 0,
                    "latency": [],
                }

        if len(wave) == 1:
            outcomes = [run(wave[0])]
        else:
            with ThreadPoolExecutor(max_workers=min(16, len(wave))) as pool:
                futures = [pool.submit(contextvars.copy_context().run, run, step) for step in wave]
                outcomes = [future.result() for future in futures]
        go_on = True
        for step, out in outcomes:
            timings = {**out["timings"], "wave": number, "round_trips": out["round_trips"]}
            report["latency"] += out["latency"]
            go_on = (
                webfarm_upgrade.record_step(
                    report,
                    step,
                    out["ok"],
                    timings,
                    out["error"],
                    out["versions"],
                    action=out["action"],
                    drained=out["drained"],
                    down=out["down"],
                )
                and go_on
            )
            if out.get("rollback"):
                report["rollbacks"].append(
                    {
                        "site": step["site"],
                        "farm": step["farm"],
                        "members": out["rollback"],
                        "action": out["action"],
                    }
                )
            data = {"wave": number, "site": step["site"], "farm": step["farm"], "ok": out["ok"]}
            if out["ok"]:
                webfarm_events.fire(
                    __salt__,
                    "upgrade",
                    "step",
                    "done",
                    {**data, "timings": timings, "skipped_members": out["down"]},
                )
        if not go_on:
            break
    members = [m for s in farm_map.values() for f in s.values() for m in f.values()]
    report["versions"] = _versions(members)
    report["farms"] = webfarm_upgrade.farm_versions(report, farm_map)
    report["seconds"] = round(time.monotonic() - started, 3)
    report["comment"] = webfarm_upgrade.summary(report)
    if report["failures"]:
        failed = report["failures"][-1]
        __salt__["event.send"](
            FAILED_TAG,
            data={
                "kind": opts["kind"],
                "version": opts["version"],
                "site": failed["site"],
                "farm": failed["farm"],
                "members": failed["members"],
                "error": failed.get("error"),
                "action": failed.get("action"),
                "on_failure": opts["on_failure"],
                "drained": failed.get("drained"),
                "rollbacks": report["rollbacks"],
                "stopped": report["stopped"],
                "farms": report["farms"],
                "comment": report["comment"],
            },
        )
    if not report["result"]:
        __context__["retcode"] = 1
    else:
        webfarm_events.fire(
            __salt__,
            "upgrade",
            "rollout",
            "done",
            {
                "kind": opts["kind"],
                "version": opts["version"],
                "farms": report["farms"],
                "forced": report["forced"],
                "skipped_members": report["skipped_members"],
            },
        )
    return report


def notify(data=None, path=None):
    """
    Record a failed upgrade (the ``webfarm/upgrade/step/failed`` reactor calls this): append one
    JSON line to ``path`` (default master option ``webfarm_upgrade_notify`` or
    ``/var/log/salt/webfarm-upgrade-failed.log``) and log it at ERROR level.

    CLI Example:

    .. code-block:: bash

        salt-run upgrade.notify data='{"farm": "f1", "error": "health check failed"}'
    """
    path = (
        path or __opts__.get("webfarm_upgrade_notify") or "/var/log/salt/webfarm-upgrade-failed.log"
    )
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": data or {}}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True, default=str) + "\n")
    log.error("webfarm upgrade failed: %s", json.dumps(data, default=str))
    return {"path": path, "recorded": True}
