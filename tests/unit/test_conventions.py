"""Salt conventions the whole tree keeps: docstrings with a CLI Example, no shell strings."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SALT_MODULES = sorted(
    path
    for kind in ("_modules", "_states", "_runners")
    for path in (REPO / "salt" / kind).glob("*.py")
)


@pytest.mark.parametrize("path", SALT_MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_public_function_has_a_cli_example(path):
    tree = ast.parse(path.read_text())
    missing = [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and not node.name.startswith("_")
        and "CLI Example:" not in (ast.get_docstring(node) or "")
    ]
    assert missing == [], f"{path.name}: public functions without a 'CLI Example:' docstring"


def test_no_shell_strings_in_product_code():
    offenders = []
    for path in (REPO / "salt").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "shell":
                if isinstance(node.value, ast.Constant) and node.value.value is True:
                    offenders.append(f"{path.relative_to(REPO)}:{node.value.lineno}")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "system"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "os"
            ):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []
