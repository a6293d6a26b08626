"""The shipper's documents and the store's queries keep to the schema (webfarm_accessdoc.py).

The shipper is deployed as one file and names the fields itself, so this is the contract: the
documents its real parser builds - from the real log (../shared/data) in each LogFormat the
farm ships, and from a line per directive it knows - have only fields of the schema, of its
types, with its required ones; the schema has no field the shipper never writes; and every
field the store queries or indexes is in the schema.
"""

import webfarm_accessdoc as schema
import webfarm_accesslog as acl
from lab import defaults
from lab.shipper import load_shipper

shipper = load_shipper()

HEADERS = '"%{Referer}i" "%{User-agent}i" "%{X-Forwarded-For}i" "%{Content-Type}o" %{UNIQUE_ID}e'
# (LogFormat, lines) that reach every field the parser can write, each directive on its own
# (two directives for one field, %b and %B, would hide each other's values), with a value and
# with "-" wherever the directive takes one.
DIRECTIVES = [
    ("%t", ["[17/May/2015:10:05:03 -0700]"]),
    ('"%r"', ['"GET /a?b=1 HTTP/1.1"', '"GET /old"', '"\\x16\\x03\\x01"', '"-"']),
    ("%s", ["200", "-"]),
    ("%>s", ["404"]),
    ("%s %>s", ["200 404"]),
    (HEADERS, ['"w" "w" "w" "w" w', '"-" "-" "-" "-" -']),
]


def _simple_directives():
    """The shipper's one-letter directives, alone and after %h (%a names ``ip`` without it)."""
    for letter, (_name, regex, _conv) in shipper._SIMPLE.items():
        values = ["7" if regex else "w"] + (["-"] if regex is None or "-" in regex else [])
        yield f"%{letter}", values
        yield f"%h %{letter}", [f"w {value}" for value in values]


def _real_lines(shared_data):
    text = (shared_data / "elastic-apache_logs.log").read_text(encoding="utf-8")
    return text.split("\n")[:-1]


def _shipped(fmt, lines):
    """(documents, dead letters) as the shipper's sender writes them."""
    return shipper.parse_lines(shipper.LogFormat(fmt), lines, source="web1")


def _real_documents(shared_data):
    """Documents of the real log in each LogFormat the farm ships, and its dead letters."""
    lines = _real_lines(shared_data)
    docs, dead = _shipped("combined", lines)
    common, _ = _shipped("common", [line.rsplit(' "', 2)[0] for line in lines])
    vhost, _ = _shipped("vhost_combined", [f"www.example.com:443 {line}" for line in lines])
    assert min(len(docs), len(common), len(vhost)) >= 9990
    return docs + common + vhost, dead


def _synthetic_documents():
    """Documents of :data:`DIRECTIVES` and every one-letter directive, as the shipper writes them."""
    docs = []
    for fmt, lines in DIRECTIVES + list(_simple_directives()):
        parsed, dead = _shipped(fmt, lines)
        assert dead == [], (fmt, dead)
        docs += parsed
    return docs


def _problems(docs, fields, prefixes=None, required=True):
    """``{problem: how many documents}`` over ``docs``; without ``required``, fields and types
    only (a document of one directive has none of the others)."""
    found = {}
    for doc in docs:
        for problem in schema.problems(doc, fields, prefixes):
            if required or not problem.startswith("missing "):
                found[problem] = found.get(problem, 0) + 1
    return found


def test_real_documents_keep_to_the_schema(shared_data):
    docs, dead = _real_documents(shared_data)
    assert _problems(docs, schema.ACCESS, schema.ACCESS_PREFIXES) == {}
    assert len(dead) == 1 and _problems(dead, schema.DEAD) == {}


def test_every_directive_keeps_to_the_schema():
    docs = _synthetic_documents()
    assert _problems(docs, schema.ACCESS, schema.ACCESS_PREFIXES, required=False) == {}


def test_every_schema_field_is_written_by_the_shipper():
    written = {name for doc in _synthetic_documents() for name in doc}
    assert set(schema.ACCESS) - written == set()
    prefixes = {
        prefix for prefix in schema.ACCESS_PREFIXES for n in written if n.startswith(prefix)
    }
    assert prefixes == set(schema.ACCESS_PREFIXES)


def _referenced(pipeline):
    """Document fields a pipeline reads: ``$match`` keys and ``$field`` values up to the
    ``$group`` (the stages after it read the groups, not documents)."""
    found = set()
    for stage in pipeline:
        if "$match" in stage:
            found |= set(stage["$match"])
        if "$group" in stage:
            found |= set(_field_values(stage["$group"]))
            break
    return found


def _field_values(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _field_values(item)
    elif isinstance(value, str) and value.startswith("$"):
        yield value[1:]


def test_every_field_the_store_uses_is_in_the_schema():
    since = {"since": "1d", "until": "1h"}
    pipelines = [
        acl.visitors_pipeline("/a", **since),
        acl.hits_pipeline("192.0.2.1", **since),
        acl.top_urls_pipeline(3, **since),
        acl.status_pipeline(**since),
    ]
    queried = set().union(*map(_referenced, pipelines))
    indexes = acl.wanted_indexes(acl.store_settings(defaults.load("accesslog")["store"]))
    indexed = {key for keys, _ in indexes["access"].values() for key, _ in keys}
    assert queried | indexed | set(acl.SHARD_KEY) <= set(schema.ACCESS) | {schema.ID}
    assert queried == {schema.IP, schema.PATH, schema.STATUS, schema.TIME}  # the walk sees them
    dead = acl.dead_letters_query(5)
    dead_used = {key for keys, _ in indexes["dead"].values() for key, _ in keys}
    dead_used |= set(dead["filter"]) | set(dead["projection"]) | {k for k, _ in dead["sort"]}
    assert dead_used <= set(schema.DEAD) | {schema.ID}


def test_problems_names_unknown_missing_and_mistyped_fields():
    doc = {"ip": 7, "url": "/", "req_x": None, "source": "s", "status": True, "tz": "+0000"}
    assert schema.problems(doc, schema.ACCESS, schema.ACCESS_PREFIXES) == [
        "ip is int, not str or NoneType",
        "missing time",
        "status is bool, not int or NoneType",
        "unknown field url",
    ]
    assert schema.problems({"req_x": "y"}, schema.DEAD) == [
        "missing line",
        "missing reason",
        "missing received",
        "missing source",
        "unknown field req_x",
    ]
