"""webfarm.defaults (each capability's salt/states/<cap>/defaults.yaml, through the file
client) and webfarm.wait_http (against a loopback HTTP server), through Salt's loader."""

import os
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

from lab import defaults


def test_defaults_are_the_yaml_and_a_copy(modules):
    snap = modules.webfarm.defaults("mysqlsnap")
    assert snap == defaults.load("mysqlsnap") and snap["schedule"]["max_age"] == "24h"
    snap["schedule"]["max_age"] = "1h"
    assert modules.webfarm.defaults("mysqlsnap")["schedule"]["max_age"] == "24h"
    for capability in ("accesslog", "haproxy", "mysqlsnap", "nagios"):
        assert modules.webfarm.defaults(capability) == defaults.load(capability)


def test_defaults_the_fileserver_cannot_give_come_from_the_cache(modules, minion_config):
    """The fileserver cannot give the file (as with the master unreachable): the copy the file
    client cached last time; no copy: a clear error."""
    wanted = modules.webfarm.defaults("mysqlsnap")  # caches salt://mysqlsnap/defaults.yaml
    files = os.path.join(minion_config["cachedir"], "files")
    cached = os.path.join(files, "gone", "mysqlsnap", "defaults.yaml")
    os.makedirs(os.path.dirname(cached), exist_ok=True)  # a saltenv file_roots no longer has
    shutil.copy(os.path.join(files, "base", "mysqlsnap", "defaults.yaml"), cached)
    try:
        assert modules.webfarm.defaults("mysqlsnap", saltenv="gone") == wanted
    finally:
        shutil.rmtree(os.path.join(files, "gone"))
    with pytest.raises(
        CommandExecutionError,
        match=r"the fileserver \(gone\) has no salt://mysqlsnap/defaults.yaml .* no cached copy",
    ):
        modules.webfarm.defaults("mysqlsnap", saltenv="gone")


def test_defaults_of_a_file_the_fileserver_lacks_is_a_clear_error(modules):
    with pytest.raises(CommandExecutionError, match="has no salt://mysqlsnap/defaults.yaml"):
        modules.webfarm.defaults("mysqlsnap", saltenv="nosuchenv")


def test_an_unknown_capability_is_a_clean_error(modules):
    with pytest.raises(SaltInvocationError, match="no defaults for 'nope': one of accesslog"):
        modules.webfarm.defaults("nope")


class _Flaky(BaseHTTPRequestHandler):
    """Answers ``codes`` in turn, then the last one for ever."""

    codes = [503, 503, 200]
    seen = 0

    def do_GET(self):  # noqa: N802 - the http.server API
        code = self.codes[min(type(self).seen, len(self.codes) - 1)]
        type(self).seen += 1
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    """``serve(codes)``: a loopback HTTP server answering ``codes`` in turn; its URL."""
    servers = []

    def serve(codes):
        handler = type("Handler", (_Flaky,), {"codes": list(codes), "seen": 0})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/", handler

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_wait_http_returns_once_the_url_answers(modules, http_server):
    url, handler = http_server([503, 503, 200])
    ret = modules.webfarm.wait_http(url, timeout=10, interval=0.1)
    assert ret["url"] == url and ret["status"] == 200 and handler.seen == 3
    assert 0.2 <= ret["seconds"] < 10


def test_wait_http_fails_when_the_time_runs_out(modules, http_server):
    url, handler = http_server([500])
    with pytest.raises(
        CommandExecutionError, match=r"did not answer 200 within 0\.5s \(last: 500\)"
    ):
        modules.webfarm.wait_http(url, timeout=0.5, interval=0.1)
    assert handler.seen >= 2
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    with pytest.raises(CommandExecutionError, match="last: URLError"):
        modules.webfarm.wait_http(closed, timeout=0.3, interval=0.1)


@pytest.mark.parametrize(
    "args",
    [
        {"url": "10.0.0.1"},
        {"url": "ftp://10.0.0.1/"},
        {"url": "http://127.0.0.1/", "timeout": -1},
        {"url": "http://127.0.0.1/", "interval": 0},
        {"url": "http://127.0.0.1/", "timeout": "soon"},
    ],
)
def test_wait_http_refuses_bad_arguments(modules, args):
    with pytest.raises(SaltInvocationError):
        modules.webfarm.wait_http(**args)


def test_wait_http_goes_direct_whatever_the_environments_proxy(modules, http_server, monkeypatch):
    url, _ = http_server([200])
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9/")  # nothing listens on the discard port
    monkeypatch.setenv("no_proxy", "")
    assert modules.webfarm.wait_http(url, timeout=2, interval=0.1)["status"] == 200
