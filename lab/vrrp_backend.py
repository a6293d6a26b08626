"""Web members for the VRRP lab (run inside its ``web`` namespace; not a pytest plugin).

``python3 vrrp_backend.py <address>:<port>:<site>:<farm>:<member> ...`` serves each member
on its own address, answering JSON ``{site, farm, member, xff, peer}``; SIGTERM stops it.
Stdlib only (it runs by path in a namespace); lab/haproxy_lab.py's backends build on its
:class:`JsonHandler` and :class:`QuietServer`.
"""

import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class JsonHandler(BaseHTTPRequestHandler):
    """Answers a GET with :meth:`answer` as JSON: which member (``server.identity``, a
    ``(site, farm, member)``) and the ``X-Forwarded-For`` it was given. Logs nothing."""

    protocol_version = "HTTP/1.1"

    def answer(self):
        site, farm, member = self.server.identity
        return {
            "site": site,
            "farm": farm,
            "member": member,
            "xff": self.headers.get_all("X-Forwarded-For") or [],
        }

    def do_GET(self):  # noqa: N802 - http.server's naming
        body = json.dumps(self.answer()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Handler(JsonHandler):
    def answer(self):
        return {**super().answer(), "peer": self.client_address[0]}


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # health checks close with a reset


class Server(QuietServer):
    request_queue_size = 1024


def main(specs):
    servers = []
    for spec in specs:
        address, port, site, farm, member = spec.split(":")
        server = Server((address, int(port)), Handler)
        server.identity = (site, farm, int(member))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()


if __name__ == "__main__":
    main(sys.argv[1:])
