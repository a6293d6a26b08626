"""accesslog execution module through Salt's loader against a real SecantusDB server.

The store is filled by the real shipper (a subprocess) from the real log file; every answer is
checked against an independent computation over the raw file that does not use the parser.
"""

import collections
import datetime as dt
import subprocess
import uuid

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from lab.shipper import shipper_command

LOG = "elastic-apache_logs.log"


def raw_requests(path):
    """(ip, path, status, time) per line, by plain string splitting; skips the broken line."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.count('"') != 6:
            continue
        ip = line.split(" ", 1)[0]
        stamp = line[line.index("[") + 1 : line.index("]")]
        request = line.split('"')[1]
        status = int(line.split('"')[2].split()[0])
        url = request.split(" ")[1].split("?")[0]
        when = dt.datetime.strptime(stamp, "%d/%b/%Y:%H:%M:%S %z").astimezone(dt.UTC)
        out.append((ip, url, status, when))
    return out


@pytest.fixture(scope="module")
def loaded_store(shared_data, mongo_server, tmp_path_factory):
    database = f"acl{uuid.uuid4().hex[:8]}"
    spool = tmp_path_factory.mktemp("spool")
    subprocess.run(
        shipper_command(mongo_server.uri, database, spool, "--file", str(shared_data / LOG)),
        check=True,
        timeout=120,
        capture_output=True,
    )
    return {"uri": mongo_server.uri, "database": database}


@pytest.fixture(scope="module")
def raw(shared_data):
    return raw_requests(shared_data / LOG)


@pytest.fixture
def loaders_pillar(loaded_store):
    return {"accesslog": {"store": dict(loaded_store)}}


def expected_groups(records, key_index, value_index):
    groups = {}
    for rec in records:
        key = rec[key_index]
        hits, first, last = groups.get(key, (0, rec[3], rec[3]))
        groups[key] = (hits + 1, min(first, rec[3]), max(last, rec[3]))
    rows = [
        {value_index: k, "hits": h, "first": f.isoformat(), "last": la.isoformat()}
        for k, (h, f, la) in groups.items()
    ]
    return sorted(rows, key=lambda r: (-r["hits"], r[value_index]))


def test_visitors_agree_with_the_raw_file(modules, raw):
    busiest = [url for url, _ in collections.Counter(r[1] for r in raw).most_common(3)]
    for url in [*busiest, "/favicon.ico", "/presentations/logstash-monitorama-2013/"]:
        want = expected_groups([r for r in raw if r[1] == url], 0, "ip")
        assert want, url
        got = modules.accesslog.visitors(url, limit=100000)
        assert got == want, url


def test_visitors_time_range_and_limit(modules, raw):
    url = "/favicon.ico"
    since = dt.datetime(2015, 5, 18, tzinfo=dt.UTC)
    until = dt.datetime(2015, 5, 19, 12, tzinfo=dt.UTC)
    want = expected_groups([r for r in raw if r[1] == url and since <= r[3] < until], 0, "ip")
    got = modules.accesslog.visitors(url, since="2015-05-18T00:00:00Z", until="2015-05-19T12:00:00")
    assert got == want[:100]
    assert (
        modules.accesslog.visitors(url, limit=3)
        == expected_groups([r for r in raw if r[1] == url], 0, "ip")[:3]
    )


def test_visitors_prefix(modules, raw):
    prefix = "/presentations/logstash-monitorama-2013/images/"
    want = expected_groups([r for r in raw if r[1].startswith(prefix)], 0, "ip")
    assert modules.accesslog.visitors(prefix, prefix=True, limit=100000) == want


def test_hits_agree_with_the_raw_file(modules, raw):
    ip = collections.Counter(r[0] for r in raw).most_common(1)[0][0]
    want = expected_groups([r for r in raw if r[0] == ip], 1, "url")
    assert modules.accesslog.hits(ip, limit=100000) == want


def test_top_urls_and_status_summary(modules, raw):
    want = expected_groups(raw, 1, "url")[:7]
    assert modules.accesslog.top_urls(7) == want
    assert modules.accesslog.status_summary() == dict(
        sorted(collections.Counter(r[2] for r in raw).items())
    )


def test_counts_add_up_and_dead_letter_keeps_the_line(modules, raw):
    assert modules.accesslog.counts() == {"access": len(raw), "dead_letter": 1}
    dead = modules.accesslog.dead_letters(5)
    assert len(dead) == 1
    assert dead[0]["line"].startswith("46.118.127.106 - - [20/May/2015:12:05:17 +0000]")
    assert "does not match LogFormat" in dead[0]["reason"]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: m.accesslog.visitors(""), "url must be"),
        (lambda m: m.accesslog.visitors("/", limit="many"), "limit must be"),
        (lambda m: m.accesslog.visitors("/", since="last tuesday"), "since must be ISO"),
        (lambda m: m.accesslog.visitors("/", since="2015-05-19", until="2015-05-18"), "before"),
        (lambda m: m.accesslog.hits("1.2.3.4 5"), "ip must be"),
        (lambda m: m.accesslog.top_urls(0), "n must be an integer between 1 and"),
        (lambda m: m.accesslog.ensure_indexes(retention_days=-1), "retention_days"),
        (lambda m: m.accesslog.dead_letters("x"), "limit must be"),
    ],
)
def test_bad_arguments_are_clean_errors(modules, call, match):
    with pytest.raises(SaltInvocationError, match=match):
        call(modules)


class TestUnreachable:
    @pytest.fixture
    def loaders_pillar(self):
        from lab.mongo import free_port

        uri = f"mongodb://reader:s3cret@127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=300"
        return {"accesslog": {"store": {"uri": uri}}}

    def test_server_down_is_a_command_error_without_the_password(self, modules):
        with pytest.raises(CommandExecutionError) as err:
            modules.accesslog.visitors("/")
        assert "accesslog:store:uri" in str(err.value)
        assert "reader:***@127.0.0.1" in str(err.value)
        assert "s3cret" not in str(err.value)


class TestIndexes:
    @pytest.fixture
    def loaders_pillar(self, mongo_server):
        store = {"uri": mongo_server.uri, "database": f"idx{uuid.uuid4().hex[:8]}"}
        return {"accesslog": {"store": {**store, "retention_days": 30}}}

    def test_ensure_indexes_creates_then_is_idempotent(self, modules, mongo_server, loaders_pillar):
        acl = modules.accesslog
        db = mongo_server.client()[loaders_pillar["accesslog"]["store"]["database"]]
        assert acl.store_differs() is True
        planned = acl.ensure_indexes(test=True)
        assert planned["test"] is True and len(planned["changes"]) == 4
        assert "time_ttl" not in db.access.index_information()

        done = acl.ensure_indexes()
        assert sorted(done["changes"]) == sorted(planned["changes"])
        info = db.access.index_information()
        assert info["time_ttl"]["expireAfterSeconds"] == 30 * 86400
        assert info["path_time"]["key"] == [("path", 1), ("time", 1)]
        assert info["ip_time"]["key"] == [("ip", 1), ("time", 1)]
        assert db.access_deadletter.index_information()["received_ttl"]["expireAfterSeconds"]
        assert acl.store_differs() is False
        assert acl.ensure_indexes() == {"changes": [], "test": False}

        changed = acl.ensure_indexes(retention_days=7, index_ip=False)
        assert "access: set TTL of time_ttl to 604800s" in changed["changes"]
        assert "access: drop index ip_time" in changed["changes"]
        info = db.access.index_information()
        assert info["time_ttl"]["expireAfterSeconds"] == 604800
        assert "ip_time" not in info
        assert acl.store_differs(retention_days=7, index_ip=False) is False
