"""Query the Apache access-log store (MongoDB) and set it up (TTL and query indexes).

The web servers' shipper (``salt://accesslog/files/webfarm_shipper.py``) writes one document
per request; every query here is one aggregation run on the server.

Pillar ``accesslog:store`` (all optional; see ``pillar/accesslog.sls``):

.. code-block:: yaml

    accesslog:
      store:
        uri: mongodb://logstore.example:27017/   # may hold credentials: never logged
        database: weblogs
        collection: access
        dead_letter_collection: access_deadletter
        retention_days: 30      # TTL on the request time
        index_url: true         # index {path, time} for visitors(); costs insert speed
        index_ip: true          # index {ip, time} for hits()

Shard key for a sharded cluster: ``{"path": 1, "_id": 1}`` (see ``webfarm_accesslog``).
"""

import logging

from salt.exceptions import CommandExecutionError, SaltInvocationError

import webfarm_accesslog
import webfarm_events

try:
    import pymongo
    from pymongo.errors import PyMongoError

    HAS_PYMONGO = True
except ImportError:
    HAS_PYMONGO = False

log = logging.getLogger(__name__)

__virtualname__ = "accesslog"


def __virtual__():
    if not HAS_PYMONGO:
        return (False, "accesslog needs pymongo: install it with `salt-pip install pymongo`")
    return __virtualname__


def _settings(**overrides):
    try:
        return webfarm_accesslog.store_settings(
            __salt__["webfarm.defaults"]("accesslog")["store"],
            (__pillar__.get("accesslog") or {}).get("store"),
            **overrides,
        )
    except ValueError as exc:
        raise SaltInvocationError(str(exc)) from None


def _client(settings):
    options = {"tz_aware": True, "appname": "salt-accesslog"}
    if "serverselectiontimeoutms" not in settings["uri"].lower():
        options["serverSelectionTimeoutMS"] = 5000
    return pymongo.MongoClient(settings["uri"], **options)


def _failed(settings, exc):
    where = webfarm_accesslog.redact_uri(settings["uri"])
    return CommandExecutionError(
        f"MongoDB at {where} failed: {type(exc).__name__}: {exc}. Check that the log store is "
        "up and that pillar accesslog:store:uri points at it."
    )


def _aggregate(settings, build, key, *args, **kwargs):
    try:
        pipeline = build(*args, **kwargs)
    except ValueError as exc:
        raise SaltInvocationError(str(exc)) from None
    client = _client(settings)
    try:
        coll = client[settings["database"]][settings["collection"]]
        return webfarm_accesslog.rows(coll.aggregate(pipeline, allowDiskUse=True), key)
    except PyMongoError as exc:
        raise _failed(settings, exc) from None
    finally:
        client.close()


def visitors(url, since=None, until=None, limit=100, prefix=False):
    """
    Which client IPs requested ``url`` (the path, without query string), most hits first.

    Returns ``[{ip, hits, first, last}]`` (times ISO 8601, UTC).

    url
        The path, e.g. ``/index.html``.
    since, until
        Time range (since <= time < until): ISO 8601, epoch seconds or an age like ``7d``.
    limit
        At most this many IPs (default 100).
    prefix
        Match every path that starts with ``url``.

    CLI Example:

    .. code-block:: bash

        salt-call accesslog.visitors /presentations/logstash-monitorama-2013/
        salt-call accesslog.visitors /blog/ since=7d prefix=True limit=20
    """
    settings = _settings()
    return _aggregate(
        settings,
        webfarm_accesslog.visitors_pipeline,
        "ip",
        url,
        since=since,
        until=until,
        limit=limit,
        prefix=prefix,
    )


def hits(ip, since=None, until=None, limit=100):
    """
    What ``ip`` requested: ``[{url, hits, first, last}]``, most hits first.

    CLI Example:

    .. code-block:: bash

        salt-call accesslog.hits 83.149.9.216
        salt-call accesslog.hits 83.149.9.216 since=2015-05-17T00:00:00Z until=2015-05-18
    """
    settings = _settings()
    return _aggregate(
        settings, webfarm_accesslog.hits_pipeline, "url", ip, since=since, until=until, limit=limit
    )


def top_urls(n=10, since=None, until=None):
    """
    The ``n`` most requested paths: ``[{url, hits, first, last}]``.

    CLI Example:

    .. code-block:: bash

        salt-call accesslog.top_urls 20 since=24h
    """
    settings = _settings()
    return _aggregate(
        settings, webfarm_accesslog.top_urls_pipeline, "url", n, since=since, until=until
    )


def status_summary(since=None, until=None):
    """
    Hits per HTTP status: ``{status: hits}``.

    CLI Example:

    .. code-block:: bash

        salt-call accesslog.status_summary since=1h
    """
    settings = _settings()
    rows = _aggregate(
        settings, webfarm_accesslog.status_pipeline, "status", since=since, until=until
    )
    return {row["status"]: row["hits"] for row in rows}


def counts():
    """
    Documents in the access and dead-letter collections: ``{access, dead_letter}``.

    CLI Example:

    .. code-block:: bash

        salt-call accesslog.counts
    """
    settings = _settings()
    client = _client(settings)
    try:
        db = client[settings["database"]]
        return {
            "access": db[settings["collection"]].count_documents({}),
            "dead_letter": db[settings["dead_letter_collection"]].count_documents({}),
        }
    except PyMongoError as exc:
        raise _failed(settings, exc) from None
    finally:
        client.close()


def dead_letters(limit=10):
    """
    The newest unparsable lines with the reason: ``[{line, reason, source, received}]``.

    CLI Example:

    .. code-block:: bash

        salt-call accesslog.dead_letters 5
    """
    try:
        query = webfarm_accesslog.dead_letters_query(limit)
    except ValueError as exc:
        raise SaltInvocationError(str(exc)) from None
    settings = _settings()
    client = _client(settings)
    try:
        coll = client[settings["database"]][settings["dead_letter_collection"]]
        return [
            {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in doc.items()}
            for doc in coll.find(**query)
        ]
    except PyMongoError as exc:
        raise _failed(settings, exc) from None
    finally:
        client.close()


def _plan(settings, db):
    wanted = webfarm_accesslog.wanted_indexes(settings)
    plan = []
    for role, name in (
        ("access", settings["collection"]),
        ("dead", settings["dead_letter_collection"]),
    ):
        current = db[name].index_information()
        for action in webfarm_accesslog.index_actions(wanted[role], current):
            plan.append((role, name, action))
    return plan


def _store_overrides(retention_days, index_url, index_ip):
    return _settings(retention_days=retention_days, index_url=index_url, index_ip=index_ip)


def store_differs(retention_days=None, index_url=None, index_ip=None):
    """
    True when the store's indexes differ from what pillar (or the arguments) want.

    Used by ``accesslog/store.sls`` as its ``onlyif`` so the state is idempotent.

    CLI Example:

    .. code-block:: bash

        salt-call accesslog.store_differs retention_days=14
    """
    settings = _store_overrides(retention_days, index_url, index_ip)
    client = _client(settings)
    try:
        return bool(_plan(settings, client[settings["database"]]))
    except PyMongoError as exc:
        raise _failed(settings, exc) from None
    finally:
        client.close()


def ensure_indexes(retention_days=None, index_url=None, index_ip=None, test=False):
    """
    Create or adjust the TTL index (request time, ``retention_days``) and the optional
    ``{path, time}`` / ``{ip, time}`` query indexes; returns ``{"changes": [...]}``.

    Indexes this function did not create are left alone. With ``test=True`` only reports.
    Fires ``webfarm/accesslog/indexes/done`` when something changed.

    CLI Example:

    .. code-block:: bash

        salt-call accesslog.ensure_indexes
        salt-call accesslog.ensure_indexes retention_days=14 index_ip=False test=True
    """
    settings = _store_overrides(retention_days, index_url, index_ip)
    client = _client(settings)
    done = []
    try:
        db = client[settings["database"]]
        plan = _plan(settings, db)
        descriptions = [webfarm_accesslog.describe(role, action) for role, _, action in plan]
        if test or not plan:
            return {"changes": descriptions, "test": bool(test)}
        for (_role, coll, action), text in zip(plan, descriptions, strict=True):
            kind, name, keys, options = action
            if kind in ("drop", "recreate"):
                db[coll].drop_index(name)
            if kind in ("create", "recreate"):
                db[coll].create_index(keys, name=name, **options)
            if kind == "ttl":
                db.command(
                    "collMod",
                    coll,
                    index={"name": name, "expireAfterSeconds": options["expireAfterSeconds"]},
                )
            done.append(text)
            log.info("accesslog store: %s", text)
    except PyMongoError as exc:
        err = _failed(settings, exc)
        if done:
            err = CommandExecutionError(f"{err} Already done: {'; '.join(done)}")
        raise err from None
    finally:
        client.close()
    webfarm_events.fire(
        __salt__,
        "accesslog",
        "indexes",
        "done",
        {"database": settings["database"], "changes": done},
    )
    return {"changes": done, "test": False}
