"""Keep a fresh mysqlsnap backup of this replica.

.. code-block:: yaml

    mysqlsnap-fresh-backup:
      mysqlsnap.backed_up:
        - max_age: 24h
"""

from salt.exceptions import SaltException

__virtualname__ = "mysqlsnap"


def __virtual__():
    if "mysqlsnap.backup" not in __salt__:
        return False, "the mysqlsnap execution module is not available (needs PyMySQL)"
    return __virtualname__


def backed_up(name, max_age=None, **kwargs):
    """
    Take a backup when the newest one in the destination is older than ``max_age``
    (seconds, or ``90s``/``30m``/``24h``/``7d``; default pillar ``mysqlsnap:schedule:max_age``,
    else 24h, as ``mysqlsnap.newest`` has it). Other keyword arguments override pillar
    ``mysqlsnap`` settings, as for ``mysqlsnap.backup``.

    CLI Example:

    .. code-block:: bash

        salt 'db*' state.single mysqlsnap.backed_up nightly max_age=24h
    """
    ret = {"name": name, "result": True, "comment": "", "changes": {}}
    try:
        found = __salt__["mysqlsnap.newest"](max_age=max_age, destination=kwargs.get("destination"))
        newest, limit = found["newest"], found["max_age_s"]
        if found["fresh"]:
            ret["comment"] = (
                f"Newest backup {newest['name']} is {newest['age_s']:.0f}s old "
                f"(max_age {limit:.0f}s): already as wanted"
            )
            return ret
        why = (
            f"the newest backup {newest['name']} is {newest['age_s']:.0f}s old (max_age {limit:.0f}s)"
            if newest
            else "there is no backup yet"
        )
        if __opts__["test"]:
            ret.update(
                result=None,
                comment=f"Would have taken a backup: {why}",
                changes={
                    "backup": {"old": newest["name"] if newest else None, "new": "(new backup)"}
                },
            )
            return ret
        taken = __salt__["mysqlsnap.backup"](**kwargs)
    except SaltException as exc:
        ret.update(result=False, comment=str(exc))
        return ret
    ret["changes"] = {
        "backup": {"old": newest["name"] if newest else None, "new": taken["name"]},
        "backup_dir": taken["backup_dir"],
        "lock_ms": taken["lock_ms"],
        "bytes": taken["bytes"],
    }
    if taken.get("pruned"):
        ret["changes"]["pruned"] = taken["pruned"]
    if not taken["result"]:
        ret.update(
            result=False,
            comment=f"Backup {taken['name']} taken but verify failed: {taken.get('verify')}",
        )
        return ret
    ret["comment"] = f"Took backup {taken['name']} because {why}"
    return ret
