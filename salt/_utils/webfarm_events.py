"""Event tags and firing for long operations: ``webfarm/<capability>/<action>/<outcome>``."""

import logging

log = logging.getLogger(__name__)

PREFIX = "webfarm"


def tag(capability, action, outcome):
    """Build ``webfarm/<capability>/<action>/<outcome>``."""
    for part in (capability, action, outcome):
        if not part or "/" in str(part):
            raise ValueError(f"bad event tag part: {part!r}")
    return f"{PREFIX}/{capability}/{action}/{outcome}"


def fire(salt_funcs, capability, action, outcome, data):
    """Send the event to the master through the minion (``event.send``).

    ``salt_funcs`` is the module's ``__salt__``. Returns whether it was sent; a minion with no
    master connection (``salt-call --local``, loader tests) logs and goes on: an event is a
    notification and must not turn a finished operation into a failure.
    """
    name = tag(capability, action, outcome)
    try:
        sent = bool(salt_funcs["event.send"](name, data=data))
    except Exception as exc:  # noqa: BLE001 - any transport error means "not sent"
        log.warning("event %s not sent: %s", name, exc)
        return False
    if not sent:
        log.warning("event %s not sent (no master connection?)", name)
    return sent
