"""
webfarm: what every capability shares on a minion.

``webfarm.defaults <capability>`` is the one source of a capability's defaults: the
``DEFAULTS`` of its pure module (``salt/_utils/webfarm_<capability>.py``), which the
execution module applies in Python and the SLS files merge under the pillar
(``salt['webfarm.defaults']('mysqlsnap')``), so a default is written once. No dependency:
it answers on a minion whose capability module is not loadable (no pymongo, no PyMySQL),
so a state that needs that module can still render and fail with its own clear comment.
"""

import copy

from salt.exceptions import SaltInvocationError

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
