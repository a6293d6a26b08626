"""A default is written once: in ``salt/states/<cap>/defaults.yaml``, which the capability's
``map.jinja`` (or its SLS) imports with ``import_yaml`` and ``webfarm.defaults <cap>`` serves to
the execution modules, which pass it to the pure functions of salt/_utils (DEVELOPING.md)."""

import ast
import re
from pathlib import Path

import pytest
import yaml

from lab import defaults

REPO = Path(__file__).resolve().parents[2]
STATES = REPO / "salt" / "states"
YAMLS = sorted(STATES.glob("*/defaults.yaml"))
CAPS = [path.parent.name for path in YAMLS]
IMPORT = "import_yaml tpldir ~ '/defaults.yaml' as defaults"
TEMPLATES = sorted(STATES.glob("**/*.jinja")) + sorted(STATES.glob("**/*.sls"))


def test_every_capability_with_defaults_is_served_by_webfarm_defaults():
    tree = ast.parse((REPO / "salt" / "_modules" / "webfarm.py").read_text())
    served = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == ["CAPABILITIES"]
    )
    assert sorted(served) == CAPS and CAPS


@pytest.mark.parametrize("path", YAMLS, ids=CAPS)
def test_each_defaults_yaml_parses_says_what_it_is_and_map_jinja_imports_it(path):
    text = path.read_text()
    assert text.startswith("# "), "a short comment header first"
    assert isinstance(yaml.safe_load(text), dict)
    assert defaults.load(path.parent.name) == yaml.safe_load(text)
    jinja = path.parent / "map.jinja"
    if jinja.exists():  # the SLS take their settings from it
        assert IMPORT in jinja.read_text(), f"{jinja} must import_yaml its defaults.yaml"


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: str(p.relative_to(STATES)))
def test_no_template_writes_a_defaults_dict_or_asks_the_module(path):
    text = path.read_text()
    assert not re.search(r"set\s+defaults\s*=\s*\{", text), "defaults go in defaults.yaml"
    assert "webfarm.defaults" not in text, f"import_yaml the defaults.yaml ({IMPORT})"


@pytest.mark.parametrize(
    "path", sorted((REPO / "salt" / "_utils").glob("*.py")), ids=lambda p: p.name
)
def test_no_util_holds_a_defaults_dict(path):
    names = {
        target.id
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name) and target.id.endswith("DEFAULTS")
    }
    assert not names, "defaults go in salt/states/<cap>/defaults.yaml"
