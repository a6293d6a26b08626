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
