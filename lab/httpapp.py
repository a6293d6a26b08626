"""The demo's web app and HTTP clients, each run inside a lab namespace.

``serve``: a small HTTP app for one web member, answering JSON ``{site, farm, member, path,
version}`` and appending an Apache combined log line per request (client = first
X-Forwarded-For); it writes its pidfile and detaches so ``python -m demo down`` stops it by
pid. Its version is the release ``<app-root>/current`` points at, resolved on every request
(the layout ``upgrade.release`` keeps), sent as ``X-App-Version``; like the test suite's PHP app
it refuses (409) a session whose ``APPV`` cookie names a newer version, and raises ``APPV``
to its own.
``sessions``: a few cookie-keeping client sessions against a URL; prints JSON per session.
``traffic``: browser-like sessions in threads until a stop file appears; prints a JSON
summary (requests, failures, sessions that were ever served an older version than before).
``sticky``: a fixed number of cookie-keeping sessions, one thread each, until a stop file
appears (a failed request is retried after 0.1 s); prints JSON with every request's
outcome (``time.monotonic()``, session, ok, site, farm) and each session's cookies.
"""

import argparse
import http.client
import http.cookies
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import lab  # noqa: F401 - salt/_utils on sys.path
from lab.loops import Loops
from webfarm_upgrade import version_key  # the product's own version order


def release_version(app_root):
    """The version ``<app_root>/current`` points at now, or None before the first release."""
    if not app_root:
        return None
    try:
        target = os.readlink(os.path.join(app_root, "current"))
        with open(os.path.join(app_root, target, "VERSION"), encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError:
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - http.server's naming
        site, farm, member = self.server.identity
        version = release_version(self.server.app_root)
        cookies = http.cookies.SimpleCookie(self.headers.get("Cookie", ""))
        seen = cookies["APPV"].value if "APPV" in cookies else ""
        status = 200
        data = {"site": site, "farm": farm, "member": member, "path": self.path}
        data["version"] = version
        if version and seen and version_key(seen) > version_key(version):
            status = 409
            data["error"] = f"session created by {seen}, this is {version}"
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if version:
            self.send_header("X-App-Version", version)
            if status == 200 and (not seen or version_key(version) > version_key(seen)):
                self.send_header("Set-Cookie", f"APPV={version}; Path=/")
        self.end_headers()
        self.wfile.write(body)
        self._log_request(status, len(body))

    def _log_request(self, status, size):
        forwarded = self.headers.get("X-Forwarded-For")
        client = forwarded.split(",")[0].strip() if forwarded else self.client_address[0]
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z")
        line = (
            f'{client} - - [{stamp}] "{self.requestline}" {status} {size} '
            f'"{self.headers.get("Referer", "-")}" "{self.headers.get("User-Agent", "-")}"\n'
        )
        with open(self.server.access_log, "a", encoding="utf-8") as handle:
            handle.write(line)

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # health checks close with a reset


def serve(args):
    server = _Server((args.address, args.port), _Handler)
    server.identity = (args.site, args.farm, args.member)
    server.app_root = args.app_root
    server.access_log = args.access_log
    Path(args.access_log).parent.mkdir(parents=True, exist_ok=True)
    if os.fork():
        return 0
    os.setsid()
    Path(args.pidfile).write_text(f"{os.getpid()}\n")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    server.serve_forever()
    return 0


def _cookies(response, jar):
    for header in response.headers.get_all("Set-Cookie") or []:
        cookie = http.cookies.SimpleCookie(header)
        for name, morsel in cookie.items():
            jar[name] = morsel.value


def sessions(args):
    out = []
    for number in range(1, args.sessions + 1):
        jar, served, failed = {}, [], 0
        for _ in range(args.requests):
            conn = http.client.HTTPConnection(args.host, args.port, timeout=5)
            headers = {"User-Agent": f"webfarm-demo-session-{number}"}
            if jar:
                headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in sorted(jar.items()))
            try:
                conn.request("GET", args.path, headers=headers)
                response = conn.getresponse()
                body = response.read()
                _cookies(response, jar)
                if response.status != 200:
                    failed += 1
                    continue
                data = json.loads(body)
                served.append([data["site"], data["farm"], data["member"]])
            except (OSError, http.client.HTTPException, ValueError):
                failed += 1
            finally:
                conn.close()
        out.append({"session": number, "cookies": jar, "served": served, "failed": failed})
    print(json.dumps(out))
    return 0


class Traffic(Loops):
    """Browser-like sessions through ``host:port`` in threads until stopped.

    Each thread runs sessions of ``per_session`` requests (own cookie jar: SITEID, FARMID,
    APPV, ...) and starts a new one after. ``sessions`` maps a session to its
    ``[(status, version, FARMID, SITEID)]``; ``failures`` lists every non-200 or error.
    """

    def __init__(self, host, port, path="/", threads=4, per_session=15, pause=0.02):
        self.host, self.port, self.path = host, port, path
        self.per_session, self.pause = per_session, pause
        self.sessions = {}
        self.failures = []
        super().__init__(threads=threads)

    def _request(self, jar):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=15)
        try:
            headers = {"Connection": "close", "User-Agent": "webfarm-traffic"}
            if jar:
                headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in sorted(jar.items()))
            conn.request("GET", self.path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            _cookies(response, jar)
            return response.status, response.headers.get("X-App-Version"), body
        finally:
            conn.close()

    def _loop(self, number):
        session = 0
        while not self._stop.is_set():
            session += 1
            key, jar, log = f"{number}-{session}", {}, []
            with self._lock:
                self.sessions[key] = log
            for _ in range(self.per_session):
                if self._stop.is_set():
                    break
                try:
                    status, version, body = self._request(jar)
                except (OSError, http.client.HTTPException) as exc:
                    status, version, body = None, None, repr(exc).encode()
                log.append((status, version, jar.get("FARMID"), jar.get("SITEID")))
                if status != 200:
                    with self._lock:
                        self.failures.append((key, status, body[:200]))
                time.sleep(self.pause)

    def requests(self):
        return sum(len(log) for log in self.sessions.values())

    def regressions(self):
        """Sessions whose version went down at some point: ``[(session, [versions])]``."""
        out = []
        for key, log in self.sessions.items():
            versions = [v for status, v, _, _ in log if status == 200]
            keys = [version_key(v) for v in versions]
            if keys != sorted(keys):
                out.append((key, versions))
        return out

    def versions(self):
        """How many successful responses each version served."""
        counts = {}
        for log in self.sessions.values():
            for status, version, _, _ in log:
                if status == 200:
                    counts[version] = counts.get(version, 0) + 1
        return counts

    def summary(self):
        regressions = self.regressions()
        return {
            "requests": self.requests(),
            "sessions": len(self.sessions),
            "failed": len(self.failures),
            "failures": [[k, s, b.decode(errors="replace")] for k, s, b in self.failures[:5]],
            "regressed_sessions": len(regressions),
            "regressions": regressions[:5],
            "versions": self.versions(),
        }


def traffic(args):
    with Traffic(args.host, args.port, args.path, args.threads, args.per_session) as running:
        while not os.path.exists(args.stop_file):
            time.sleep(0.1)
    print(json.dumps(running.summary()))
    return 0


def sticky(args):
    events, jars, lock = [], {}, threading.Lock()

    def loop(number):
        jar = jars.setdefault(number, {})
        while not os.path.exists(args.stop_file):
            conn = http.client.HTTPConnection(args.host, args.port, timeout=2)
            headers = {"Connection": "close", "User-Agent": f"webfarm-demo-sticky-{number}"}
            if jar:
                headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in sorted(jar.items()))
            site = farm = None
            try:
                conn.request("GET", "/", headers=headers)
                response = conn.getresponse()
                body = response.read()
                _cookies(response, jar)
                ok = response.status == 200
                if ok:
                    data = json.loads(body)
                    site, farm = data["site"], data["farm"]
            except (OSError, http.client.HTTPException, ValueError):
                ok = False
            finally:
                conn.close()
            with lock:
                events.append([time.monotonic(), number, ok, site, farm])
            time.sleep(0.02 if ok else 0.1)

    threads = [threading.Thread(target=loop, args=(n,)) for n in range(1, args.sessions + 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"events": events, "cookies": {str(k): v for k, v in jars.items()}}))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m lab.httpapp")
    sub = parser.add_subparsers(dest="action", required=True)
    s = sub.add_parser("serve")
    for name in ("address", "site", "farm", "pidfile", "access_log"):
        s.add_argument(f"--{name.replace('_', '-')}", required=True)
    s.add_argument("--port", type=int, default=80)
    s.add_argument("--member", type=int, required=True)
    s.add_argument("--app-root", help="release layout: <app-root>/current -> releases/<v>")
    c = sub.add_parser("sessions")
    c.add_argument("--host", required=True)
    c.add_argument("--port", type=int, default=80)
    c.add_argument("--path", default="/")
    c.add_argument("--sessions", type=int, default=4)
    c.add_argument("--requests", type=int, default=6)
    t = sub.add_parser("traffic")
    t.add_argument("--host", required=True)
    t.add_argument("--port", type=int, default=80)
    t.add_argument("--path", default="/")
    t.add_argument("--stop-file", required=True)
    t.add_argument("--threads", type=int, default=4)
    t.add_argument("--per-session", type=int, default=15)
    k = sub.add_parser("sticky")
    k.add_argument("--host", required=True)
    k.add_argument("--port", type=int, default=80)
    k.add_argument("--stop-file", required=True)
    k.add_argument("--sessions", type=int, default=6)
    args = parser.parse_args(argv)
    actions = {"serve": serve, "sessions": sessions, "traffic": traffic, "sticky": sticky}
    return actions[args.action](args)


if __name__ == "__main__":
    sys.exit(main())
