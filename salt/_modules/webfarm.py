"""
webfarm: what every capability shares on a minion.

``webfarm.defaults <capability>`` is a capability's defaults on a minion: its
``salt://<capability>/defaults.yaml`` (``salt/states/<capability>/defaults.yaml``), the file
its ``map.jinja``/SLS import with ``import_yaml``, so a default is written once; the
execution module passes it to the pure functions of ``salt/_utils/webfarm_<capability>.py``.
No dependency beyond Salt and PyYAML: it answers on a minion whose capability module is not
loadable (no pymongo, no PyMySQL).

``webfarm.wait_http <url>`` waits until a URL answers, and fails when it does not in time:
the gate ``orch.cluster`` puts between the farm members and their LBs (Salt's own
``http.wait_for_successful_query`` returns success even after its wait ran out).
"""

import logging
import os
import time
import urllib.error
import urllib.request

import yaml
from salt.exceptions import CommandExecutionError, SaltInvocationError

log = logging.getLogger(__name__)

__virtualname__ = "webfarm"

# The capabilities with a salt/states/<capability>/defaults.yaml (tests/unit/test_defaults.py
# holds this tuple to the files).
CAPABILITIES = ("accesslog", "haproxy", "mysqlsnap", "nagios")


def __virtual__():
    return __virtualname__


def defaults(capability, saltenv=None):
    """
    The defaults of ``capability`` (a fresh copy): ``salt://<capability>/defaults.yaml``
    parsed, fetched with ``cp.cache_file``; when the fileserver cannot give it (master
    unreachable), the copy a previous call left in the minion's cachedir
    (``<cachedir>/files/<saltenv>/<capability>/defaults.yaml``).

    saltenv
        The fileserver environment (default: the minion's ``saltenv``, else ``base``).

    CLI Example:

    .. code-block:: bash

        salt 'db*' webfarm.defaults mysqlsnap
    """
    if capability not in CAPABILITIES:
        raise SaltInvocationError(
            f"no defaults for {capability!r}: one of {', '.join(sorted(CAPABILITIES))}"
        )
    saltenv = saltenv or __opts__.get("saltenv") or "base"
    source = f"salt://{capability}/defaults.yaml"
    try:
        path = __salt__["cp.cache_file"](source, saltenv)
    except Exception as exc:  # no master: whatever the file client raised
        log.warning("webfarm.defaults: cannot fetch %s (%s); trying the cached copy", source, exc)
        path = None
    if not path:
        cached = os.path.join(__opts__["cachedir"], "files", saltenv, capability, "defaults.yaml")
        if not os.path.isfile(cached):
            raise CommandExecutionError(
                f"no defaults for {capability!r}: the fileserver ({saltenv}) has no {source} "
                f"or cannot be reached, and there is no cached copy at {cached}"
            )
        path = cached
    try:
        with open(path, encoding="utf-8") as handle:
            loaded = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as exc:
        raise CommandExecutionError(
            f"cannot read the defaults of {capability!r} ({path}): {exc}"
        ) from exc
    if not isinstance(loaded, dict):
        raise CommandExecutionError(f"{source} ({path}) is not a mapping")
    return loaded  # parsed on every call: a fresh copy the caller may change


def wait_http(url, timeout=120, interval=1, status=200):
    """
    Wait until ``url`` answers HTTP ``status`` (GET, no redirects followed); fail when it
    has not after ``timeout`` seconds. Returns ``{"url", "status", "seconds"}``.

    url
        An ``http://`` or ``https://`` URL.
    timeout
        Seconds to keep trying (default 120; 0: one try).
    interval
        Seconds between tries (default 1).
    status
        The HTTP status that counts as an answer (default 200).

    CLI Example:

    .. code-block:: bash

        salt lb-s1 webfarm.wait_http http://10.77.1.11:80/ timeout=60
    """
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise SaltInvocationError(f"url must be an http:// or https:// URL, not {url!r}")
    try:
        timeout, interval, status = float(timeout), float(interval), int(status)
    except (TypeError, ValueError):
        raise SaltInvocationError(
            "timeout and interval must be numbers, status an integer"
        ) from None
    if timeout < 0 or interval <= 0:
        raise SaltInvocationError("timeout must be >= 0 and interval > 0")
    # direct, never through an http_proxy from the environment: the members are internal
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)
    started = time.monotonic()
    deadline = started + timeout
    while True:
        last = _answer(opener, url, max(0.5, min(5.0, deadline - time.monotonic())))
        if last == status:
            return {"url": url, "status": last, "seconds": round(time.monotonic() - started, 3)}
        if time.monotonic() + interval > deadline:
            raise CommandExecutionError(
                f"{url} did not answer {status} within {timeout:g}s (last: {last})"
            )
        time.sleep(interval)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _answer(opener, url, seconds):
    """The HTTP status ``url`` answers, or what went wrong (a string)."""
    try:
        with opener.open(url, timeout=seconds) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
