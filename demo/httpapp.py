"""The demo's web app and HTTP clients, each run inside a lab namespace.

``serve``: a small HTTP app for one web member, answering JSON ``{site, farm, member, path,
version}`` and appending an Apache combined log line per request (client = first
X-Forwarded-For); it writes its pidfile and detaches so ``python -m demo down`` stops it by
pid. Its version is the release ``<app-root>/current`` points at, resolved on every request
(the layout ``farm.release`` keeps), sent as ``X-App-Version``; like the test suite's PHP app
it refuses (409) a session whose ``APPV`` cookie names a newer version, and raises ``APPV``
to its own.
``sessions``: a few cookie-keeping client sessions against a URL; prints JSON per session.
``traffic``: browser-like sessions in threads until a stop file appears; prints a JSON
summary (requests, failures, sessions that were ever served an older version than before).
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


def version_key(version):
    return tuple(int(part) if part.isdigit() else -1 for part in str(version).split("."))


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


class _Traffic:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.requests, self.failures, self.regressions = 0, [], []
        self.versions, self.sessions = {}, 0

    def _request(self, jar):
        conn = http.client.HTTPConnection(self.args.host, self.args.port, timeout=15)
        try:
            headers = {"Connection": "close", "User-Agent": "webfarm-demo-traffic"}
            if jar:
                headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in sorted(jar.items()))
            conn.request("GET", self.args.path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            _cookies(response, jar)
            return response.status, response.headers.get("X-App-Version"), body
        finally:
            conn.close()

    def session(self, number):
        jar, served = {}, []
        for _ in range(self.args.per_session):
            if os.path.exists(self.args.stop_file):
                break
            try:
                status, version, body = self._request(jar)
            except (OSError, http.client.HTTPException) as exc:
                status, version, body = None, None, repr(exc).encode()
            with self.lock:
                self.requests += 1
                if status != 200:
                    self.failures.append([number, status, body[:120].decode(errors="replace")])
                else:
                    self.versions[version] = self.versions.get(version, 0) + 1
                    served.append(version)
            time.sleep(self.args.pause)
        keys = [version_key(v) for v in served]
        if keys != sorted(keys):
            with self.lock:
                self.regressions.append([number, served])

    def worker(self, index):
        number = 0
        while not os.path.exists(self.args.stop_file):
            number += 1
            with self.lock:
                self.sessions += 1
            self.session(f"{index}-{number}")

    def run(self):
        threads = [
            threading.Thread(target=self.worker, args=(n,)) for n in range(self.args.threads)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return {
            "requests": self.requests,
            "sessions": self.sessions,
            "failed": len(self.failures),
            "failures": self.failures[:5],
            "regressions": self.regressions[:5],
            "regressed_sessions": len(self.regressions),
            "versions": self.versions,
        }


def traffic(args):
    print(json.dumps(_Traffic(args).run()))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m demo.httpapp")
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
    t.add_argument("--pause", type=float, default=0.02)
    args = parser.parse_args(argv)
    return {"serve": serve, "sessions": sessions, "traffic": traffic}[args.action](args)


if __name__ == "__main__":
    sys.exit(main())
