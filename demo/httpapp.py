"""The demo's web app and HTTP client, each run inside a lab namespace.

``serve``: a small HTTP app for one web member, answering JSON ``{site, farm, member, path}``
and appending an Apache combined log line per request (client = first X-Forwarded-For);
it writes its pidfile and detaches so ``python -m demo down`` stops it by pid.
``sessions``: a few cookie-keeping client sessions against a URL; prints JSON per session.
"""

import argparse
import http.client
import http.cookies
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 - http.server's naming
        site, farm, member = self.server.identity
        body = json.dumps({"site": site, "farm": farm, "member": member, "path": self.path})
        body = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self._log_request(200, len(body))

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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m demo.httpapp")
    sub = parser.add_subparsers(dest="action", required=True)
    s = sub.add_parser("serve")
    for name in ("address", "site", "farm", "pidfile", "access_log"):
        s.add_argument(f"--{name.replace('_', '-')}", required=True)
    s.add_argument("--port", type=int, default=80)
    s.add_argument("--member", type=int, required=True)
    c = sub.add_parser("sessions")
    c.add_argument("--host", required=True)
    c.add_argument("--port", type=int, default=80)
    c.add_argument("--path", default="/")
    c.add_argument("--sessions", type=int, default=4)
    c.add_argument("--requests", type=int, default=6)
    args = parser.parse_args(argv)
    return serve(args) if args.action == "serve" else sessions(args)


if __name__ == "__main__":
    sys.exit(main())
