"""Rolling upgrades: topology from grains, wave planning, release names, reports (no Salt here).

Three kinds of upgrade (pillar ``upgrade:kind``):

- ``app``: a whole farm at a time (drain in its site LB, upgrade, flush its memcached, ready);
  a wave holds at most ``batch`` farms and never two farms of one site.
- ``os``: disruptive OS packages, one member of every farm at a time: wave 1 is member #1 of
  every selected farm, wave 2 member #2, ... so at most one member per farm is ever down.
- ``os-online``: non-disruptive OS packages, everywhere in one wave, nothing drained.

A step is ``{"site", "farm", "members": [{"index", "id"}, ...], "drain": [server names]}``.
"""

import re

KINDS = ("app", "os", "os-online")
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
    for site, site_data in sorted(topology["sites"].items()):
        for farm, farm_data in sorted(((site_data or {}).get("farms") or {}).items()):
            members = (farm_data or {}).get("members") or {}
            out.setdefault(str(site), {})[str(farm)] = {
                int(index): entry["id"]
                for index, entry in sorted(members.items(), key=lambda i: int(i[0]))
            }
    return out


def _as_list(value, what):
    if value in (None, "", []):
        return None
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise PlanError([f"{what} must be a list of names or a comma-separated string"])
    return list(value)


def _positive_int(value, what, minimum):
    if isinstance(value, bool):
        value = None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise PlanError([f"{what} must be an integer >= {minimum}, got {value!r}"]) from None
    if number < minimum or str(number) != str(value).strip():
        raise PlanError([f"{what} must be an integer >= {minimum}, got {value!r}"])
    return number


def options(kind, version=None, sites=None, farms=None, batch=1, max_failures=0):
    """Validate the rollout options; return them normalised or raise :class:`PlanError`."""
    errors = []
    if kind not in KINDS:
        errors.append(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "app":
        try:
            version = check_version(version)
        except ValueError as exc:
            errors.append(str(exc))
    elif version is not None:
        version = str(version)
    try:
        sites = _as_list(sites, "sites")
        farms = _as_list(farms, "farms")
        batch = _positive_int(batch, "batch", 1)
        max_failures = _positive_int(max_failures, "max_failures", 0)
    except PlanError as exc:
        errors += exc.errors
    if errors:
        raise PlanError(errors)
    return {
        "kind": kind,
        "version": version,
        "sites": sites,
        "farms": farms,
        "batch": batch,
        "max_failures": max_failures,
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


def plan(farm_map, kind, sites=None, farms=None, batch=1):
    """Return the waves (a list of lists of steps) of a rollout over ``farm_map``.

    ``farm_map`` is ``{site: {farm: {index: minion}}}`` (:func:`farms_from_grains`).
    """
    if not farm_map:
        raise PlanError(["no web servers found (grain webfarm:role=web)"])
    chosen = _selected(farm_map, _as_list(sites, "sites"), _as_list(farms, "farms"))
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
    queues = {site: list(site_farms.items()) for site, site_farms in chosen.items()}
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
        "batch": opts["batch"],
        "max_failures": opts["max_failures"],
        "waves": [[f"{s['site']}/{s['farm']}" for s in wave] for wave in waves],
        "steps": [],
        "failures": [],
        "skipped": [],
        "stopped": False,
        "result": True,
        "versions": {},
    }


def record_step(report, step, ok, timings, error=None, versions=None):
    """Add one finished step to ``report``; return whether the rollout may go on."""
    entry = {
        "site": step["site"],
        "farm": step["farm"],
        "members": [m["id"] for m in step["members"]],
        "ok": bool(ok),
        "timings": dict(timings),
    }
    if error:
        entry["error"] = error
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
    if report["result"]:
        tail = f", {len(report['failures'])} tolerated failure(s)" if report["failures"] else ""
        return f"{report['kind']} upgrade done: {done} step(s){tail}"
    failed = report["failures"][-1]
    return (
        f"{report['kind']} upgrade stopped at {failed['site']}/{failed['farm']}"
        f" ({', '.join(failed['members'])}): {failed.get('error', 'failed')};"
        f" {done} step(s) done before"
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


def make_conf(existing, binhost_url, hw_profile):
    """Return ``existing`` make.conf text with ``PORTAGE_BINHOST`` and ``getbinpkg`` set.

    ``PORTAGE_BINHOST`` becomes ``<binhost_url>/<hw_profile>``; ``getbinpkg`` is added to the
    ``FEATURES`` line (kept otherwise). Other lines are kept as they are.
    """
    if not hw_profile or not NAME_RE.match(str(hw_profile)):
        raise ValueError(f"bad hw_profile {hw_profile!r}")
    if not binhost_url or not re.match(r"^(https?|ftp|rsync|file)://[^\s\"']+$", str(binhost_url)):
        raise ValueError(
            f"bad binhost url {binhost_url!r} (http(s)://, ftp://, rsync:// or file://)"
        )
    binhost = f"{str(binhost_url).rstrip('/')}/{hw_profile}"
    lines = (existing or "").splitlines()
    out, have_binhost, have_features = [], False, False
    for line in lines:
        key = (
            line.split("=", 1)[0].strip()
            if "=" in line and not line.lstrip().startswith("#")
            else None
        )
        if key == "PORTAGE_BINHOST":
            if not have_binhost:
                out.append(f'PORTAGE_BINHOST="{binhost}"')
            have_binhost = True
            continue
        if key == "FEATURES":
            value = line.split("=", 1)[1].strip().strip('"').strip("'")
            words = value.split()
            if "getbinpkg" not in words:
                words.append("getbinpkg")
            out.append(f'FEATURES="{" ".join(words)}"')
            have_features = True
            continue
        out.append(line)
    if not have_features:
        out.append('FEATURES="getbinpkg"')
    if not have_binhost:
        out.append(f'PORTAGE_BINHOST="{binhost}"')
    return "\n".join(out) + "\n"
