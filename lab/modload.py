"""Importing a Python file by its path: the programs Salt deploys (``salt/states/*/files``)
and the execution modules, which no package holds."""

import importlib.util


def load_file(name, path):
    """The file at ``path`` run as a fresh module named ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
