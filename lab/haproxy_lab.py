"""HAProxy lab: real HTTP backends and real HAProxy instances of both tiers on loopback.

- Backends: one ``ThreadingHTTPServer`` per farm member on ``127.0.<site>.<farm><member>``,
  answering JSON ``{"site", "farm", "member", "xff", "cookie"}``; ``?sleep=<s>`` holds the
  request open (a running session).
- HAProxy: a site LB per site and one primary LB, started in master-worker mode from the
  configs :mod:`webfarm_haproxy` renders, each with its own pidfile, admin stats socket and
  state file under a tmp dir. Stopped by PID.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from urllib.parse import parse_qs, urlparse

import webfarm_haproxy
from lab import defaults
from lab.loops import Loops
from lab.net import free_port
from lab.proc import stop_process, wait_for
from lab.vrrp_backend import JsonHandler, QuietServer

SITES = ("s1", "s2")
FARMS = ("f1", "f2")
MEMBERS = (1, 2)


class _Handler(JsonHandler):
    def answer(self):
        return {**super().answer(), "cookie": self.headers.get("Cookie")}

    def do_GET(self):  # noqa: N802 - http.server's naming
        query = parse_qs(urlparse(self.path).query)
        if "sleep" in query:
            time.sleep(float(query["sleep"][0]))
        super().do_GET()

    do_POST = do_GET


def start_backend(address, identity):
    server = QuietServer((address, 0), _Handler)
    server.identity = identity
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def build_topology(primary_port, site_ports, backends):
    sites = {}
    for s_index, site in enumerate(SITES, 1):
        farms = {}
        for farm in FARMS:
            farms[farm] = {
                "members": {
                    member: {
                        "id": f"web-{site}-{farm}-m{member}",
                        "address": backends[(site, farm, member)].server_address[0],
                        "port": backends[(site, farm, member)].server_address[1],
                    }
                    for member in MEMBERS
                }
            }
        sites[site] = {
            "lbs": [
                {"id": f"lb-{site}", "address": f"127.0.{s_index}.1", "port": site_ports[site]}
            ],
            "farms": farms,
        }
    return {
        "from_mine": False,
        "primary_lb": [{"id": "lb-primary", "address": "127.0.0.1", "port": primary_port}],
        "sites": sites,
    }


def haproxy_pillar(base_dir, tier, name, bind, check_inter="300ms"):
    """Pillar ``haproxy`` for one instance with every path under ``base_dir/name``."""
    directory = os.path.join(base_dir, name)
    os.makedirs(directory, exist_ok=True)
    paths = {
        "config": os.path.join(directory, "haproxy.cfg"),
        "pidfile": os.path.join(directory, "haproxy.pid"),
        "socket": os.path.join(directory, "admin.sock"),
        "state_file": os.path.join(directory, "servers.state"),
        "bind": bind,
    }
    return {
        "user": "",
        "group": "",
        "log": None,
        "check": {"inter": check_inter, "fall": 2, "rise": 1},
        tier: paths,
    }


class Instance:
    """A master-worker HAProxy started from a file, in the foreground (our child)."""

    def __init__(self, tier, settings, site=None):
        self.tier = tier
        self.settings = settings
        self.site = site
        self.proc = None

    @property
    def socket(self):
        return self.settings["socket"]

    def start(self, config_text):
        with open(self.settings["config"], "w", encoding="utf-8") as handle:
            handle.write(config_text)
        log = open(self.settings["config"] + ".log", "ab")  # noqa: SIM115 - child keeps it
        self.proc = subprocess.Popen(
            ["haproxy", "-W", "-p", self.settings["pidfile"], "-f", self.settings["config"]],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        wait_for(lambda: self.worker_pid() is not None, 15, f"{self.tier} HAProxy worker")
        return self

    def command(self, text):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(self.socket)
            sock.sendall(text.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def worker_pid(self):
        try:
            return int(webfarm_haproxy.parse_show_info(self.command("show info"))["Pid"])
        except (OSError, KeyError, ValueError):
            return None

    def master_pid(self):
        return self.proc.pid

    def stop(self):
        stop_process(self.proc)


def stop_pidfile(pidfile, timeout=10):
    """Stop a daemonised HAProxy master by the pid in its pidfile (used after state runs)."""
    try:
        with open(pidfile, encoding="ascii") as handle:
            pid = int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
                if handle.read().split()[2] == "Z":
                    return
        except OSError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


class Client:
    """A browser-like client: keeps cookies, one fresh connection per request."""

    def __init__(self, address, port, cookies=None):
        self.address, self.port = address, port
        self.cookies = dict(cookies or {})

    def get(self, path="/", method="GET", timeout=10):
        conn = http.client.HTTPConnection(self.address, self.port, timeout=timeout)
        try:
            headers = {"Connection": "close"}
            if self.cookies:
                headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            conn.request(method, path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            set_cookies = resp.headers.get_all("Set-Cookie") or []
        finally:
            conn.close()
        new = {}
        for header in set_cookies:
            name, _, value = header.split(";", 1)[0].partition("=")
            new[name.strip()] = value.strip()
        self.cookies.update(new)
        data = json.loads(body) if resp.status == 200 else None
        return resp.status, data, new


class Load(Loops):
    """Client loop(s) in threads counting ok/failed requests until stopped."""

    def __init__(self, address, port, clients=4, cookies=None, path="/"):
        super().__init__(threads=clients)
        self.clients = [Client(address, port, cookies) for _ in range(clients)]
        self.path = path
        self.ok = 0
        self.failed = []
        self.seen = []

    def _loop(self, index):
        client = self.clients[index]
        while not self._stop.is_set():
            try:
                status, data, _ = client.get(self.path)
            except OSError as exc:
                with self._lock:
                    self.failed.append(repr(exc))
                continue
            with self._lock:
                if status == 200:
                    self.ok += 1
                    self.seen.append((data["site"], data["farm"], data["member"]))
                else:
                    self.failed.append(status)


class Lab:
    def __init__(self, base_dir):
        self.base_dir = str(base_dir)
        self.backends = {}
        self.instances = {}
        self.primary_port = free_port("127.0.0.1")
        self.site_ports = {site: free_port(f"127.0.{n}.1") for n, site in enumerate(SITES, 1)}

    def start(self):
        for s_index, site in enumerate(SITES, 1):
            for f_index, farm in enumerate(FARMS, 1):
                for member in MEMBERS:
                    address = f"127.0.{s_index}.{f_index * 10 + member}"
                    self.backends[(site, farm, member)] = start_backend(
                        address, (site, farm, member)
                    )
        self.topology = build_topology(self.primary_port, self.site_ports, self.backends)
        clean = webfarm_haproxy.validate_topology(self.topology)
        for s_index, site in enumerate(SITES, 1):
            pillar = self.pillar("site", site)
            settings = webfarm_haproxy.tier_settings(
                pillar["haproxy"], "site", defaults.load("haproxy")
            )
            binds = [(f"127.0.{s_index}.1", self.site_ports[site])]
            text = webfarm_haproxy.render(clean, settings, site=site, binds=binds)
            self.instances[site] = Instance("site", settings, site).start(text)
        pillar = self.pillar("primary")
        settings = webfarm_haproxy.tier_settings(
            pillar["haproxy"], "primary", defaults.load("haproxy")
        )
        text = webfarm_haproxy.render(clean, settings, binds=[("127.0.0.1", self.primary_port)])
        self.instances["primary"] = Instance("primary", settings).start(text)
        for name, instance in self.instances.items():
            wait_for(lambda i=instance: self._all_up(i), 15, f"{name} servers UP")
        return self

    def _all_up(self, instance):
        rows = webfarm_haproxy.parse_show_stat(instance.command("show stat"))
        return all(r["status"] == "UP" for r in rows if r["svname"] not in ("FRONTEND",))

    def pillar(self, tier, site=None):
        """Full pillar (topology + haproxy) of the lab's ``tier`` instance (``site``)."""
        name = site if tier == "site" else "primary"
        if tier == "site":
            bind = f"127.0.{SITES.index(site) + 1}.1:{self.site_ports[site]}"
        else:
            bind = f"127.0.0.1:{self.primary_port}"
        haproxy = haproxy_pillar(self.base_dir, tier, name, bind)
        if tier == "site":
            haproxy["site"]["name"] = site
        return {"webfarm": {"topology": self.topology}, "haproxy": haproxy}

    def site_client(self, site, cookies=None):
        return Client(f"127.0.{SITES.index(site) + 1}.1", self.site_ports[site], cookies)

    def primary_client(self, cookies=None):
        return Client("127.0.0.1", self.primary_port, cookies)

    def stop(self):
        for instance in self.instances.values():
            instance.stop()
        for server in self.backends.values():
            server.shutdown()
            server.server_close()
