"""Rolling upgrades: topology from grains, wave planning, release names, reports (no Salt here).

Three kinds of upgrade (pillar ``upgrade:kind``):

- ``app``: a whole farm at a time (drain in its site LB, upgrade, flush its memcached, ready);
  a wave holds at most ``batch`` farms and never two farms of one site.
- ``os``: disruptive OS packages, one member of every farm at a time: wave 1 is member #1 of
  every selected farm, wave 2 member #2, ... so at most one member per farm is ever down.
- ``os-online``: non-disruptive OS packages, everywhere in one wave, nothing drained.

Sites upgrade concurrently by default (``batch`` = number of selected sites). A version must
have been tested OK on the preproduction server of every hardware profile production uses
(:func:`untested_profiles` over the record :func:`record_tested` keeps) unless forced.

A step is ``{"site", "farm", "members": [{"index", "id"}, ...], "drain": [server names]}``.
"""

import json
import re

import webfarm_topology
import webfarm_trust
import webfarm_values

KINDS = ("app", "os", "os-online")
ON_FAILURE = ("rollback", "hold")
VERSION_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]{0,63}$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")


class PlanError(ValueError):
    """The upgrade cannot be planned; ``errors`` lists every problem found."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__("; ".join(self.errors))


def check_version(version):
    """Return ``version`` as a string if it is a safe release name, else raise ValueError."""
    text = str(version) if isinstance(version, str | int | float) else None
    if text is None or not VERSION_RE.match(text) or text in (".", ".."):
        raise ValueError(
            f"bad version {version!r}: 1-64 characters of letters, digits, '.', '_', '+', '-'"
            " starting with a letter or digit"
        )
    return text


def version_key(version):
    """Sort key comparing dotted versions numerically (``2.0.10`` > ``2.0.9``)."""
    parts = re.split(r"[.+_-]", str(version))
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def server_name(farm, index):
    """The site-tier HAProxy server name of member ``index`` of ``farm``."""
    return f"{farm}_m{index}"


def farms_from_grains(grains):
    """``{minion: {"webfarm": {...}}}`` -> ``{site: {farm: {index: minion}}}`` of web servers.

    ``grains`` is what ``grains.item webfarm`` (or the mine) returns for the targeted minions;
    minions of other roles are ignored. Raises :class:`PlanError` on incomplete or duplicate
    web servers.
    """
    if not isinstance(grains, dict):
        raise PlanError([f"grains must be a mapping of minion -> grains, got {grains!r}"])
    errors = []
    farms = {}
    for minion in sorted(grains):
        data = grains[minion]
        webfarm = data.get("webfarm") if isinstance(data, dict) else None
        if not isinstance(webfarm, dict) or webfarm.get("role") != "web":
            continue
        site, farm, member = webfarm.get("site"), webfarm.get("farm"), webfarm.get("member")
        if not site or not farm or member in (None, ""):
            errors.append(f"{minion}: web server without webfarm:site/farm/member grains")
            continue
        try:
            index = int(member)
        except (TypeError, ValueError):
            errors.append(f"{minion}: webfarm:member {member!r} is not an integer")
            continue
        if index < 1:
            errors.append(f"{minion}: webfarm:member must be >= 1, got {index}")
            continue
        members = farms.setdefault(str(site), {}).setdefault(str(farm), {})
        if index in members:
            errors.append(
                f"{minion}: duplicate member {site}/{farm}/#{index} (also {members[index]})"
            )
            continue
        members[index] = minion
    if errors:
        raise PlanError(errors)
    return {
        site: {farm: dict(sorted(m.items())) for farm, m in sorted(site_farms.items())}
        for site, site_farms in sorted(farms.items())
    }


def farms_from_topology(topology):
    """The same shape from pillar ``webfarm:topology`` (member ``id`` = minion id)."""
    if not isinstance(topology, dict) or not isinstance(topology.get("sites"), dict):
        raise PlanError(["topology has no sites"])
    out = {}
    for site, farm, farm_data in sorted(webfarm_topology.farms(topology), key=lambda f: f[:2]):
        members = webfarm_topology.farm_members(farm_data)
        out.setdefault(str(site), {})[str(farm)] = {
            int(number): entry["id"] for number, entry in sorted(members, key=lambda m: int(m[0]))
        }
    return out


def production_farms(grains, topology):
    """The web farms a rollout may touch: ``{site: {farm: {index: minion}}}``.

    ``grains`` is ``{minion: {"webfarm": {...}}}`` from the targeted minions, ``topology``
    pillar ``webfarm:topology`` compiled on the master. This is the one place that turns
    minion-reported grains into the members of a wave, so trust from the master is applied
    here (docs/trust.md): a minion joins only if the topology names it as a web server
    (a farm member, or ``minions: {id: web}``); one that merely claims ``webfarm:role: web``
    is left out. Raises :class:`PlanError` without a topology.
    """
    if not isinstance(topology, dict) or not webfarm_trust.topology_roles(topology):
        raise PlanError(
            ["no master-side topology (pillar webfarm:topology) naming the web servers"]
        )
    return farms_from_grains(webfarm_trust.trusted(grains, topology, role="web"))


def plan_rollout(grains, opts, topology, versions=None):
    """``(farm_map, waves)`` of a rollout with validated ``opts`` (:func:`options`) over the
    web servers ``topology`` names (:func:`production_farms`); ``versions``
    (``{minion: version}``) orders each site's farms oldest first (app)."""
    farm_map = production_farms(grains, topology)
    waves = plan(
        farm_map, opts["kind"], opts["sites"], opts["farms"], opts["batch"], versions=versions
    )
    return farm_map, waves


def _oldest_first(site_farms, versions):
    """A site's farms ordered by the oldest version any of their members runs (then name).

    Draining a farm sends its sessions to the other farms of its site; when those run the
    same or a newer version no session goes back. After a stopped rollout a site is mixed
    (a farm rolled back or never reached): upgrading its oldest farm first keeps that true.
    """

    def oldest(members):
        known = [versions.get(m) for m in members.values()]
        if any(v is None for v in known):
            return (0,)
        return (1, min(version_key(v) for v in known))

    return sorted(site_farms.items(), key=lambda item: (oldest(item[1]), item[0]))


def hw_profiles(grains, minions):
    """``{hw_profile: [minion, ...]}`` of ``minions`` (``unknown`` when the grain is unset)."""
    out = {}
    for minion in sorted(minions):
        webfarm = (grains.get(minion) or {}).get("webfarm") or {}
        profile = webfarm.get("hw_profile") if isinstance(webfarm, dict) else None
        out.setdefault(str(profile or "unknown"), []).append(minion)
    return out


def preprod_hosts(grains):
    """``{hw_profile: minion}`` of the preproduction servers (grain ``webfarm:role: preprod``).

    Raises :class:`PlanError` when a preprod server has no hw_profile or two share one.
    """
    errors, out = [], {}
    for minion in sorted(grains or {}):
        webfarm = (
            (grains[minion] or {}).get("webfarm") if isinstance(grains[minion], dict) else None
        )
        if not isinstance(webfarm, dict) or webfarm.get("role") != "preprod":
            continue
        profile = webfarm.get("hw_profile")
        if not profile or not NAME_RE.match(str(profile)):
            errors.append(f"{minion}: preprod server without a valid webfarm:hw_profile grain")
        elif profile in out:
            errors.append(
                f"{minion}: second preprod server of hw-profile {profile} ({out[profile]})"
            )
        else:
            out[str(profile)] = minion
    if errors:
        raise PlanError(errors)
    if not out:
        raise PlanError(
            ["no preprod server found (grain webfarm:role=preprod, named by webfarm:topology)"]
        )
    return out


def release_key(kind, version):
    """The key of a release in the tested-releases record: ``app:2.1.0``."""
    return f"{kind}:{version}"


def record_tested(record, kind, version, profile, entry):
    """Return ``record`` with the preprod outcome ``entry`` (``{"ok", "minion", ...}``) of
    ``version`` on ``profile``; a newer test of the same profile replaces the older one."""
    record = dict(record or {})
    key = release_key(kind, version)
    release = dict(record.get(key) or {})
    profiles = dict(release.get("profiles") or {})
    profiles[str(profile)] = dict(entry)
    release["profiles"] = profiles
    record[key] = release
    return record


def untested_profiles(record, kind, version, profiles):
    """The hw-profiles of ``profiles`` on which ``version`` was not tested OK, with why."""
    tested = ((record or {}).get(release_key(kind, version)) or {}).get("profiles") or {}
    out = {}
    for profile in sorted(profiles):
        entry = tested.get(profile)
        if not entry:
            out[profile] = "never tested"
        elif not entry.get("ok"):
            out[profile] = f"failed on {entry.get('minion')}: {entry.get('error') or 'not ok'}"
    return out


def gate_comment(kind, version, untested):
    """The refusal of a rollout whose version is not tested on every hw-profile."""
    where = "; ".join(f"{p}: {why}" for p, why in sorted(untested.items()))
    pillar = json.dumps({"upgrade": {"kind": kind, "version": version}})
    return (
        f"refused: {kind} {version} is not tested OK on preprod for hw-profile(s) {where};"
        f" run salt-run state.orchestrate upgrade.preprod pillar='{pillar}' first"
        " (or pass force: true); nothing was drained"
    )


def classify_members(results):
    """Split a farm step's member results (``upgrade.upgrade_step`` returns) into
    ``(ok, down, failed)`` lists of minion ids. ``down``: the app did not answer before the
    upgrade, so nothing was changed on it."""
    ok, down, failed = [], [], []
    for minion, result in sorted(results.items()):
        if isinstance(result, dict) and result.get("ok"):
            ok.append(minion)
        elif isinstance(result, dict) and result.get("down_before"):
            down.append(minion)
        else:
            failed.append(minion)
    return ok, down, failed


def member_error(results, minions):
    """One line naming why ``minions`` failed their step."""
    parts = []
    for minion in minions:
        result = results.get(minion)
        if isinstance(result, dict):
            parts.append(f"{minion}: {result.get('error') or 'failed'}")
        else:
            parts.append(f"{minion}: {result}")
    return "; ".join(parts)


def rollback_targets(results, members):
    """``{version: [minion, ...]}``: the version each member ran before the step (members
    whose result does not say use the farm's most common one; None when nobody knows)."""
    known = {
        m: r.get("before")
        for m, r in results.items()
        if isinstance(r, dict) and r.get("before") is not None
    }
    common = None
    if known:
        counts = {}
        for value in known.values():
            counts[value] = counts.get(value, 0) + 1
        common = max(sorted(counts, key=version_key), key=lambda v: counts[v])
    out = {}
    for minion in members:
        out.setdefault(known.get(minion, common), []).append(minion)
    return out


def _as_list(value, what):
    if value in (None, "", []):
        return None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise PlanError([f"{what} must be a list of names or a comma-separated string"])
    return list(value)


def _plan_error(message):
    return PlanError([message])


def _positive_int(value, what, minimum):
    return webfarm_values.as_int(value, what, minimum, error=_plan_error)


def _flag(value, what):
    return False if value is None else webfarm_values.as_bool(value, what, _plan_error)


#: The rollout options beside ``kind`` and ``version`` and their defaults (``salt-run
#: upgrade.rollout`` takes them as keyword arguments and documents each).
OPTIONS = {
    "sites": None,
    "farms": None,
    "batch": None,
    "max_failures": 0,
    "on_failure": "rollback",
    "force": False,
}


def options(kind, version=None, **given):
    """Validate the rollout options (:data:`OPTIONS` under ``given``); return them normalised
    or raise :class:`PlanError`, which also names an option that is not one.

    ``batch`` None means "one farm of every selected site at once" (see :func:`plan`);
    ``on_failure`` is ``rollback`` (default) or ``hold``; ``force`` skips the preprod gate.
    """
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        raise PlanError([f"unknown option(s) {', '.join(unknown)}: known are {', '.join(OPTIONS)}"])
    chosen = {**OPTIONS, **given}
    sites, farms, batch = chosen["sites"], chosen["farms"], chosen["batch"]
    max_failures, on_failure, force = chosen["max_failures"], chosen["on_failure"], chosen["force"]
    errors = []
    if kind not in KINDS:
        errors.append(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "app" or version is not None:
        try:
            version = check_version(version)
        except ValueError as exc:
            errors.append(str(exc))
    if on_failure in (None, ""):
        on_failure = "rollback"
    if on_failure not in ON_FAILURE:
        errors.append(f"on_failure must be one of {', '.join(ON_FAILURE)}, got {on_failure!r}")
    for check in (
        lambda: _as_list(sites, "sites"),
        lambda: _as_list(farms, "farms"),
        lambda: None if batch in (None, "") else _positive_int(batch, "batch", 1),
        lambda: _positive_int(max_failures, "max_failures", 0),
        lambda: _flag(force, "force"),
    ):
        try:
            check()
        except PlanError as exc:
            errors += exc.errors
    if errors:
        raise PlanError(errors)
    return {
        "kind": kind,
        "version": version,
        "sites": _as_list(sites, "sites"),
        "farms": _as_list(farms, "farms"),
        "batch": None if batch in (None, "") else _positive_int(batch, "batch", 1),
        "max_failures": _positive_int(max_failures, "max_failures", 0),
        "on_failure": on_failure,
        "force": _flag(force, "force"),
    }


def _selected(farm_map, sites, farms):
    """Filter ``farm_map`` by site names and by farm names (``f1`` or ``s1/f1``)."""
    errors = []
    known_sites = set(farm_map)
    for site in sites or []:
        if site not in known_sites:
            errors.append(
                f"site {site!r} has no web servers (known: {', '.join(sorted(known_sites)) or 'none'})"
            )
    known_farms = {f for s in farm_map.values() for f in s} | {
        f"{site}/{f}" for site, s in farm_map.items() for f in s
    }
    for farm in farms or []:
        if farm not in known_farms:
            errors.append(
                f"farm {farm!r} has no web servers (known: {', '.join(sorted(known_farms)) or 'none'})"
            )
    if errors:
        raise PlanError(errors)
    out = {}
    for site, site_farms in farm_map.items():
        if sites and site not in sites:
            continue
        for farm, members in site_farms.items():
            if farms and farm not in farms and f"{site}/{farm}" not in farms:
                continue
            out.setdefault(site, {})[farm] = members
    if not out:
        raise PlanError(["the filters select no farm"])
    return out


def _step(site, farm, members, drain):
    return {
        "site": site,
        "farm": farm,
        "members": [{"index": i, "id": m} for i, m in sorted(members.items())],
        "drain": [server_name(farm, i) for i in sorted(members)] if drain else [],
    }


def plan(farm_map, kind, sites=None, farms=None, batch=None, versions=None):
    """Return the waves (a list of lists of steps) of a rollout over ``farm_map``.

    ``farm_map`` is ``{site: {farm: {index: minion}}}`` (:func:`farms_from_grains`).
    ``batch`` (app) caps the farms of a wave; None = one farm of every selected site.
    ``versions`` (``{minion: version}``, app): each site's farms go oldest version first.
    """
    if not farm_map:
        raise PlanError(["no web servers found (grain webfarm:role=web)"])
    chosen = _selected(farm_map, _as_list(sites, "sites"), _as_list(farms, "farms"))
    if batch is None:
        batch = len(chosen)
    if kind == "os-online":
        return [
            [
                _step(site, farm, members, drain=False)
                for site, s in chosen.items()
                for farm, members in s.items()
            ]
        ]
    if kind == "os":
        depth = max(len(m) for s in chosen.values() for m in s.values())
        waves = []
        for position in range(depth):
            wave = []
            for site, site_farms in chosen.items():
                for farm, members in site_farms.items():
                    indexes = sorted(members)
                    if position < len(indexes):
                        index = indexes[position]
                        wave.append(_step(site, farm, {index: members[index]}, drain=True))
            waves.append(wave)
        return waves
    if kind != "app":
        raise PlanError([f"kind must be one of {', '.join(KINDS)}, got {kind!r}"])
    errors = [
        f"site {site!r} has a single farm: draining it would leave the site without servers"
        for site in chosen
        if len(farm_map[site]) < 2
    ]
    if errors:
        raise PlanError(errors)
    queues = {
        site: _oldest_first(site_farms, versions) if versions else list(site_farms.items())
        for site, site_farms in chosen.items()
    }
    waves = []
    while any(queues.values()):
        wave = []
        # Longest queue first so the rollout takes as few waves as one-farm-per-site allows.
        for site in sorted(queues, key=lambda s: (-len(queues[s]), s)):
            if queues[site] and len(wave) < batch:
                farm, members = queues[site].pop(0)
                wave.append(_step(site, farm, members, drain=True))
        waves.append(wave)
    return waves


def check_plan(waves, kind):
    """Return the rule violations of ``waves`` (empty when the plan is safe)."""
    problems = []
    seen = set()
    for number, wave in enumerate(waves, 1):
        sites = [step["site"] for step in wave]
        if kind == "app" and len(sites) != len(set(sites)):
            problems.append(f"wave {number}: two farms of one site")
        if kind == "os":
            farms = [(step["site"], step["farm"]) for step in wave]
            if len(farms) != len(set(farms)) or any(len(step["members"]) != 1 for step in wave):
                problems.append(f"wave {number}: more than one member of a farm")
        for step in wave:
            for member in step["members"]:
                if member["id"] in seen:
                    problems.append(f"wave {number}: {member['id']} upgraded twice")
                seen.add(member["id"])
    return problems


def new_report(opts, waves):
    """The report a rollout fills in: options, the plan, per-farm versions, steps, failures."""
    return {
        "kind": opts["kind"],
        "version": opts["version"],
        "batch": max(len(w) for w in waves) if opts["batch"] is None else opts["batch"],
        "max_failures": opts["max_failures"],
        "on_failure": opts.get("on_failure", "rollback"),
        "forced": False,
        "waves": [[f"{s['site']}/{s['farm']}" for s in wave] for wave in waves],
        "steps": [],
        "failures": [],
        "skipped": [],
        "skipped_members": [],
        "rollbacks": [],
        "stopped": False,
        "result": True,
        "versions": {},
    }


def record_step(
    report, step, ok, timings, error=None, versions=None, action=None, drained=True, down=()
):
    """Add one finished step to ``report``; return whether the rollout may go on.

    ``action`` says what was done about a failed step (``rolled back to 1.0.0, back in
    service``, ``held drained``); ``drained`` whether the failed farm/member is still out;
    ``down`` the members skipped because they were down before the step.
    """
    entry = {
        "site": step["site"],
        "farm": step["farm"],
        "members": [m["id"] for m in step["members"]],
        "ok": bool(ok),
        "timings": dict(timings),
    }
    if error:
        entry["error"] = error
    if action:
        entry["action"] = action
    if not ok:
        entry["drained"] = bool(drained)
    for minion in down:
        report["skipped_members"].append(
            {
                "site": step["site"],
                "farm": step["farm"],
                "member": minion,
                "reason": "its app did not answer before the upgrade: not upgraded, kept in maint",
            }
        )
    report["steps"].append(entry)
    for minion, version in (versions or {}).items():
        report["versions"][minion] = version
    if not ok:
        report["failures"].append(entry)
        if len(report["failures"]) > report["max_failures"]:
            report["stopped"] = True
            report["result"] = False
    return not report["stopped"]


def blocker(report, step):
    """Why ``step`` must not run because an earlier step failed (tolerated by max_failures).

    A failed farm (app) or member (os) stays drained, so another farm of its site (app) or
    another member of its farm (os) would be a second one out at once: it is skipped.
    """
    for failed in report["failures"]:
        if not failed.get("drained", True):
            continue
        if report["kind"] == "app" and failed["site"] == step["site"]:
            return f"farm {failed['site']}/{failed['farm']} failed and stays drained"
        if report["kind"] == "os" and (failed["site"], failed["farm"]) == (
            step["site"],
            step["farm"],
        ):
            return f"a member of {failed['site']}/{failed['farm']} failed and stays drained"
    return None


def skip_step(report, step, reason):
    """Record a step that was not run."""
    report.setdefault("skipped", []).append(
        {
            "site": step["site"],
            "farm": step["farm"],
            "members": [m["id"] for m in step["members"]],
            "reason": reason,
        }
    )


def farm_versions(report, farm_map):
    """``{"site/farm": version or "mixed: ..." or None}`` from the members' reported versions."""
    out = {}
    for site, site_farms in farm_map.items():
        for farm, members in site_farms.items():
            versions = {report["versions"].get(m) for m in members.values()}
            versions.discard(None)
            if not versions:
                out[f"{site}/{farm}"] = None
            elif len(versions) == 1:
                out[f"{site}/{farm}"] = versions.pop()
            else:
                out[f"{site}/{farm}"] = "mixed: " + ", ".join(sorted(versions, key=version_key))
    return out


def summary(report):
    """One line saying how the rollout ended."""
    done = sum(1 for s in report["steps"] if s["ok"])
    notes = ""
    if report.get("skipped_members"):
        skipped = ", ".join(s["member"] for s in report["skipped_members"])
        notes += f"; skipped (down before their wave, kept in maint): {skipped}"
    if report.get("forced"):
        notes += "; FORCED past the preprod gate: " + report["forced"]
    if report["result"]:
        tail = f", {len(report['failures'])} tolerated failure(s)" if report["failures"] else ""
        return f"{report['kind']} upgrade done: {done} step(s){tail}{notes}"
    failed = report["failures"][-1]
    action = f"; {failed['action']}" if failed.get("action") else ""
    return (
        f"{report['kind']} upgrade stopped at {failed['site']}/{failed['farm']}"
        f" ({', '.join(failed['members'])}): {failed.get('error', 'failed')}{action};"
        f" {done} step(s) done before{notes}"
    )


def pkg_call(os_family, pkgs=None):
    """The Salt ``pkg`` call of an OS upgrade: ``(function, kwargs)``.

    On Gentoo ``binhost="try"`` makes Salt's ebuild provider run ``emerge --getbinpkg``
    (which implies ``--usepkg``), so members install the binary packages built for their
    hardware profile. ``pkgs`` names the packages; without it every package is upgraded.
    """
    if pkgs is not None:
        if isinstance(pkgs, str):
            pkgs = [p.strip() for p in pkgs.split(",") if p.strip()]
        if (
            not isinstance(pkgs, list | tuple)
            or not pkgs
            or not all(isinstance(p, str) and p for p in pkgs)
        ):
            raise ValueError("pkgs must be a non-empty list of package names")
        pkgs = list(pkgs)
    gentoo = str(os_family).lower() == "gentoo"
    if pkgs:
        kwargs = {"pkgs": pkgs, "refresh": False}
        if gentoo:
            kwargs.update(binhost="try", update=True)
        return "pkg.install", kwargs
    kwargs = {"refresh": not gentoo}
    if gentoo:
        kwargs["binhost"] = "try"
    return "pkg.upgrade", kwargs


def _edit_make_conf(existing, values, features):
    """``existing`` make.conf with ``values`` (``{VAR: value}``) set in place and ``features``
    added to ``FEATURES``; a missing FEATURES line, then missing variables, are appended."""
    lines = (existing or "").splitlines()
    out, seen, have_features = [], set(), False
    for line in lines:
        key = (
            line.split("=", 1)[0].strip()
            if "=" in line and not line.lstrip().startswith("#")
            else None
        )
        if key in values:
            if key not in seen:
                out.append(f'{key}="{values[key]}"')
            seen.add(key)
            continue
        if key == "FEATURES":
            value = line.split("=", 1)[1].strip().strip('"').strip("'")
            words = value.split()
            words += [f for f in features if f not in words]
            out.append(f'FEATURES="{" ".join(words)}"')
            have_features = True
            continue
        out.append(line)
    if not have_features:
        out.append(f'FEATURES="{" ".join(features)}"')
    out += [f'{key}="{value}"' for key, value in values.items() if key not in seen]
    return "\n".join(out) + "\n"


def _check_profile(hw_profile):
    if not hw_profile or not NAME_RE.match(str(hw_profile)):
        raise ValueError(f"bad hw_profile {hw_profile!r}")
    return str(hw_profile)


def make_conf(existing, binhost_url, hw_profile):
    """Return ``existing`` make.conf text with ``PORTAGE_BINHOST`` and ``getbinpkg`` set.

    ``PORTAGE_BINHOST`` becomes ``<binhost_url>/<hw_profile>``; ``getbinpkg`` is added to the
    ``FEATURES`` line (kept otherwise). Other lines are kept as they are.
    """
    hw_profile = _check_profile(hw_profile)
    if not binhost_url or not re.match(r"^(https?|ftp|rsync|file)://[^\s\"']+$", str(binhost_url)):
        raise ValueError(
            f"bad binhost url {binhost_url!r} (http(s)://, ftp://, rsync:// or file://)"
        )
    binhost = f"{str(binhost_url).rstrip('/')}/{hw_profile}"
    return _edit_make_conf(existing, {"PORTAGE_BINHOST": binhost}, ["getbinpkg"])


BUILDHOST_MODULE = "binpkgs"
BUILDHOST_PKGDIR_ROOT = "/var/cache/binpkgs"


def buildhost_make_conf(existing, pkgdir_root, hw_profile):
    """make.conf of a preprod build host: ``FEATURES`` gains ``buildpkg`` (every emerge also
    writes a binary package) and ``PKGDIR`` becomes ``<pkgdir_root>/<hw_profile>``, the
    directory the rsync module serves as ``<module>/<hw_profile>``."""
    hw_profile = _check_profile(hw_profile)
    root = str(pkgdir_root or "")
    if not root.startswith("/") or not re.match(r"^/[A-Za-z0-9_./-]*$", root) or ".." in root:
        raise ValueError(f"bad pkgdir_root {pkgdir_root!r}: an absolute path")
    return _edit_make_conf(
        existing, {"PKGDIR": f"{root.rstrip('/') or ''}/{hw_profile}"}, ["buildpkg"]
    )


def rsyncd_conf(
    pkgdir_root,
    hosts_allow,
    module=BUILDHOST_MODULE,
    address=None,
    port=None,
    uid=None,
    gid=None,
    use_chroot=True,
    pid_file="/run/rsyncd.pid",
):
    """rsyncd.conf serving ``pkgdir_root`` read-only as module ``module`` to ``hosts_allow``
    (the production subnets from pillar), so ``PORTAGE_BINHOST=rsync://<this host>/<module>/
    <hw_profile>`` on production fetches what this preprod host built."""
    if not NAME_RE.match(str(module)):
        raise ValueError(f"bad rsync module name {module!r}")
    root = str(pkgdir_root or "")
    if not root.startswith("/") or not re.match(r"^/[A-Za-z0-9_./-]*$", root) or ".." in root:
        raise ValueError(f"bad pkgdir_root {pkgdir_root!r}: an absolute path")
    if isinstance(hosts_allow, str):
        hosts_allow = hosts_allow.split()
    if not hosts_allow or not all(
        isinstance(h, str) and re.match(r"^[0-9A-Za-z.:/*-]+$", h) for h in hosts_allow
    ):
        raise ValueError("hosts_allow must name the production addresses/subnets")
    lines = ["# Managed by Salt (upgrade.buildhost): binary packages built on this preprod host"]
    if pid_file:
        lines.append(f"pid file = {pid_file}")
    if address:
        lines.append(f"address = {address}")
    if port is not None:
        lines.append(f"port = {int(port)}")
    lines += [
        f"use chroot = {'yes' if use_chroot else 'no'}",
        "",
        f"[{module}]",
        f"    path = {root}",
        "    comment = Gentoo binary packages, one directory per hw-profile",
        "    read only = yes",
        "    list = yes",
        f"    hosts allow = {' '.join(hosts_allow)}",
        "    hosts deny = *",
    ]
    if uid is not None:
        lines.append(f"    uid = {uid}")
    if gid is not None:
        lines.append(f"    gid = {gid}")
    return "\n".join(lines) + "\n"


def buildhost_commands(pkgs=None):
    """The exact commands a preprod build host runs for an OS upgrade: build (and so package,
    FEATURES=buildpkg) what production will install, then regenerate the ``Packages`` index
    that ``emerge --getbinpkg`` reads from the binhost."""
    build = ["emerge", "--update", "--deep", "--newuse", "--buildpkg"]
    build += list(pkgs) if pkgs else ["@world"]
    return [build, ["emaint", "binhost", "--fix"]]
