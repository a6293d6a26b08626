"""The layering rule (docs/DEVELOPING.md), checked on the source.

- ``salt/_utils/webfarm_<cap>.py`` is pure logic. No I/O in a util: it imports no module that
  runs commands, opens sockets, starts threads, handles signals, talks to a database or
  writes files, and calls no file-writing ``os`` function, ``open`` or ``time.sleep``; the
  execution module does all of that. Enforced on every util but ``IO_WRAPPER``, the one
  small file helper the execution modules share.
- ``lab/`` (the services demo, bench and tests all run) is plain Python: no pytest.
- demo/, bench/ and lab/ never import the test tree nor name a tests module in a string (what
  ``pytest.main -p tests.support...`` would load); demo/ and bench/ run without pytest.
"""

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UTILS = REPO / "salt" / "_utils"

# Reads a small file and replaces one atomically, for the execution modules (motd,
# haproxy_tier, policyroute): the one util that does I/O, on purpose.
IO_WRAPPER = UTILS / "webfarm_files.py"
PURE_UTILS = sorted(p for p in UTILS.glob("webfarm_*.py") if p != IO_WRAPPER)

FORBIDDEN_MODULES = {
    "subprocess",
    "socket",
    "threading",
    "signal",
    "pymysql",
    "pymongo",
    "pyroute2",
    "tempfile",
    "shutil",
    "multiprocessing",
    "asyncio",
    "fcntl",
}
# os functions that change the filesystem or the process (os.path and os.sep stay allowed).
FORBIDDEN_OS_CALLS = {
    "chmod", "chown", "fsync", "kill", "link", "makedirs", "mkdir", "open", "popen",
    "remove", "removedirs", "rename", "replace", "rmdir", "symlink", "system", "truncate",
    "unlink", "write", "listdir", "scandir", "walk", "spawnv", "execv", "fork",
}  # fmt: skip


def violations(source):
    """What in ``source`` breaks the rule, as ``"line: what"`` strings."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("__import__", "import_module")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names = [str(node.args[0].value)]
        for name in names:
            if name.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"{node.lineno}: imports {name}")
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id == "open":
                found.append(f"{node.lineno}: calls open()")
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                if func.value.id == "os" and func.attr in FORBIDDEN_OS_CALLS:
                    found.append(f"{node.lineno}: calls os.{func.attr}()")
                if func.value.id == "time" and func.attr == "sleep":
                    found.append(f"{node.lineno}: calls time.sleep()")
    return found


@pytest.mark.parametrize("path", PURE_UTILS, ids=lambda p: p.name)
def test_util_does_no_io(path):
    assert violations(path.read_text()) == [], f"{path.name} does I/O: move it to _modules"


@pytest.mark.parametrize(
    "source",
    [
        "import subprocess",
        "import os, threading",
        "from signal import SIGTERM",
        "from pymysql.cursors import DictCursor",
        "import shutil as sh",
        "x = __import__('socket')",
        "import os\nos.makedirs('/x')",
        "with open('/x', 'w') as f:\n    pass",
        "import time\ntime.sleep(1)",
    ],
)
def test_the_check_catches_io(source):
    assert violations(source) != []


def test_the_check_allows_pure_code():
    assert violations("import os, re, json\nos.path.join('a', 'b')\nre.compile('x')") == []


def imports_of(root, prefixes):
    """``{file: [module, ...]}`` of the ``*.py`` under ``root`` that import one of ``prefixes``
    (a name or a dotted prefix of it)."""
    out = {}
    for path in sorted(Path(root).rglob("*.py")):
        names = []
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.append(node.module)
        hits = [n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes)]
        if hits:
            out[path.name] = hits
    return out


@pytest.mark.parametrize("tree", ["demo", "bench", "lab"])
def test_demo_bench_and_lab_never_import_the_tests(tree):
    assert imports_of(REPO / tree, ["tests"]) == {}


# A tests module named in a string: what ``pytest.main([..., "-p", "tests.support.x"])``,
# ``importlib.import_module`` or a plugin list would load. Dotted names anywhere in a string;
# a path into the test tree (``tests/...``) in any string but a docstring (which may point a
# reader at a test).
TEST_MODULE = re.compile(r"(?<![\w.])tests(?:\.\w+)+")
TEST_PATH = re.compile(r"(?<![\w./-])tests/\S*")


def names_of_tests(source):
    """``"line: name"`` of each tests module or path that a string in ``source`` names."""
    tree = ast.parse(source)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = TEST_MODULE.findall(node.value)
            if id(node) not in docstrings:
                names += TEST_PATH.findall(node.value)
            found += [f"{node.lineno}: {name}" for name in names]
    return found


@pytest.mark.parametrize("tree", ["demo", "bench", "lab"])
def test_demo_bench_and_lab_never_name_a_tests_module(tree):
    """No ``pytest.main(["-p", "tests.support..."])``: demo/ and bench/ start their services
    and salt daemons through ``lab`` (bench/upgrade.py uses lab.salt_cluster), not through the
    test tree's fixtures (issue 15)."""
    named = {
        str(path.relative_to(REPO)): hits
        for path in sorted((REPO / tree).rglob("*.py"))
        if (hits := names_of_tests(path.read_text()))
    }
    assert named == {}


@pytest.mark.parametrize("tree", ["demo", "bench"])
def test_demo_and_bench_run_without_pytest(tree):
    assert imports_of(REPO / tree, ["pytest", "saltfactories", "_pytest"]) == {}


@pytest.mark.parametrize(
    "source",
    [
        'pytest.main([__file__, "-p", "tests.support.salt_env"])',
        'ARGS = ["-p", "tests.support.upgrade_lab", "--timeout", "900"]',
        'importlib.import_module("tests.support.salt_daemons")',
        'name = f"tests.support.{cap}"',
        'pytest.main(["tests/integration/test_upgrade.py", "-q"])',
        '"""Docstring naming tests.support.upgrade_lab."""',
    ],
)
def test_the_name_check_finds_a_tests_module(source):
    assert names_of_tests(source) != []


def test_the_name_check_allows_prose_and_other_names():
    source = (
        '"""Starts the lab of tests/integration/test_upgrade.py; see the unit tests."""\n'
        'x = ["pytest.main", "lab.salt_cluster", "webfarm_tests.x", "my.tests.y", "tests"]\n'
        "# tests.support.upgrade_lab in a comment is not a string\n"
    )
    assert names_of_tests(source) == []


def test_lab_is_plain_python():
    assert imports_of(REPO / "lab", ["pytest", "saltfactories"]) == {}


def test_the_import_check_finds_a_test_import(tmp_path):
    (tmp_path / "step.py").write_text("import lab.net\nfrom tests.support.sshd import keygen\n")
    (tmp_path / "other.py").write_text("import testsuite\nimport json\n")
    assert imports_of(tmp_path, ["tests"]) == {"step.py": ["tests.support.sshd"]}


def sys_path_edits(path):
    """Lines of ``path`` that change ``sys.path`` (a call on it or an assignment into it)."""
    found = []
    for node in ast.walk(ast.parse(Path(path).read_text(), filename=str(path))):
        target = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            target = node.func.value
        elif isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            target = next((t.value for t in targets if isinstance(t, ast.Subscript)), None)
        if (
            isinstance(target, ast.Attribute)
            and target.attr == "path"
            and isinstance(target.value, ast.Name)
            and target.value.id == "sys"
        ):
            found.append(node.lineno)
    return sorted(found)


def test_sys_path_is_edited_in_one_place():
    """``lab/__init__.py`` puts salt/_utils on sys.path (pytest's ``pythonpath`` does it for
    the tests); a bench script, run by path, adds only the repository, once."""
    edits = {}
    for tree in ("salt", "lab", "demo", "bench", "tests", "scripts"):
        for path in sorted((REPO / tree).rglob("*.py")):
            if lines := sys_path_edits(path):
                edits[str(path.relative_to(REPO))] = len(lines)
    benches = {name: n for name, n in edits.items() if name.startswith("bench/")}
    assert {k: v for k, v in edits.items() if k not in benches} == {"lab/__init__.py": 1}
    assert set(benches.values()) == {1}, benches


def test_the_sys_path_check_sees_each_form(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "import sys\nsys.path.insert(0, 'a')\nsys.path[:0] = ['b']\nsys.path.append('c')\n"
        "x = sys.path[0]\n"
    )
    assert sys_path_edits(module) == [2, 3, 4]
