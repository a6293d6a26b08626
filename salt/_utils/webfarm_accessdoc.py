"""The access document: the fields of what the shipper writes to the log store, in one place.

The shipper (``salt/states/accesslog/files/webfarm_shipper.py``) writes one document per
request to the access collection and one per unparsable line to the dead-letter collection;
``webfarm_accesslog`` queries and indexes them by the names here. The shipper is deployed to
the web servers as one file and imports nothing, so it names the fields itself;
``tests/unit/test_accessdoc.py`` parses real log lines with it and fails when its documents
and this module drift apart.

A field is in an access document when the ``LogFormat`` logs its directive. ``required``
fields are in every document of the LogFormats the farm ships (``common``, ``combined``,
``vhost_combined``); the others may be absent. ``None`` among a field's types is Apache's
``-`` (not logged).
"""

import datetime as dt
from typing import NamedTuple

NONE = type(None)


class Field(NamedTuple):
    """One field: the Python types of its value, the directive that logs it, what it holds."""

    types: tuple
    origin: str
    meaning: str
    required: bool = False


# MongoDB's primary key: the driver sets an ObjectId on insert (kept across a batch's retries).
ID = "_id"

# The fields the store's queries and indexes name.
IP = "ip"
TIME = "time"
PATH = "path"
STATUS = "status"
SOURCE = "source"
RECEIVED = "received"

ACCESS = {
    IP: Field((str, NONE), "%h (%a without %h)", "client address", required=True),
    "remote_addr": Field((str, NONE), "%a (with %h)", "peer address of the connection"),
    "logname": Field((str, NONE), "%l", "identd logname"),
    "user": Field((str, NONE), "%u", "authenticated user"),
    "vhost": Field((str, NONE), "%v", "canonical server name"),
    "server_name": Field((str, NONE), "%V", "server name by UseCanonicalName"),
    "port": Field((int, NONE), "%p", "server port"),
    TIME: Field((dt.datetime,), "%t", "request time, timezone-aware; stored as UTC", required=True),
    "tz": Field((str,), "%t", "the logged UTC offset, e.g. -0700", required=True),
    "method": Field((str, NONE), "%r or %m", "request method"),
    PATH: Field((str, NONE), "%r or %U", "URL path, without the query string"),
    "query": Field((str, NONE), "%r or %q", "query string without '?'; None when empty"),
    "protocol": Field((str, NONE), "%r or %H", "protocol; None for a two-word request"),
    "request": Field(
        (str, NONE),
        "%r",
        "the raw request line when it does not split into method, path and protocol "
        "(then those three and query are absent)",
    ),
    STATUS: Field((int, NONE), "%>s (%s without %>s)", "final HTTP status", required=True),
    "status_original": Field((int, NONE), "%s (with %>s)", "status before internal redirects"),
    "bytes": Field((int,), "%b or %B", "response body bytes; %b's '-' is 0"),
    "bytes_sent": Field((int, NONE), "%O", "bytes sent, headers included"),
    "bytes_received": Field((int, NONE), "%I", "bytes received, headers included"),
    "duration_us": Field((int,), "%D", "time taken to serve the request, microseconds"),
    "duration_s": Field((int,), "%T", "time taken to serve the request, seconds"),
    "referer": Field((str, NONE), "%{Referer}i", "Referer request header"),
    "user_agent": Field((str, NONE), "%{User-agent}i", "User-Agent request header"),
    SOURCE: Field((str,), "the shipper", "the web server that logged it", required=True),
}

# Families of fields named after a LogFormat argument: the prefix, then the name lowercased
# with every run of other characters as "_" (X-Forwarded-For -> req_x_forwarded_for).
ACCESS_PREFIXES = {
    "req_": Field((str, NONE), "%{Header}i", "a request header but Referer and User-Agent"),
    "resp_": Field((str, NONE), "%{Header}o", "a response header"),
    "env_": Field((str, NONE), "%{VAR}e", "an environment variable"),
}

DEAD = {
    "line": Field((str,), "the shipper", "the line as read (decoded UTF-8)", required=True),
    "reason": Field((str,), "the shipper", "why it did not parse", required=True),
    SOURCE: Field((str,), "the shipper", "the web server that logged it", required=True),
    RECEIVED: Field((dt.datetime,), "the shipper", "when the shipper read it, UTC", required=True),
}

# What the store indexes (webfarm_accesslog names the indexes and sets their options).
TTL_KEY = ((TIME, 1),)  # expires documents retention_days after the request
URL_KEY = ((PATH, 1), (TIME, 1))  # visitors(url); pillar accesslog:store:index_url
IP_KEY = ((IP, 1), (TIME, 1))  # hits(ip); accesslog:store:index_ip
DEAD_TTL_KEY = ((RECEIVED, 1),)  # expires dead letters retention_days after reading
SHARD_KEY = {PATH: 1, ID: 1}  # see webfarm_accesslog


def field(name, fields, prefixes=None):
    """The :class:`Field` of ``name`` in ``fields``, else by its prefix in ``prefixes``; or None."""
    if name in fields:
        return fields[name]
    found = (f for prefix, f in (prefixes or {}).items() if name.startswith(prefix))
    return next(found, None)


def problems(doc, fields, prefixes=None):
    """What in ``doc`` breaks the schema ``fields`` (+ ``prefixes``), as sorted strings.

    ``problems(doc, ACCESS, ACCESS_PREFIXES)`` or ``problems(dead_letter, DEAD)``; ``[]`` when
    the document keeps to it.
    """
    found = [f"missing {name}" for name, f in fields.items() if f.required and name not in doc]
    for name, value in doc.items():
        spec = field(name, fields, prefixes)
        if spec is None:
            found.append(f"unknown field {name}")
        elif type(value) not in spec.types:
            found.append(f"{name} is {type(value).__name__}, not {_names(spec.types)}")
    return sorted(found)


def _names(types):
    return " or ".join(t.__name__ for t in types)
