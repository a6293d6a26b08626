"""Integration-style: the config accesslog/piped.sls renders, in a real Apache on a loopback
port, piping every request into the real shipper, into the real store, queried through the
accesslog module."""

import time
import uuid

import pytest

from tests.functional.states.test_accesslog import acl_pillar, all_ok, apply


@pytest.fixture
def acl_database():
    return f"apache{uuid.uuid4().hex[:8]}"


@pytest.fixture
def loaders_pillar(mongo_server, acl_database):
    return {"accesslog": {"store": {"uri": mongo_server.uri, "database": acl_database}}}


@pytest.mark.timeout(120)
def test_apache_pipes_requests_into_the_store(
    modules, tmp_path, mongo_server, acl_database, apache_factory
):
    pillar, root = acl_pillar(tmp_path, mongo_server.uri, shipper={"flush_interval": 0.2})
    pillar["accesslog"]["store"]["database"] = acl_database
    all_ok(apply(modules, "accesslog.piped", pillar), False)

    apache = apache_factory(root / "apache2/conf-enabled/webfarm-accesslog.conf", str(root))
    (apache.docroot / "page.html").write_text("<p>hello</p>\n")
    (apache.docroot / "page.html").chmod(0o644)
    apache.start()
    assert apache.piped_loggers(), "Apache did not start the shipper"
    agent = f"webfarm-test/{uuid.uuid4().hex[:6]}"
    statuses = [
        apache.get("/page.html?x=1", {"User-Agent": agent, "Referer": "http://ref.example/a"})
        for _ in range(3)
    ]
    statuses.append(apache.get("/missing.html", {"User-Agent": agent}))
    assert statuses == [200, 200, 200, 404]

    coll = mongo_server.client()[acl_database].access
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and coll.count_documents({"user_agent": agent}) < 4:
        time.sleep(0.2)
    docs = list(coll.find({"user_agent": agent}))
    assert len(docs) == 4
    # Insertion order is not part of the contract (a batch that failed is retried from the
    # spool after later ones), so each line is found by its path.
    pages = [d for d in docs if d["path"] == "/page.html"]
    (missing,) = [d for d in docs if d["path"] == "/missing.html"]
    assert len(pages) == 3
    for page in pages:
        assert (page["ip"], page["method"], page["query"]) == ("127.0.0.1", "GET", "x=1")
        assert (page["status"], page["bytes"], page["referer"]) == (200, 13, "http://ref.example/a")
    assert missing["status"] == 404 and missing["referer"] is None
    assert all(d["time"].year == time.gmtime().tm_year for d in docs)

    visitors = modules.accesslog.visitors("/page.html")
    assert [(v["ip"], v["hits"]) for v in visitors] == [("127.0.0.1", 3)]

    leftover = apache.stop()
    assert leftover == [], "the shipper did not exit after Apache closed the pipe"
