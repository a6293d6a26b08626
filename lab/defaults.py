"""A capability's defaults as the repository holds them: ``salt/states/<cap>/defaults.yaml``.

The one file its ``map.jinja``/SLS import (``import_yaml``) and ``webfarm.defaults <cap>``
serves on a minion (salt/_modules/webfarm.py); the tests, the benches and the demo read it
here, so none writes a default again.
"""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
STATES = REPO / "salt" / "states"


def path(capability):
    """``salt/states/<capability>/defaults.yaml`` in this repository."""
    return STATES / capability / "defaults.yaml"


def load(capability):
    """The parsed ``defaults.yaml`` of ``capability`` (a fresh dict on every call)."""
    with open(path(capability), encoding="utf-8") as handle:
        return yaml.safe_load(handle)
