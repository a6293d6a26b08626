"""Trust from the master: the minions pillar ``webfarm:topology`` names, and mine data of only those.

Grains and the mine are written by each minion about itself; this module lets an SLS (the
Nagios server's host list, its pinned host keys) keep only what the master-side topology
vouches for. The logic is ``salt/_utils/webfarm_trust.py``; see docs/trust.md.
"""

import logging

from salt.exceptions import SaltInvocationError

import webfarm_trust

log = logging.getLogger(__name__)

__virtualname__ = "trust"


def __virtual__():
    return __virtualname__


def _topology():
    topology = (__pillar__.get("webfarm") or {}).get("topology")
    if not isinstance(topology, dict):
        raise SaltInvocationError("pillar webfarm:topology is missing: no minion is trusted")
    return topology


def minions():
    """
    Return ``{minion_id: [roles]}`` of every minion pillar ``webfarm:topology`` names.

    CLI Example:

    .. code-block:: bash

        salt monitor trust.minions
    """
    return {m: sorted(r) for m, r in sorted(webfarm_trust.topology_roles(_topology()).items())}


def addresses():
    """
    Return ``{minion_id: address}`` of the minions pillar ``webfarm:topology`` gives an address.

    CLI Example:

    .. code-block:: bash

        salt monitor trust.addresses
    """
    return dict(sorted(webfarm_trust.topology_addresses(_topology()).items()))


def named(data, role=None):
    """
    Return the entries of ``data`` (``{minion_id: ...}``) whose minion the topology names
    (in ``role``, and in the role the entry claims under ``webfarm:role``, if any).

    CLI Example:

    .. code-block:: bash

        salt monitor trust.named '{"web1": {"webfarm": {"role": "web"}}}'
    """
    if not isinstance(data, dict):
        raise SaltInvocationError(f"data must be a mapping of minion id -> data, got {data!r}")
    return webfarm_trust.trusted(data, _topology(), role)


def mine(tgt, fun, role=None, tgt_type="glob"):
    """
    Return ``mine.get(tgt, fun)`` with only the minions the topology names (see ``named``);
    the minions left out are logged.

    CLI Example:

    .. code-block:: bash

        salt monitor trust.mine '*' webfarm_nagios_host
    """
    data = __salt__["mine.get"](tgt, fun, tgt_type=tgt_type)
    topology = _topology()
    dropped = webfarm_trust.untrusted(data, topology, role)
    if dropped:
        log.warning(
            "trust: mine %s of %s ignored: not named by pillar webfarm:topology%s",
            fun,
            ", ".join(dropped),
            f" as {role}" if role else "",
        )
    return webfarm_trust.trusted(data, topology, role)
