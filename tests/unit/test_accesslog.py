"""Pure logic of the access-log store (salt/_utils/webfarm_accesslog.py)."""

import datetime as dt

import pytest

import webfarm_accesslog as acl
from lab import defaults

STORE = defaults.load("accesslog")["store"]

NOW = dt.datetime(2026, 1, 10, 12, 0, tzinfo=dt.UTC)


def test_store_settings_defaults_pillar_and_validation():
    s = acl.store_settings(STORE, {"database": "logs", "retention_days": "14"}, index_ip="false")
    assert (s["database"], s["retention_days"], s["index_ip"], s["index_url"]) == (
        "logs",
        14,
        False,
        True,
    )
    for bad, why in [
        ({"uri": "http://x"}, "mongodb://"),
        ({"collection": "a b"}, "not a valid name"),
        ({"retention_days": 0}, "retention_days must be an integer between 1 and 36500"),
        ({"index_url": "maybe"}, "true or false"),
        ({"colection": "x"}, "unknown keys"),
    ]:
        with pytest.raises(ValueError, match=why):
            acl.store_settings(STORE, bad)


def test_redact_uri():
    assert acl.redact_uri("mongodb://u:pw@h1:1,h2:2/db") == "mongodb://u:***@h1:1,h2:2/db"
    assert acl.redact_uri("mongodb://h:1/") == "mongodb://h:1/"


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("7d", NOW - dt.timedelta(days=7)),
        ("90m", NOW - dt.timedelta(minutes=90)),
        ("2015-05-17T10:05:03Z", dt.datetime(2015, 5, 17, 10, 5, 3, tzinfo=dt.UTC)),
        ("2015-05-17T12:05:03+02:00", dt.datetime(2015, 5, 17, 10, 5, 3, tzinfo=dt.UTC)),
        ("2015-05-17", dt.datetime(2015, 5, 17, tzinfo=dt.UTC)),
        (0, dt.datetime(1970, 1, 1, tzinfo=dt.UTC)),
        (None, None),
    ],
)
def test_parse_time(value, want):
    assert acl.parse_time(value, "since", NOW) == want


def test_time_match_order_and_errors():
    assert acl.time_match(now=NOW) == {}
    assert acl.time_match(since="1d", now=NOW) == {"time": {"$gte": NOW - dt.timedelta(days=1)}}
    with pytest.raises(ValueError, match="before"):
        acl.time_match(since="1d", until="2d", now=NOW)
    with pytest.raises(ValueError, match="ISO 8601"):
        acl.time_match(since="yesterday")


def test_visitors_pipeline_is_one_server_side_group():
    pipeline = acl.visitors_pipeline("/a.html", since="1h", limit=5, now=NOW)
    assert pipeline[0] == {
        "$match": {"path": "/a.html", "time": {"$gte": NOW - dt.timedelta(hours=1)}}
    }
    assert pipeline[1]["$group"]["_id"] == "$ip"
    assert pipeline[-1] == {"$limit": 5}
    prefixed = acl.visitors_pipeline("/a.b/", prefix=True)
    assert prefixed[0]["$match"]["path"] == {"$regex": "^/a\\.b/"}


def test_other_pipelines():
    assert acl.hits_pipeline("192.0.2.1")[0] == {"$match": {"ip": "192.0.2.1"}}
    top = acl.top_urls_pipeline(3)
    assert top[0]["$group"]["_id"] == "$path" and top[-1] == {"$limit": 3}
    status = acl.status_pipeline()
    assert status[0]["$group"]["_id"] == "$status" and status[-1] == {"$sort": {"_id": 1}}
    with pytest.raises(ValueError):
        acl.top_urls_pipeline("ten")


def test_dead_letters_query_is_the_newest_first():
    assert acl.dead_letters_query(5) == {
        "filter": {},
        "projection": {"_id": 0},
        "sort": [("received", -1)],
        "limit": 5,
    }
    with pytest.raises(ValueError, match="limit"):
        acl.dead_letters_query(0)


def test_rows_make_plain_data():
    when = dt.datetime(2015, 5, 17, 10, 5, 3)
    assert acl.rows([{"_id": "1.2.3.4", "hits": 2, "first": when, "last": when}], "ip") == [
        {
            "ip": "1.2.3.4",
            "hits": 2,
            "first": "2015-05-17T10:05:03+00:00",
            "last": "2015-05-17T10:05:03+00:00",
        }
    ]


def test_index_plan_create_ttl_recreate_drop_and_foreign_left_alone():
    wanted = acl.wanted_indexes(acl.store_settings(STORE, {"retention_days": 2, "index_ip": False}))
    access = wanted["access"]
    assert access["time_ttl"] == ([("time", 1)], {"expireAfterSeconds": 172800})
    assert "ip_time" not in access
    current = {
        "_id_": {"key": [("_id", 1)]},
        "time_ttl": {"key": [("time", 1)], "expireAfterSeconds": 86400},
        "path_time": {"key": [("path", 1)]},
        "ip_time": {"key": [("ip", 1), ("time", 1)]},
        "mine": {"key": [("user", 1)]},
    }
    actions = acl.index_actions(access, current)
    assert [(a[0], a[1]) for a in actions] == [
        ("recreate", "path_time"),
        ("ttl", "time_ttl"),
        ("drop", "ip_time"),
    ]
    assert acl.describe("access", actions[1]) == "access: set TTL of time_ttl to 172800s"
    done = {name: {"key": keys, **opts} for name, (keys, opts) in access.items()}
    assert acl.index_actions(access, done) == []
