"""Farm members: release switch (rsync + atomic ``current`` symlink), cache flush, health.

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
      binhost_url: http://binhost.example/packages   # gentoo/binhost SLS
"""

import http.client
import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import webfarm_events
import webfarm_upgrade
from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "farm"

DEFAULT_ROOT = "/srv/www/app"
DEFAULT_HEALTH_URL = "http://127.0.0.1/"
VERSION_HEADER = "X-App-Version"


def __virtual__():
    if shutil.which("rsync") is None:
        return (False, "farm: rsync is not installed (install the rsync package)")
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

        salt -G 'webfarm:farm:f1' farm.version
    """
    return _read_version(_current_link(_root(root)))


def releases(root=None):
    """
    List the releases present under ``<root>/releases``, oldest version first.

    CLI Example:

    .. code-block:: bash

        salt 'web-*' farm.releases
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

        salt -G 'webfarm:farm:f1' farm.release 2.0.1 source=rsync://binhost/releases/2.0.1/
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
        "seconds": round(time.monotonic() - started, 3),
    }
    webfarm_events.fire(__salt__, "farm", "release", "done", ret)
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

        salt -G 'webfarm:farm:f1' farm.rollback
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
    ret = {"version": back, "previous": now, "restarted": restarted}
    webfarm_events.fire(__salt__, "farm", "rollback", "done", ret)
    return ret


def _memcached_endpoint(address, port):
    if address is None:
        cache = _settings().get("memcached")
        if not cache:
            grains = __grains__.get("webfarm", {}) or {}
            sites = (__pillar__.get("webfarm", {}) or {}).get("topology", {}).get("sites", {})
            cache = (
                (sites.get(grains.get("site"), {}) or {})
                .get("farms", {})
                .get(grains.get("farm"), {})
                or {}
            ).get("memcached")
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

        salt web-s1-f1-m1 farm.flush_cache
        salt web-s1-f1-m1 farm.flush_cache address=10.77.1.11 port=11211
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
    ret = {"address": address, "port": port, "flushed": True}
    webfarm_events.fire(__salt__, "farm", "flush_cache", "done", ret)
    return ret


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

        salt web-s1-f1-m1 farm.health version=2.0.1
        salt web-s1-f1-m1 farm.health url=http://127.0.0.1:8080/health timeout=30
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
    binhost of this member's hardware profile, see the ``gentoo.binhost`` SLS).

    pkgs
        Packages to upgrade (list or comma-separated); default pillar ``upgrade:pkgs``, else
        every package.

    CLI Example:

    .. code-block:: bash

        salt -G 'webfarm:member:1' farm.upgrade_os pkgs='[openssl, apache2]'
    """
    pkgs = pkgs if pkgs is not None else _settings().get("pkgs")
    try:
        function, kwargs = webfarm_upgrade.pkg_call(__grains__.get("os_family"), pkgs)
    except ValueError as exc:
        raise SaltInvocationError(str(exc)) from None
    started = time.monotonic()
    changes = __salt__[function](**kwargs)
    ret = {
        "function": function,
        "kwargs": kwargs,
        "changes": changes,
        "seconds": round(time.monotonic() - started, 3),
    }
    webfarm_events.fire(__salt__, "farm", "upgrade_os", "done", ret)
    return ret


def make_conf(path="/etc/portage/make.conf", binhost_url=None, hw_profile=None):
    """
    Return the text ``path`` should have: its current lines plus ``PORTAGE_BINHOST`` for this
    minion's hardware profile and ``getbinpkg`` in ``FEATURES``. Used by the ``gentoo.binhost``
    SLS (which writes it with ``file.managed``).

    CLI Example:

    .. code-block:: bash

        salt -G 'os_family:Gentoo' farm.make_conf binhost_url=http://binhost/packages
    """
    binhost_url = binhost_url or _settings().get("binhost_url")
    hw_profile = hw_profile or (__grains__.get("webfarm", {}) or {}).get("hw_profile")
    existing = ""
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            existing = handle.read()
    try:
        return webfarm_upgrade.make_conf(existing, binhost_url, hw_profile)
    except ValueError as exc:
        raise SaltInvocationError(
            f"{exc}: set pillar upgrade:binhost_url and grain webfarm:hw_profile"
        ) from None
