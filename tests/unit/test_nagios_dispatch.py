"""The check dispatcher (salt/states/nagios/files/nagios-dispatch.py): splitting, matching,
and one real run of it with a fake plugin that reports its environment and limits."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from lab.modload import load_file

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "salt" / "states" / "nagios" / "files" / "nagios-dispatch.py"


def load():
    return load_file("nagios_dispatch", SCRIPT)


TABLE = {
    "checks": [
        {"plugin": "check_load", "argv": ["-w", "4,3,2", "-c", "8,6,4"]},
        {"plugin": "check_dummy", "args": ["[0-3]", "[A-Za-z0-9 _.:-]*"]},
        {"plugin": "check_procs", "args": ["-w", "[0-9]+", "-[a-z]", "[a-z]+"]},
    ]
}


def test_split_keeps_quoted_words_and_expands_nothing():
    d = load()
    assert d.split("check_dummy 0 'all fine'") == ["check_dummy", "0", "all fine"]
    assert d.split('check_dummy 1 "a \\"b\\""') == ["check_dummy", "1", 'a "b"']
    assert d.split("check_disk -w 15% -c 5% -p /") == [
        "check_disk",
        "-w",
        "15%",
        "-c",
        "5%",
        "-p",
        "/",
    ]


@pytest.mark.parametrize(
    "request_",
    ["a; b", "a | b", "a && b", "a > f", "a < f", "echo $(id)", "echo `id`", "echo /etc/*",
     "a &", "f(){ :; }", "echo \"$HOME\"", "'open", "a\nb", "x" * 5000],
)  # fmt: skip
def test_split_refuses_shell_syntax(request_):
    d = load()
    with pytest.raises(d.Refused):
        d.split(request_)


def test_match_exact_patterns_and_verbose_rule():
    d = load()
    assert d.match(TABLE, ["check_load", "-w", "4,3,2", "-c", "8,6,4"])["plugin"] == "check_load"
    assert d.match(TABLE, ["check_dummy", "2", "disk full"])
    assert d.match(TABLE, ["check_procs", "-w", "5", "-a", "sshd"])
    for words in (
        ["check_load", "-w", "4,3,2"],
        ["check_dummy", "4", "x"],
        ["check_dummy", "0", "a/b"],
        ["check_procs", "-w", "5", "-v", "sshd"],
        ["check_log", "-F", "/etc/passwd"],
        [],
    ):
        with pytest.raises(d.Refused):
            d.match(TABLE, words)


def test_real_run_empty_environment_limits_and_refusal(tmp_path):
    checks = tmp_path / "checks"
    checks.mkdir()
    plugin = checks / "check_fake"
    plugin.write_text(
        '#!/bin/sh\nset\nwhile read -r line; do echo "$line"; done < /proc/self/limits\nexit 1\n'
    )
    plugin.chmod(0o755)
    table = tmp_path / "table.json"
    limits = {"cpu": 7, "nproc": 33, "as_mb": 256, "nofile": 40, "fsize_kb": 0}
    table.write_text(
        json.dumps({"checks_dir": str(checks), "timeout": 5, "limits": limits,
                    "checks": [{"plugin": "check_fake", "argv": []}]})
    )  # fmt: skip
    env = {"SSH_ORIGINAL_COMMAND": "check_fake", "SECRET": "x", "PATH": os.environ["PATH"]}
    proc = subprocess.run(
        ["/usr/bin/python3", "-IS", str(SCRIPT), str(table)],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "SECRET" not in proc.stdout and "SSH_ORIGINAL_COMMAND" not in proc.stdout
    rows = {" ".join(line.split()[:-3]): line.split()[-3:-1] for line in proc.stdout.splitlines()
            if line.startswith("Max ")}  # fmt: skip
    assert rows["Max cpu time"] == ["7", "7"]
    assert rows["Max processes"] == ["33", "33"]
    assert rows["Max open files"] == ["40", "40"]
    assert rows["Max address space"] == [str(256 * 1024 * 1024)] * 2
    assert rows["Max file size"] == ["0", "0"]
    env["SSH_ORIGINAL_COMMAND"] = "check_fake; id"
    proc = subprocess.run(
        ["/usr/bin/python3", "-IS", str(SCRIPT), str(table)],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 3 and "refused" in proc.stderr
    assert "uid=" not in proc.stdout
