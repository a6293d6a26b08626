"""
webfarm: what every capability shares on a minion.

``webfarm.defaults <capability>`` is the one source of a capability's defaults: the
``DEFAULTS`` of its pure module (``salt/_utils/webfarm_<capability>.py``), which the
execution module applies in Python and the SLS files merge under the pillar
(``salt['webfarm.defaults']('mysqlsnap')``), so a default is written once. No dependency:
it answers on a minion whose capability module is not loadable (no pymongo, no PyMySQL),
so a state that needs that module can still render and fail with its own clear comment.

``webfarm.wait_http <url>`` waits until a URL answers, and fails when it does not in time:
the gate ``orch.cluster`` puts between the farm members and their LBs (Salt's own
``http.wait_for_successful_query`` returns success even after its wait ran out).
"""

import copy
import time
import urllib.error
import urllib.request

from salt.exceptions import CommandExecutionError, SaltInvocationError

import webfarm_accesslog
import webfarm_haproxy
import webfarm_mysqlsnap

__virtualname__ = "webfarm"

_DEFAULTS = {
    "accesslog": webfarm_accesslog.DEFAULTS,  # the store: accesslog:store
    "haproxy": webfarm_haproxy.DEFAULTS,
    "mysqlsnap": webfarm_mysqlsnap.DEFAULTS,
}


def __virtual__():
    return __virtualname__


def defaults(capability):
    """
    The defaults of ``capability`` (a copy): ``accesslog`` (its ``store`` settings),
    ``haproxy`` or ``mysqlsnap``.

    CLI Example:

    .. code-block:: bash

        salt 'db*' webfarm.defaults mysqlsnap
    """
    if capability not in _DEFAULTS:
        raise SaltInvocationError(
            f"no defaults for {capability!r}: one of {', '.join(sorted(_DEFAULTS))}"
        )
    return copy.deepcopy(_DEFAULTS[capability])


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
