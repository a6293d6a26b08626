"""Event tags follow one rule: ``webfarm/<capability>/<action>/<outcome>`` (docs/DEVELOPING.md)."""

import re
from pathlib import Path

import pytest
import yaml

import webfarm_events

REPO = Path(__file__).resolve().parents[2]
PART = r"[a-z][a-z0-9_]*"
RULE = re.compile(rf"^webfarm/{PART}/{PART}/{PART}$")


def reactor_tags():
    conf = yaml.safe_load((REPO / "docs" / "master.d-example.conf").read_text())
    return [tag for entry in conf["reactor"] for tag in entry]


def test_tag_builds_the_rule_and_refuses_a_part_with_a_slash():
    assert webfarm_events.tag("haproxy", "drain", "done") == "webfarm/haproxy/drain/done"
    for bad in (("haproxy", "s1/f2", "drained"), ("upgrade", "", "failed")):
        with pytest.raises(ValueError, match="bad event tag part"):
            webfarm_events.tag(*bad)


def test_every_reactor_tag_follows_the_rule_and_has_its_reactor():
    tags = reactor_tags()
    assert tags, "no reactor in docs/master.d-example.conf"
    assert [t for t in tags if not RULE.match(t)] == []
    conf = yaml.safe_load((REPO / "docs" / "master.d-example.conf").read_text())
    for entry in conf["reactor"]:
        for sls in next(iter(entry.values())):
            assert (REPO / sls.replace("/srv/webfarm/", "")).is_file(), sls


def test_the_rule_catches_the_old_shapes():
    for old in ("webfarm/release/ready", "webfarm/haproxy/f2/drained/x", "webfarm/motd/refresh"):
        assert not RULE.match(old)


def test_every_tag_names_a_capability_by_its_sls_folder():
    folders = {p.name for p in (REPO / "salt" / "states").iterdir() if p.is_dir()}
    literal = re.compile(rf"webfarm/({PART})/{PART}/")
    fired = re.compile(
        r"""(?:webfarm_events\.fire\(__salt__,|webfarm_events\.tag\()\s*["'](\w+)["']"""
    )
    found = {}
    for top in ("salt", "reactor", "docs", "README.md"):
        paths = [REPO / top] if (REPO / top).is_file() else (REPO / top).rglob("*")
        for path in paths:
            if path.suffix not in (".py", ".sls", ".jinja", ".md", ".conf"):
                continue
            text = path.read_text()
            for cap in literal.findall(text) + fired.findall(text):
                found.setdefault(cap, set()).add(str(path.relative_to(REPO)))
    assert {"upgrade", "haproxy", "mysqlsnap", "motd"} <= set(found)
    assert {cap: where for cap, where in found.items() if cap not in folders} == {}
