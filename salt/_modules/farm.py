"""
farm: the README's older names of the upgrade capability's member functions.

``farm.<name>`` is ``upgrade.<name>`` (``salt/_modules/upgrade.py``) with the same arguments
and the same return, for the six names README and the seed's commands use: ``upgrade_step``,
``rollback_step``, ``release``, ``rollback``, ``version`` and ``flush_cache``. New code (the
runner, the SLS, the tests) calls ``upgrade.*``; ``salt '*' sys.doc upgrade`` documents them.
"""

import salt.utils.args

__virtualname__ = "farm"

ALIASES = ("upgrade_step", "rollback_step", "release", "rollback", "version", "flush_cache")


def __virtual__():
    if "upgrade.version" not in __salt__:
        return (False, "farm: the upgrade module it aliases is not loaded (see upgrade's reason)")
    return __virtualname__


def _alias(name):
    def call(*args, **kwargs):
        return __salt__[f"upgrade.{name}"](*args, **salt.utils.args.clean_kwargs(**kwargs))

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"""
    ``upgrade.{name}`` under its older name (same arguments, same return).

    CLI Example:

    .. code-block:: bash

        salt '*' sys.doc upgrade.{name}
        salt -G 'webfarm:farm:f1' farm.{name}{" 2.0.1" if "step" in name or name == "release" else ""}
    """
    return call


upgrade_step = _alias("upgrade_step")
rollback_step = _alias("rollback_step")
release = _alias("release")
rollback = _alias("rollback")
version = _alias("version")
flush_cache = _alias("flush_cache")
