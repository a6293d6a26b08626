"""States for source-based policy routing (see the ``policyroute`` execution module).

.. code-block:: yaml

    webfarm-policy-routing:
      policyroute.managed: []            # the whole ``policyroute`` pillar

    uplink1-only:
      policyroute.managed:
        - table: uplink1                 # one table of the pillar; the rest is left alone

    old-uplink:
      policyroute.absent:
        - name: uplink9
"""

from salt.exceptions import SaltException


def __virtual__():
    if "policyroute.diff" in __salt__:
        return "policyroute"
    return (False, "the policyroute execution module is not available (needs pyroute2)")


def _summary(changes):
    parts = []
    for kind in ("routes", "rules"):
        for action, items in changes.get(kind, {}).items():
            parts.append(f"{len(items)} {kind} {action}")
    if changes.get("files"):
        parts.append(f"{len(changes['files'])} names files written")
    return ", ".join(parts)


def _changed(name, already, preview, change, would, done):
    """The state return of ``change()``: nothing to do (comment ``already``) when
    ``preview()``, the same changes computed without making them, is empty; in test mode
    ``would``, else ``done``, each with the summary of the changes."""
    ret = {"name": name, "result": True, "comment": already, "changes": {}}
    try:
        changes = preview()
        if not changes:
            return ret
        if __opts__["test"]:
            ret.update(result=None, comment=f"{would}: {_summary(changes)}", changes=changes)
            return ret
        changes = change()
    except SaltException as exc:
        ret.update(result=False, comment=str(exc))
        return ret
    ret.update(comment=f"{done}: {_summary(changes)}", changes=changes)
    return ret


def managed(
    name,
    table=None,
    default=None,
    tables=None,
    netns=None,
    iproute2_dir=None,
    config_file=None,
):
    """
    Make webfarm's policy routing match the pillar (or the given ``default``/``tables``).

    name
        A label for the state.
    table
        Manage only this table of the configuration; without it the whole configuration is
        managed and webfarm routes/rules no longer in it are removed.
    default, tables, netns, iproute2_dir, config_file
        As for ``policyroute.apply``.

    CLI Example:

    .. code-block:: bash

        salt web1 state.single policyroute.managed webfarm
        salt web1 state.single policyroute.managed webfarm table=uplink1 test=True
    """
    kwargs = {
        "default": default,
        "tables": tables,
        "only": table,
        "netns": netns,
        "iproute2_dir": iproute2_dir,
        "config_file": config_file,
    }
    return _changed(
        name,
        "Policy routing is already as wanted",
        preview=lambda: __salt__["policyroute.diff"](**kwargs),
        change=lambda: __salt__["policyroute.apply"](**kwargs),
        would="Would have changed",
        done="Policy routing changed",
    )


def absent(name, netns=None, iproute2_dir=None):
    """
    Remove webfarm's rules and routes of table ``name`` (name or id) and its name entry.

    CLI Example:

    .. code-block:: bash

        salt web1 state.single policyroute.absent uplink1
    """
    kwargs = {"netns": netns, "iproute2_dir": iproute2_dir}
    return _changed(
        name,
        f"Table {name} has no webfarm routes or rules: already as wanted",
        preview=lambda: __salt__["policyroute.flush"](name, test=True, **kwargs),
        change=lambda: __salt__["policyroute.flush"](name, **kwargs),
        would="Would have removed",
        done=f"Table {name} removed",
    )
