"""Pillar and command-line values read one way for every capability: flags and integers.

A value from the CLI arrives as a string (``force=true``, ``limit=20``), from pillar as YAML
gives it; both read the same. ``error`` is the capability's own exception class (or any
callable that makes one from the message), so a caller keeps its error type.
"""

TRUE = ("true", "yes", "1")
FALSE = ("false", "no", "0")


def as_bool(value, name, error=ValueError):
    """``value`` as a bool: a bool, or ``true/yes/1`` / ``false/no/0`` in any case."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE + FALSE:
        return value.strip().lower() in TRUE
    raise error(f"{name} must be true or false, got {value!r}")


def as_int(value, name, low=None, high=None, error=ValueError):
    """``value`` as an int within ``low``..``high`` (either may be None): an int or the
    decimal string of one, never a bool or a float."""
    if low is not None and high is not None:
        wanted = f"an integer between {low} and {high}"
    elif low is not None:
        wanted = f"an integer >= {low}"
    elif high is not None:
        wanted = f"an integer <= {high}"
    else:
        wanted = "an integer"
    if isinstance(value, bool) or isinstance(value, float):
        raise error(f"{name} must be {wanted}, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise error(f"{name} must be {wanted}, got {value!r}") from None
    if (low is not None and number < low) or (high is not None and number > high):
        raise error(f"{name} must be {wanted}, got {value!r}")
    return number
