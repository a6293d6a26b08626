"""Pure logic of the access-log store: settings, time ranges, aggregation pipelines, index plans.

No Salt and no server access here; ``salt/_modules/accesslog.py`` runs what these build.
The documents (written by ``salt/states/accesslog/files/webfarm_shipper.py``) and the fields
queried and indexed here are defined in ``webfarm_accessdoc``.

Sharding (500+ web servers): shard the access collection on ``{"path": 1, "_id": 1}``
(:data:`SHARD_KEY`). ``visitors(url)`` - the question the store exists for - then goes to the
shard(s) owning that path instead of all of them, writes from all servers spread over the
paths, and the ``_id`` suffix lets a hot path split into several chunks. A hashed key on
``_id`` would spread writes equally well but turn every query into a scatter-gather.
"""

import datetime as dt
import re
from urllib.parse import urlsplit, urlunsplit

import webfarm_accessdoc as schema
import webfarm_values

# The defaults are the ``store`` section of salt/states/accesslog/defaults.yaml
# (webfarm.defaults accesslog on a minion): store_settings takes them as ``defaults``.

SHARD_KEY = schema.SHARD_KEY
TTL_INDEX = "time_ttl"
DEAD_TTL_INDEX = "received_ttl"
URL_INDEX = "path_time"
IP_INDEX = "ip_time"
MAX_LIMIT = 100000

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,100}$")


def _bool(value, name):
    return webfarm_values.as_bool(value, name)


def positive_int(value, name, maximum=None):
    return webfarm_values.as_int(value, name, 1, maximum)


def store_settings(defaults, pillar_value=None, **overrides):
    """Validated store settings: pillar ``accesslog:store`` over ``defaults`` (the ``store``
    section of salt/states/accesslog/defaults.yaml), then overrides."""
    settings = dict(defaults)
    pillar_value = pillar_value or {}
    if not isinstance(pillar_value, dict):
        raise ValueError("pillar accesslog:store must be a mapping")
    unknown = set(pillar_value) - set(defaults)
    if unknown:
        raise ValueError(f"unknown keys in accesslog:store: {', '.join(sorted(unknown))}")
    settings.update(pillar_value)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    if not isinstance(settings["uri"], str) or not settings["uri"].startswith(
        ("mongodb://", "mongodb+srv://")
    ):
        raise ValueError("accesslog:store:uri must be a mongodb:// or mongodb+srv:// URI")
    for key in ("database", "collection", "dead_letter_collection"):
        if not isinstance(settings[key], str) or not _NAME.match(settings[key]):
            raise ValueError(f"accesslog:store:{key} is not a valid name: {settings[key]!r}")
    settings["retention_days"] = positive_int(settings["retention_days"], "retention_days", 36500)
    settings["index_url"] = _bool(settings["index_url"], "index_url")
    settings["index_ip"] = _bool(settings["index_ip"], "index_ip")
    return settings


def redact_uri(uri):
    """The URI without its password, for messages."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparsable uri>"
    if "@" not in parts.netloc:
        return uri
    userinfo, hosts = parts.netloc.rsplit("@", 1)
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hosts}"))


def parse_time(value, name, now=None):
    """``since``/``until``: a datetime, epoch seconds, ISO 8601, or an age like ``7d``/``12h``.

    Naive values are taken as UTC. Returns an aware UTC datetime, or None for None.
    """
    if value is None or value == "":
        return None
    now = now or dt.datetime.now(dt.UTC)
    if isinstance(value, dt.datetime):
        stamp = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        stamp = dt.datetime.fromtimestamp(value, dt.UTC)
    elif isinstance(value, str):
        text = value.strip()
        rel = _RELATIVE.match(text)
        if rel:
            return now - dt.timedelta(seconds=int(rel.group(1)) * _UNITS[rel.group(2)])
        try:
            stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{name} must be ISO 8601 (2015-05-17T10:05:00Z), epoch seconds or an age "
                f"like 7d/12h/30m, got {value!r}"
            ) from None
    else:
        raise ValueError(f"{name} has an unsupported type: {type(value).__name__}")
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.astimezone(dt.UTC)


def time_match(since=None, until=None, now=None):
    """The ``time`` condition of a ``$match`` ({} when unbounded); since <= time < until."""
    start = parse_time(since, "since", now)
    end = parse_time(until, "until", now)
    if start and end and start >= end:
        raise ValueError(f"since ({start.isoformat()}) must be before until ({end.isoformat()})")
    cond = {}
    if start:
        cond["$gte"] = start
    if end:
        cond["$lt"] = end
    return {schema.TIME: cond} if cond else {}


def _group_by(field, match, limit, sort=None):
    pipeline = [{"$match": match}] if match else []
    pipeline += [
        {
            "$group": {
                "_id": f"${field}",
                "hits": {"$sum": 1},
                "first": {"$min": f"${schema.TIME}"},
                "last": {"$max": f"${schema.TIME}"},
            }
        },
        {"$sort": sort or {"hits": -1, "_id": 1}},
    ]
    if limit:
        pipeline.append({"$limit": limit})
    return pipeline


def visitors_pipeline(url, since=None, until=None, limit=100, prefix=False, now=None):
    """Who visited ``url`` (the path, without query): one group per client IP."""
    if not isinstance(url, str) or not url:
        raise ValueError("url must be a non-empty path such as /index.html")
    limit = positive_int(limit, "limit", MAX_LIMIT)
    path = {"$regex": "^" + re.escape(url)} if _bool(prefix, "prefix") else url
    match = {schema.PATH: path, **time_match(since, until, now)}
    return _group_by(schema.IP, match, limit)


def hits_pipeline(ip, since=None, until=None, limit=100, now=None):
    """What ``ip`` requested: one group per path."""
    if not isinstance(ip, str) or not ip or " " in ip:
        raise ValueError(f"ip must be an address such as 192.0.2.1, got {ip!r}")
    limit = positive_int(limit, "limit", MAX_LIMIT)
    return _group_by(schema.PATH, {schema.IP: ip, **time_match(since, until, now)}, limit)


def top_urls_pipeline(n=10, since=None, until=None, now=None):
    """The ``n`` most requested paths."""
    n = positive_int(n, "n", MAX_LIMIT)
    return _group_by(schema.PATH, time_match(since, until, now), n)


def status_pipeline(since=None, until=None, now=None):
    """Hits per HTTP status."""
    pipeline = _group_by(schema.STATUS, time_match(since, until, now), None, sort={"_id": 1})
    return pipeline


def dead_letters_query(limit=10):
    """``find()`` arguments for the newest ``limit`` dead letters, without ``_id``."""
    return {
        "filter": {},
        "projection": {schema.ID: 0},
        "sort": [(schema.RECEIVED, -1)],
        "limit": positive_int(limit, "limit", MAX_LIMIT),
    }


def _iso(value):
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.isoformat()
    return value


def rows(results, key):
    """Aggregation output -> plain rows ``{key, hits, first, last}`` (times as ISO strings)."""
    return [
        {
            key: row["_id"],
            "hits": row["hits"],
            "first": _iso(row["first"]),
            "last": _iso(row["last"]),
        }
        for row in results
    ]


def wanted_indexes(settings):
    """{collection role: {index name: (keys, options)}} the store should have."""
    ttl = settings["retention_days"] * 86400
    access = {TTL_INDEX: (list(schema.TTL_KEY), {"expireAfterSeconds": ttl})}
    if settings["index_url"]:
        access[URL_INDEX] = (list(schema.URL_KEY), {})
    if settings["index_ip"]:
        access[IP_INDEX] = (list(schema.IP_KEY), {})
    dead = {DEAD_TTL_INDEX: (list(schema.DEAD_TTL_KEY), {"expireAfterSeconds": ttl})}
    return {"access": access, "dead": dead}


MANAGED = (TTL_INDEX, URL_INDEX, IP_INDEX, DEAD_TTL_INDEX)


def index_actions(wanted, current):
    """Plan the changes from ``current`` (``index_information()``) to ``wanted`` (one role).

    Returns a list of ``(action, name, keys, options)`` with action ``create``, ``drop``,
    ``ttl`` (change expireAfterSeconds in place) or ``recreate`` (keys differ). Only indexes
    named in :data:`MANAGED` are touched; others (added by hand) are left alone.
    """
    actions = []
    for name, (keys, options) in sorted(wanted.items()):
        have = current.get(name)
        if have is None:
            actions.append(("create", name, keys, options))
            continue
        if [tuple(k) for k in have["key"]] != [tuple(k) for k in keys]:
            actions.append(("recreate", name, keys, options))
        elif have.get("expireAfterSeconds") != options.get("expireAfterSeconds"):
            actions.append(("ttl", name, keys, options))
    for name in sorted(current):
        if name in MANAGED and name not in wanted:
            actions.append(("drop", name, None, None))
    return actions


def describe(role, action):
    kind, name, _, options = action
    if kind == "ttl":
        return f"{role}: set TTL of {name} to {options['expireAfterSeconds']}s"
    return f"{role}: {kind} index {name}"
