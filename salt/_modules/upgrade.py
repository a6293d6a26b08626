"""upgrade: a farm member's side of the upgrade capability: release switch (rsync + atomic
``current`` symlink), cache flush, health, OS packages, the Gentoo binhost settings.

README's ``farm.*`` names (``farm.release``, ``farm.version``, ...) are aliases of these
functions (``salt/_modules/farm.py``).

Pillar ``upgrade`` (every key can also be given as a keyword argument):

.. code-block:: yaml

    upgrade:
      root: /srv/www/app               # releases/<version>/ and the `current` symlink
      source: rsync://binhost/releases/{version}/   # where release(version) copies from
      health_url: http://127.0.0.1/    # must answer 200 with header X-App-Version
      health_timeout: 30               # seconds health() keeps trying
      memcached: {address: 10.77.1.11, port: 11211}  # else webfarm:topology of this farm
      service: php8.2-fpm              # restarted after a switch (optional)
      pkgs: [openssl, apache2]         # the os upgrade's packages (default: everything)
      binhost_url: http://binhost.example/packages   # upgrade/binhost SLS
      check_cmd: [/usr/local/bin/smoke, --version, "{version}"]  # optional release check
      checks: {"2.1.0": [/srv/www/app/current/bin/check]}     # per-release check (wins)

:func:`upgrade_step` and :func:`rollback_step` do a whole farm step on a member in one Salt
job (switch + health + checks + memcached flush) and report failures as ``ok: False`` data,
so the upgrade runner needs one round trip per phase.
"""

import http.client
import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from salt.exceptions import CommandExecutionError, SaltInvocationError

import webfarm_events
import webfarm_topology
import webfarm_upgrade

log = logging.getLogger(__name__)

__virtualname__ = "upgrade"

DEFAULT_ROOT = "/srv/www/app"
DEFAULT_HEALTH_URL = "http://127.0.0.1/"
VERSION_HEADER = "X-App-Version"


def __virtual__():
    if shutil.which("rsync") is None:
        return (False, "upgrade: rsync is not installed (install the rsync package)")
    return __virtualname__


def _settings():
    settings = __pillar__.get("upgrade", {})
    return settings if isinstance(settings, dict) else {}


def _root(root):
    root = root or _settings().get("root") or DEFAULT_ROOT
    if not os.path.isabs(str(root)):
        raise SaltInvocationError(f"root must be an absolute path, got {root!r}")
    return str(root)


def _version(version):
    try:
        return webfarm_upgrade.check_version(version)
    except ValueError as exc:
        raise SaltInvocationError(str(exc)) from None


def _current_link(root):
    return os.path.join(root, "current")


def _read_version(link):
    try:
        target = os.readlink(link)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CommandExecutionError(f"{link} is not a symlink ({exc}): move it away") from exc
    return os.path.basename(os.path.normpath(target))


def _point(root, name, version):
    """Make ``root/name`` a symlink to ``releases/<version>`` with one rename (atomic)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=root)
    os.close(fd)
    os.unlink(tmp)
    os.symlink(os.path.join("releases", version), tmp)
    os.replace(tmp, os.path.join(root, name))


def _rsync(args):
    proc = subprocess.run(
        ["rsync", *args], capture_output=True, text=True, check=False, timeout=3600
    )
    if proc.returncode != 0:
        raise CommandExecutionError(
            f"rsync {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}"
            " — check that the source exists and is readable"
        )
    return proc.stdout


def _source(source, version):
    source = source or _settings().get("source")
    if not source:
        raise SaltInvocationError("no source: pass source=... or set pillar upgrade:source")
    source = str(source).replace("{version}", version)
    if source.startswith("-"):
        raise SaltInvocationError(f"bad source {source!r}")
    if "://" not in source and ":" not in source.split("/", 1)[0] and not os.path.isdir(source):
        raise CommandExecutionError(
            f"release source {source} does not exist: build/publish it first"
        )
    return source.rstrip("/") + "/"


def version(root=None):
    """
    Return the version ``current`` points at (``None`` when nothing is released yet).

    CLI Example:

    .. code-block:: bash

        salt -G 'webfarm:farm:f1' upgrade.version
    """
    return _read_version(_current_link(_root(root)))


def releases(root=None):
    """
    List the releases present under ``<root>/releases``, oldest version first.

    CLI Example:

    .. code-block:: bash

        salt 'web-*' upgrade.releases
    """
    base = os.path.join(_root(root), "releases")
    if not os.path.isdir(base):
        return []
    names = [
        n
        for n in os.listdir(base)
        if not n.startswith(".") and os.path.isdir(os.path.join(base, n))
    ]
    return sorted(names, key=webfarm_upgrade.version_key)


def _restart(service):
    service = service if service is not None else _settings().get("service")
    if not service:
        return None
    if not __salt__["service.restart"](service):
        raise CommandExecutionError(f"service {service} did not restart: check its logs")
    return service


def release(version, source=None, root=None, service=None):
    """
    Copy release ``version`` from ``source`` into ``<root>/releases/<version>`` with rsync and
    switch ``<root>/current`` to it atomically (a new symlink renamed over the old one). The
    previous target is kept as ``<root>/previous`` for :func:`rollback`.

    A release already present is checked against the source; a *live* release that differs is
    refused (publish a new version instead) so running code never changes under its users.

    version
        Release name, e.g. ``2.0.1``.
    source
        rsync source (path or ``rsync://``/``host:`` URL); ``{version}`` is replaced. Default:
        pillar ``upgrade:source``.
    root
        Default pillar ``upgrade:root`` or ``/srv/www/app``.
    service
        Service restarted after the switch (default pillar ``upgrade:service``; none if unset).

    CLI Example:

    .. code-block:: bash

        salt -G 'webfarm:farm:f1' upgrade.release 2.0.1 source=rsync://binhost/releases/2.0.1/
    """
    version = _version(version)
    root = _root(root)
    source = _source(source, version)
    base = os.path.join(root, "releases")
    target = os.path.join(base, version)
    current = _current_link(root)
    started = time.monotonic()
    try:
        os.makedirs(base, exist_ok=True)
    except OSError as exc:
        raise CommandExecutionError(f"cannot create {base}: {exc}") from exc
    before = _read_version(current)
    copied = False
    if os.path.isdir(target):
        pending = _rsync(
            ["-a", "--checksum", "--delete", "--dry-run", "--itemize-changes", source, target + "/"]
        )
        if pending.strip():
            if before == version:
                raise CommandExecutionError(
                    f"release {version} is live and differs from {source}: publish it as a new version"
                )
            _replace_release(source, target, before, base)
            copied = True
    else:
        _replace_release(source, target, before, base)
        copied = True
    switched = before != version
    if switched:
        try:
            if before is not None:
                _point(root, "previous", before)
            _point(root, "current", version)
        except OSError as exc:
            raise CommandExecutionError(f"cannot switch {current} to {version}: {exc}") from exc
    restarted = _restart(service) if switched else None
    ret = {
        "version": version,
        "previous": before,
        "copied": copied,
        "switched": switched,
        "path": target,
        "restarted": restarted,
    }
    return _done("release", ret, started)


def _done(action, ret, started=None):
    """Fire ``webfarm/upgrade/<action>/done`` with ``ret`` and return it; with ``started``
    (a ``time.monotonic()``), ``ret`` first gets ``seconds``: the time since then."""
    if started is not None:
        ret["seconds"] = round(time.monotonic() - started, 3)
    webfarm_events.fire(__salt__, "upgrade", action, "done", ret)
    return ret


def _replace_release(source, target, live, base):
    """rsync into a hidden directory, then rename it into place (nothing half-copied shows)."""
    partial = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.", dir=base)
    try:
        args = ["-a", "--delete"]
        if live and os.path.isdir(os.path.join(base, live)):
            # Hard-link unchanged files from the live release; compare contents, not
            # size+mtime, or a same-sized file built in the same second would be linked.
            args += ["--checksum", f"--link-dest={os.path.join(base, live)}"]
        _rsync([*args, source, partial + "/"])
        os.chmod(partial, 0o755)
        if os.path.isdir(target):
            trash = tempfile.mkdtemp(prefix=".trash.", dir=base)
            os.rename(target, os.path.join(trash, "old"))
            os.rename(partial, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def rollback(root=None, service=None):
    """
    Switch ``current`` back to the release ``previous`` points at (and ``previous`` to the one
    that was current), atomically.

    CLI Example:

    .. code-block:: bash

        salt -G 'webfarm:farm:f1' upgrade.rollback
    """
    root = _root(root)
    back = _read_version(os.path.join(root, "previous"))
    if back is None:
        raise CommandExecutionError(
            f"no previous release recorded in {root}: nothing to roll back to"
        )
    if not os.path.isdir(os.path.join(root, "releases", back)):
        raise CommandExecutionError(
            f"previous release {back} is gone from {root}/releases: release it again"
        )
    now = _read_version(_current_link(root))
    try:
        _point(root, "current", back)
        if now is not None:
            _point(root, "previous", now)
    except OSError as exc:
        raise CommandExecutionError(f"cannot switch {root}/current to {back}: {exc}") from exc
    restarted = _restart(service)
    return _done("rollback", {"version": back, "previous": now, "restarted": restarted})


def _memcached_endpoint(address, port):
    if address is None:
        cache = _settings().get("memcached")
        if not cache:
            grains = __grains__.get("webfarm", {}) or {}
            topology = (__pillar__.get("webfarm", {}) or {}).get("topology", {})
            farm = webfarm_topology.farm(topology, grains.get("site"), grains.get("farm"))
            cache = (farm or {}).get("memcached")
        if not cache:
            raise SaltInvocationError(
                "no memcached for this farm: pass address/port, set pillar upgrade:memcached or"
                " webfarm:topology sites.<site>.farms.<farm>.memcached"
            )
        address, port = cache.get("address"), port if port is not None else cache.get("port", 11211)
    try:
        port = int(port if port is not None else 11211)
    except (TypeError, ValueError):
        raise SaltInvocationError(f"bad memcached port {port!r}") from None
    if not address or not 1 <= port <= 65535:
        raise SaltInvocationError(f"bad memcached endpoint {address!r}:{port!r}")
    return str(address), port


def flush_cache(address=None, port=None, timeout=5):
    """
    Flush the farm's memcached (``flush_all`` over a plain socket).

    The endpoint is ``address``/``port``, else pillar ``upgrade:memcached``, else the farm's
    ``memcached`` in pillar ``webfarm:topology`` (found with this minion's grains
    ``webfarm:site``/``webfarm:farm``).

    CLI Example:

    .. code-block:: bash

        salt web-s1-f1-m1 upgrade.flush_cache
        salt web-s1-f1-m1 upgrade.flush_cache address=10.77.1.11 port=11211
    """
    address, port = _memcached_endpoint(address, port)
    try:
        with socket.create_connection((address, port), timeout=float(timeout)) as sock:
            sock.sendall(b"flush_all\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(256)
                if not chunk:
                    break
                reply += chunk
    except OSError as exc:
        raise CommandExecutionError(
            f"memcached {address}:{port} unreachable ({exc}): is it running for this farm?"
        ) from exc
    if reply.strip() != b"OK":
        raise CommandExecutionError(f"memcached {address}:{port} answered {reply!r} to flush_all")
    return _done("flush_cache", {"address": address, "port": port, "flushed": True})


def _probe(url, timeout):
    request = urllib.request.Request(
        url, headers={"User-Agent": "webfarm-health", "Connection": "close"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) only, checked
            status, body = response.status, response.read(65536)
            reported = response.headers.get(VERSION_HEADER)
    except urllib.error.HTTPError as exc:
        return {
            "status": exc.code,
            "version": exc.headers.get(VERSION_HEADER),
            "error": f"HTTP {exc.code}",
        }
    except (OSError, http.client.HTTPException) as exc:
        return {"status": None, "version": None, "error": str(getattr(exc, "reason", exc))}
    if reported is None:
        try:
            reported = json.loads(body).get("version")
        except (ValueError, AttributeError):
            reported = None
    return {"status": status, "version": reported, "error": None}


def health(url=None, version=None, timeout=None, interval=0.5):
    """
    Check the app over HTTP until it answers 200 and reports ``version`` (header
    ``X-App-Version`` or ``"version"`` in a JSON body), or ``timeout`` seconds pass.

    Returns ``{"ok", "url", "status", "version", "error", "seconds", "attempts"}``; a failed
    check is ``ok: False`` with the reason, not an exception.

    CLI Example:

    .. code-block:: bash

        salt web-s1-f1-m1 upgrade.health version=2.0.1
        salt web-s1-f1-m1 upgrade.health url=http://127.0.0.1:8080/health timeout=30
    """
    settings = _settings()
    url = str(url or settings.get("health_url") or DEFAULT_HEALTH_URL)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise SaltInvocationError(f"health url must be http(s)://..., got {url!r}")
    if version is not None:
        version = _version(version)
    try:
        timeout = float(timeout if timeout is not None else settings.get("health_timeout", 30))
        interval = float(interval)
    except (TypeError, ValueError):
        raise SaltInvocationError("timeout and interval must be numbers") from None
    started = time.monotonic()
    attempts = 0
    while True:
        attempts += 1
        probe = _probe(url, timeout=max(1.0, min(timeout, 10.0)))
        if probe["status"] == 200 and version is not None and str(probe["version"]) != version:
            probe["error"] = f"reports version {probe['version']!r}, wanted {version!r}"
        ok = probe["status"] == 200 and probe["error"] is None
        elapsed = time.monotonic() - started
        if ok or elapsed + interval > timeout:
            return {
                "ok": ok,
                "url": url,
                **probe,
                "seconds": round(elapsed, 3),
                "attempts": attempts,
            }
        time.sleep(interval)


def upgrade_os(pkgs=None):
    """
    Upgrade OS packages through Salt's ``pkg`` (on Gentoo ``emerge --getbinpkg`` from the
    binhost of this member's hardware profile, see the ``upgrade.binhost`` SLS).

    pkgs
        Packages to upgrade (list or comma-separated); default pillar ``upgrade:pkgs``, else
        every package.

    CLI Example:

    .. code-block:: bash

        salt -G 'webfarm:member:1' upgrade.upgrade_os pkgs='[openssl, apache2]'
    """
    pkgs = pkgs if pkgs is not None else _settings().get("pkgs")
    try:
        function, kwargs = webfarm_upgrade.pkg_call(__grains__.get("os_family"), pkgs)
    except ValueError as exc:
        raise SaltInvocationError(str(exc)) from None
    started = time.monotonic()
    changes = __salt__[function](**kwargs)
    ret = {"function": function, "kwargs": kwargs, "changes": changes}
    return _done("upgrade_os", ret, started)


def make_conf(path="/etc/portage/make.conf", binhost_url=None, hw_profile=None):
    """
    Return the text ``path`` should have: its current lines plus ``PORTAGE_BINHOST`` for this
    minion's hardware profile and ``getbinpkg`` in ``FEATURES``. Used by the ``upgrade.binhost``
    SLS (which writes it with ``file.managed``).

    CLI Example:

    .. code-block:: bash

        salt -G 'os_family:Gentoo' upgrade.make_conf binhost_url=http://binhost/packages
    """
    binhost_url = binhost_url or _settings().get("binhost_url")
    return _edit_make_conf(
        webfarm_upgrade.make_conf, path, binhost_url, hw_profile, "upgrade:binhost_url"
    )


def _edit_make_conf(edit, path, value, hw_profile, pillar_key):
    """``edit(text of path, value, hw_profile)``: the make.conf ``path`` should have, for
    ``hw_profile`` (default grain ``webfarm:hw_profile``); a missing ``value`` (pillar
    ``pillar_key``) or profile is a SaltInvocationError that names both."""
    hw_profile = hw_profile or (__grains__.get("webfarm", {}) or {}).get("hw_profile")
    existing = _read_or_empty(path)
    try:
        return edit(existing, value, hw_profile)
    except ValueError as exc:
        raise SaltInvocationError(
            f"{exc}: set pillar {pillar_key} and grain webfarm:hw_profile"
        ) from None


def _read_or_empty(path):
    """The text of ``path`` (a make.conf to update), or "" where there is none yet."""
    if not os.path.isfile(path):
        return ""
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _check_argv(version, check=None):
    """The release check command: ``check``, else pillar ``upgrade:checks:<version>``, else
    ``upgrade:check_cmd``; a list (or a string split like a shell would, never run by one)
    with ``{version}`` replaced. None when no check is configured."""
    settings = _settings()
    if check is None:
        checks = settings.get("checks") or {}
        check = (checks.get(version) if isinstance(checks, dict) else None) or settings.get(
            "check_cmd"
        )
    if not check:
        return None
    argv = shlex.split(check) if isinstance(check, str) else check
    if not isinstance(argv, list | tuple) or not argv or not all(isinstance(a, str) for a in argv):
        raise SaltInvocationError(f"check command must be a list of strings, got {check!r}")
    return [a.replace("{version}", version or "") for a in argv]


def _run_check(argv, timeout=300):
    started = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"ok": False, "argv": argv, "error": f"check {argv[0]} did not run: {exc}"}
    ok = proc.returncode == 0
    return {
        "ok": ok,
        "argv": argv,
        "retcode": proc.returncode,
        "output": (proc.stdout + proc.stderr)[-2000:],
        "seconds": round(time.monotonic() - started, 3),
        "error": None if ok else f"check {' '.join(argv)} exited {proc.returncode}",
    }


def _health_error(result):
    return (
        f"health check failed: {result.get('error') or result.get('status')} ({result.get('url')})"
    )


def _finish(ret, started, timings, health_timeout, version, check, flush, url):
    """Health (+ check, + flush) after a switch; fills ``ret`` and returns it."""
    t0 = time.monotonic()
    checked = health(url=url, version=version, timeout=health_timeout)
    timings["health_wait"] = checked["seconds"]
    timings["health"] = time.monotonic() - t0
    ret["health"] = checked
    if not checked["ok"]:
        ret["error"] = _health_error(checked)
    elif check:
        t0 = time.monotonic()
        ret["check"] = _run_check(check)
        timings["check"] = time.monotonic() - t0
        if not ret["check"]["ok"]:
            ret["error"] = ret["check"]["error"]
    if ret.get("error") is None and flush:
        t0 = time.monotonic()
        try:
            ret["flushed"] = flush_cache()["flushed"]
        except (CommandExecutionError, SaltInvocationError) as exc:
            ret["error"] = f"memcached flush failed: {exc}"
        timings["flush"] = time.monotonic() - t0
    ret["ok"] = ret.get("error") is None
    ret["timings"] = {k: round(v, 3) for k, v in timings.items()}
    ret["seconds"] = round(time.monotonic() - started, 3)
    return ret


def upgrade_step(
    version=None,
    kind="app",
    source=None,
    pkgs=None,
    url=None,
    health_timeout=None,
    flush=True,
    check=None,
    precheck=True,
):
    """
    One member's whole part of a farm step, in one job: (app) :func:`release` ``version`` or
    (os) :func:`upgrade_os`, then :func:`health`, the release check command (pillar
    ``upgrade:checks:<version>`` / ``upgrade:check_cmd``) and the farm's memcached flush.

    With ``precheck`` the app must answer (HTTP 200, any version) *before* anything changes:
    a member that is already down is left untouched and reported ``down_before: True``.

    Returns ``{"ok", "before", "version", "error", "down_before", "health", "check",
    "flushed", "timings", "seconds"}``; a failure is ``ok: False`` with the reason (the caller
    decides on rollback), bad arguments raise.

    CLI Example:

    .. code-block:: bash

        salt -G 'webfarm:farm:f1' upgrade.upgrade_step 2.0.1
        salt -G 'webfarm:member:1' upgrade.upgrade_step kind=os pkgs='[openssl]' flush=False
    """
    if kind not in ("app", "os", "os-online"):
        raise SaltInvocationError(f"kind must be app, os or os-online, got {kind!r}")
    if kind == "app":
        version = _version(version)
    started = time.monotonic()
    before = _read_version(_current_link(_root(None)))
    argv = _check_argv(version, check) if kind == "app" or version else None
    ret = {
        "ok": False,
        "kind": kind,
        "before": before,
        "version": version,
        "error": None,
        "down_before": False,
        "flushed": False,
    }
    timings = {}
    if precheck and (kind != "app" or before is not None):
        t0 = time.monotonic()
        probe = health(url=url, timeout=2, interval=0.5)
        timings["precheck"] = time.monotonic() - t0
        if not probe["ok"]:
            ret.update(
                down_before=True,
                error=f"down before the upgrade, left as it was: {_health_error(probe)}",
                timings={k: round(v, 3) for k, v in timings.items()},
                seconds=round(time.monotonic() - started, 3),
            )
            return ret
    t0 = time.monotonic()
    try:
        if kind == "app":
            ret["release"] = release(version, source=source)
        else:
            ret["upgrade_os"] = upgrade_os(pkgs=pkgs)
    except (CommandExecutionError, SaltInvocationError) as exc:
        timings["upgrade"] = time.monotonic() - t0
        ret.update(
            error=f"{'release' if kind == 'app' else 'OS upgrade'} failed: {exc}",
            timings={k: round(v, 3) for k, v in timings.items()},
            seconds=round(time.monotonic() - started, 3),
        )
        return ret
    timings["upgrade"] = time.monotonic() - t0
    return _finish(
        ret,
        started,
        timings,
        health_timeout,
        version if kind == "app" else None,
        argv,
        bool(flush) and kind == "app",
        url,
    )


def rollback_step(version, url=None, health_timeout=None, flush=True, root=None, service=None):
    """
    Put this member back on release ``version`` (the one it ran before a failed step), in
    one job: switch ``current`` to ``releases/<version>`` atomically (``previous`` to the
    failed one), restart the service, check health on ``version`` and flush the farm's
    memcached. Returns ``{"ok", "version", "from", "error", "health", "flushed", ...}``.

    CLI Example:

    .. code-block:: bash

        salt -L web-s1-f2-m1,web-s1-f2-m2 upgrade.rollback_step 2.0.1
    """
    version = _version(version)
    root = _root(root)
    started = time.monotonic()
    target = os.path.join(root, "releases", version)
    now = _read_version(_current_link(root))
    ret = {"ok": False, "version": version, "from": now, "error": None, "flushed": False}
    timings = {}
    if not os.path.isdir(target):
        ret["error"] = f"release {version} is not under {root}/releases: cannot roll back to it"
        return ret
    t0 = time.monotonic()
    if now != version:
        try:
            if now is not None:
                _point(root, "previous", now)
            _point(root, "current", version)
        except OSError as exc:
            ret["error"] = f"cannot switch {root}/current to {version}: {exc}"
            return ret
        try:
            ret["restarted"] = _restart(service)
        except CommandExecutionError as exc:
            ret["error"] = str(exc)
            return ret
    timings["switch"] = time.monotonic() - t0
    _finish(ret, started, timings, health_timeout, version, None, bool(flush), url)
    webfarm_events.fire(
        __salt__, "upgrade", "rollback", "done" if ret["ok"] else "failed", {"version": version}
    )
    return ret


def _buildhost_settings():
    settings = _settings().get("buildhost") or {}
    if not isinstance(settings, dict):
        raise SaltInvocationError("pillar upgrade:buildhost must be a mapping")
    return settings


def buildhost_make_conf(path="/etc/portage/make.conf", pkgdir_root=None, hw_profile=None):
    """
    Return the text ``path`` should have on a preprod build host: its lines plus
    ``buildpkg`` in ``FEATURES`` and ``PKGDIR=<pkgdir_root>/<hw_profile>`` (pillar
    ``upgrade:buildhost:pkgdir_root``, default ``/var/cache/binpkgs``; grain
    ``webfarm:hw_profile``). Used by the ``upgrade.buildhost`` SLS.

    CLI Example:

    .. code-block:: bash

        salt -G 'webfarm:role:preprod' upgrade.buildhost_make_conf
    """
    pkgdir_root = (
        pkgdir_root
        or _buildhost_settings().get("pkgdir_root")
        or webfarm_upgrade.BUILDHOST_PKGDIR_ROOT
    )
    return _edit_make_conf(
        webfarm_upgrade.buildhost_make_conf,
        path,
        pkgdir_root,
        hw_profile,
        "upgrade:buildhost:pkgdir_root",
    )


def buildhost_rsyncd_conf():
    """
    Return the rsyncd.conf of a preprod build host from pillar ``upgrade:buildhost``
    (``pkgdir_root``, ``hosts_allow``, ``module``, ``address``, ``port``, ``uid``, ``gid``,
    ``use_chroot``): the binary packages served read-only to production.

    CLI Example:

    .. code-block:: bash

        salt -G 'webfarm:role:preprod' upgrade.buildhost_rsyncd_conf
    """
    settings = _buildhost_settings()
    try:
        return webfarm_upgrade.rsyncd_conf(
            settings.get("pkgdir_root") or webfarm_upgrade.BUILDHOST_PKGDIR_ROOT,
            settings.get("hosts_allow"),
            module=settings.get("module") or webfarm_upgrade.BUILDHOST_MODULE,
            address=settings.get("address"),
            port=settings.get("port"),
            uid=settings.get("uid"),
            gid=settings.get("gid"),
            use_chroot=settings.get("use_chroot", True) not in (False, "false", "no", "0"),
            pid_file=settings.get("pid_file", "/run/rsyncd.pid"),
        )
    except (TypeError, ValueError) as exc:
        raise SaltInvocationError(f"{exc}: check pillar upgrade:buildhost") from None
