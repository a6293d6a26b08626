"""Rolling upgrades driven from the master (``salt-run state.orchestrate upgrade`` calls
:func:`rollout` through ``salt.runner``; sync it to the master with ``salt-run saltutil.sync_all``).

The waves come from the live grains (``webfarm:role/site/farm/member``) of the minions, see
``webfarm_upgrade``. Each step talks to the site LB minions (``haproxy_tier``) and to the
farm members (``farm``) with ordinary Salt jobs, one phase at a time:

- ``app``: drain the farm -> ``farm.release`` on its members -> ``farm.health`` (HTTP, version)
  -> ``farm.flush_cache`` -> ready the farm.
- ``os``: drain the member -> ``farm.upgrade_os`` -> ``farm.health`` -> ready the member.
- ``os-online``: ``farm.upgrade_os`` -> ``farm.health``, nothing drained.

A failed step stops the rollout (after ``max_failures`` tolerated ones) and leaves the failed
farm/member drained; ``webfarm/upgrade/failed`` is fired with the step, the error and which
farm runs which version. Events: ``webfarm/upgrade/step/done``, ``webfarm/upgrade/rollout/done``.
"""

import contextvars
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

import salt.client
import salt.exceptions
import webfarm_events
import webfarm_upgrade

log = logging.getLogger(__name__)

__virtualname__ = "upgrade"

FAILED_TAG = "webfarm/upgrade/failed"


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


def _call(minions, fun, arg=(), kwarg=None, timeout=120, latency=None):
    """Run ``fun`` on ``minions``; return ``{minion: return}`` or raise StepFailed."""
    started = time.monotonic()
    ret = _client().cmd(
        list(minions),
        fun,
        arg=list(arg),
        kwarg=kwarg or {},
        tgt_type="list",
        timeout=timeout,
        full_return=True,
    )
    if latency is not None:
        latency.append({"fun": fun, "minions": len(minions), "seconds": time.monotonic() - started})
    missing = sorted(set(minions) - set(ret))
    if missing:
        raise StepFailed(f"{fun}: no answer from {', '.join(missing)} within {timeout}s")
    errors = [
        f"{minion}: {data.get('ret')}"
        for minion, data in sorted(ret.items())
        if not isinstance(data, dict) or data.get("retcode", 0) != 0
    ]
    if errors:
        raise StepFailed(f"{fun} failed: " + "; ".join(str(e) for e in errors))
    return {minion: data["ret"] for minion, data in ret.items()}


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


def _grains(tgt, timeout):
    ret = _client().cmd(tgt, "grains.get", arg=["webfarm"], tgt_type="grain", timeout=timeout)
    return {minion: {"webfarm": value} for minion, value in (ret or {}).items()}


def _site_lbs(grains):
    lbs = {}
    for minion, data in sorted(grains.items()):
        webfarm = data.get("webfarm") or {}
        if isinstance(webfarm, dict) and webfarm.get("role") == "lb-site" and webfarm.get("site"):
            lbs.setdefault(str(webfarm["site"]), []).append(minion)
    return lbs


def _drain(lbs, step, timeout, latency):
    targets = (
        [{"farm": step["farm"]}]
        if len(step["drain"]) > 1
        else [{"farm": step["farm"], "server": name} for name in step["drain"]]
    )
    seconds = 0.0
    for kwarg in targets:
        out = _call(
            lbs,
            "haproxy_tier.drain",
            kwarg={**kwarg, "timeout": timeout},
            timeout=timeout + 60,
            latency=latency,
        )
        seconds = max(
            [seconds] + [float(r.get("seconds", 0)) for r in out.values() if isinstance(r, dict)]
        )
    return seconds


def _ready(lbs, step, latency):
    targets = (
        [{"farm": step["farm"]}]
        if len(step["drain"]) > 1
        else [{"farm": step["farm"], "server": name} for name in step["drain"]]
    )
    for kwarg in targets:
        _call(lbs, "haproxy_tier.ready", kwarg=kwarg, latency=latency)


def _health(members, version, timeout, latency):
    kwarg = {}
    if timeout is not None:
        kwarg["timeout"] = timeout
    if version is not None:
        kwarg["version"] = version
    wait = (timeout if timeout is not None else 120) + 60
    out = _call(members, "farm.health", kwarg=kwarg, timeout=wait, latency=latency)
    bad = [
        f"{m}: {r.get('error') or r.get('status')} ({r.get('url')})"
        for m, r in sorted(out.items())
        if not r.get("ok")
    ]
    if bad:
        raise StepFailed("health check failed: " + "; ".join(bad))
    return max(float(r.get("seconds", 0)) for r in out.values()), {
        m: r.get("version") for m, r in out.items()
    }


def _run_step(step, opts, lbs, settings, latency):
    """One farm (app) or member (os) through its phases; returns (timings, versions)."""
    members = [m["id"] for m in step["members"]]
    timings = {}
    site_lbs = lbs.get(step["site"], [])
    if step["drain"]:
        if not site_lbs:
            raise StepFailed(
                f"site {step['site']} has no lb-site minion to drain {step['farm']} in"
            )
        started = time.monotonic()
        timings["drain_wait"] = _drain(site_lbs, step, settings["drain_timeout"], latency)
        timings["drain"] = time.monotonic() - started
    started = time.monotonic()
    if opts["kind"] == "app":
        kwarg = {"version": opts["version"]}
        if settings.get("source"):
            kwarg["source"] = settings["source"]
        _call(
            members, "farm.release", kwarg=kwarg, timeout=settings["job_timeout"], latency=latency
        )
    else:
        kwarg = {"pkgs": settings["pkgs"]} if settings.get("pkgs") else {}
        _call(
            members,
            "farm.upgrade_os",
            kwarg=kwarg,
            timeout=settings["job_timeout"],
            latency=latency,
        )
    timings["upgrade"] = time.monotonic() - started
    started = time.monotonic()
    timings["health_wait"], versions = _health(
        members,
        opts["version"] if opts["kind"] == "app" else None,
        settings["health_timeout"],
        latency,
    )
    timings["health"] = time.monotonic() - started
    if opts["kind"] == "app":
        started = time.monotonic()
        _call(members[:1], "farm.flush_cache", latency=latency)
        timings["flush"] = time.monotonic() - started
    if step["drain"]:
        started = time.monotonic()
        _ready(site_lbs, step, latency)
        timings["ready"] = time.monotonic() - started
    return {k: round(v, 3) for k, v in timings.items()}, versions


def _versions(members):
    try:
        ret = _client().cmd(list(members), "farm.version", tgt_type="list", timeout=30)
    except Exception as exc:  # noqa: BLE001 - the report must still be returned
        log.warning("cannot collect versions: %s", exc)
        return {}
    return {m: v for m, v in (ret or {}).items() if v is None or isinstance(v, str)}


def rollout(
    kind,
    version=None,
    sites=None,
    farms=None,
    batch=1,
    max_failures=0,
    source=None,
    pkgs=None,
    drain_timeout=60,
    health_timeout=None,
    job_timeout=600,
    tgt="webfarm:role:*",
):
    """
    Roll an upgrade over the farms, wave by wave; return the report.

    kind
        ``app`` (a farm at a time, needs ``version``), ``os`` (member #1 of every farm, then
        #2, ...) or ``os-online`` (everywhere at once, nothing drained).
    version
        The release to deploy (``app``).
    sites, farms
        Limit the rollout (lists or comma-separated; a farm is ``f1`` or ``s1/f1``).
    batch
        Farms upgraded at once (``app``; never two of one site). Default 1.
    max_failures
        Failed steps tolerated before the rollout stops. Default 0.
    source
        rsync source passed to ``farm.release`` (default: each member's pillar
        ``upgrade:source``).
    pkgs
        Packages for ``os``/``os-online`` (default: each member's pillar ``upgrade:pkgs``).
    drain_timeout
        Seconds HAProxy waits for a drained server's sessions to end (default 60).
    health_timeout
        Seconds a member's health check keeps trying (default: its pillar
        ``upgrade:health_timeout``, else 30).

    CLI Example:

    .. code-block:: bash

        salt-run upgrade.rollout app version=2.0.1 sites=s1
        salt-run state.orchestrate upgrade pillar='{"upgrade": {"kind": "app", "version": "2.0.1"}}'
    """
    started = time.monotonic()
    try:
        opts = webfarm_upgrade.options(kind, version, sites, farms, batch, max_failures)
        grains = _grains(tgt, timeout=60)
        farm_map = webfarm_upgrade.farms_from_grains(grains)
        waves = webfarm_upgrade.plan(
            farm_map, opts["kind"], opts["sites"], opts["farms"], opts["batch"]
        )
    except (webfarm_upgrade.PlanError, salt.exceptions.SaltException) as exc:
        __context__["retcode"] = 1
        return {"result": False, "comment": f"cannot plan the {kind} upgrade: {exc}"}
    problems = webfarm_upgrade.check_plan(waves, opts["kind"])
    if problems:
        __context__["retcode"] = 1
        return {"result": False, "comment": "unsafe plan: " + "; ".join(problems)}
    settings = {
        "source": source,
        "pkgs": pkgs,
        "drain_timeout": float(drain_timeout),
        "health_timeout": None if health_timeout is None else float(health_timeout),
        "job_timeout": int(job_timeout),
    }
    lbs = _site_lbs(grains)
    report = webfarm_upgrade.new_report(opts, waves)
    report["latency"] = []
    log.info("%s upgrade: %d wave(s) %s", opts["kind"], len(waves), report["waves"])
    for number, planned in enumerate(waves, 1):
        outcomes, wave = [], []
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
                timings, versions = _run_step(step, opts, lbs, settings, report["latency"])
                return step, True, timings, None, versions
            except StepFailed as exc:
                return step, False, {}, str(exc), {}
            except Exception as exc:  # noqa: BLE001 - a broken step must not lose the report
                log.exception("upgrade step %s/%s", step["site"], step["farm"])
                return step, False, {}, f"{type(exc).__name__}: {exc}", {}

        if len(wave) == 1:
            outcomes.append(run(wave[0]))
        else:
            with ThreadPoolExecutor(max_workers=min(8, len(wave))) as pool:
                futures = [pool.submit(contextvars.copy_context().run, run, step) for step in wave]
                outcomes = [future.result() for future in futures]
        go_on = True
        for step, ok, timings, error, versions in outcomes:
            timings["wave"] = number
            go_on = (
                webfarm_upgrade.record_step(report, step, ok, timings, error, versions) and go_on
            )
            data = {"wave": number, "site": step["site"], "farm": step["farm"], "ok": ok}
            if ok:
                webfarm_events.fire(
                    __salt__, "upgrade", "step", "done", {**data, "timings": timings}
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
            {"kind": opts["kind"], "version": opts["version"], "farms": report["farms"]},
        )
    return report


def notify(data=None, path=None):
    """
    Record a failed upgrade (the ``webfarm/upgrade/failed`` reactor calls this): append one
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
