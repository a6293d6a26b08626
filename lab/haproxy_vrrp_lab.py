"""VRRP lab: both HAProxy tiers with two LBs each sharing a VIP by keepalived, in namespaces.

One ``<prefix>-sw`` namespace holds a bridge; every host is a namespace with ``eth0`` on it
(10.18.0.0/24, nothing in the root namespace)::

    client 10.18.0.100      flood 10.18.0.101 (the benchmark's flood, the tests' rogue peer)
    pa 10.18.0.11 + pb 10.18.0.12    primary tier, VIP 10.18.0.10 (vrid 181)
    s1a 10.18.0.21 + s1b 10.18.0.22  site s1, VIP 10.18.0.20 (vrid 182)
    s2 10.18.0.31                    site s2: one LB, no VIP
    web 10.18.0.41-44 (s1 f1/f2 x m1/m2), 10.18.0.51-52 (s2 f1 m1/m2): the backends

HAProxy and keepalived are real, started from the configs ``webfarm_haproxy`` renders from
one pillar for every LB (``ip netns exec``), each a child of the test stopped by PID. No LB
namespace has a default route (the benchmark adds one via the flood namespace while it
floods, so SYN-ACKs to spoofed sources leave as they would to the internet). Client code runs in a thread that entered the client namespace (setns).
"""

import contextlib
import ctypes
import http.client
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import webfarm_haproxy
from lab import defaults
from lab.loops import Loops
from lab.proc import children, stop_process, wait_for

NET = "10.18.0"
PORT = 80
SECRET = "wf18vrrp"  # a VRRPv2 password (tests of the version 2 opt-in only)
PRIMARY_VIP = f"{NET}.10"
S1_VIP = f"{NET}.20"
LBS = {
    "pa": ("primary", None, f"{NET}.11"),
    "pb": ("primary", None, f"{NET}.12"),
    "s1a": ("site", "s1", f"{NET}.21"),
    "s1b": ("site", "s1", f"{NET}.22"),
    "s2": ("site", "s2", f"{NET}.31"),
}
MEMBERS = {
    ("s1", "f1", 1): f"{NET}.41",
    ("s1", "f1", 2): f"{NET}.42",
    ("s1", "f2", 1): f"{NET}.43",
    ("s1", "f2", 2): f"{NET}.44",
    ("s2", "f1", 1): f"{NET}.51",
    ("s2", "f1", 2): f"{NET}.52",
}
# s2/f1/m3 is an Apache (started by the access-log test) serving a static member.json.
APACHE_MEMBER = (("s2", "f1", 3), f"{NET}.53")
CLIENT = f"{NET}.100"
FLOOD = f"{NET}.101"
BACKEND = Path(__file__).with_name("vrrp_backend.py")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def run(argv, check=True, timeout=30):
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def spawn(ns, argv, log_path, **popen):
    """Start ``argv`` inside namespace ``ns``, its output appended to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            **popen,
        )


@contextlib.contextmanager
def in_netns(name):
    """Run the body with this thread in network namespace ``name`` (sockets made there stay
    there); the thread returns to its namespace afterwards."""
    with open("/proc/thread-self/ns/net", "rb") as old, open(f"/run/netns/{name}", "rb") as new:
        if _libc.setns(new.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
        try:
            yield
        finally:
            if _libc.setns(old.fileno(), CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")


def topology():
    def lb(name):
        return {"id": f"lb-{name}", "address": LBS[name][2], "port": PORT}

    farms = {}
    for (site, farm, member), address in [*MEMBERS.items(), APACHE_MEMBER]:
        farms.setdefault(site, {}).setdefault(farm, {"members": {}})["members"][member] = {
            "id": f"web-{site}-{farm}-m{member}",
            "address": address,
            "port": PORT,
        }
    return {
        "from_mine": False,
        "primary_lb": [lb("pa"), lb("pb")],
        "primary_vip": {"address": PRIMARY_VIP, "port": PORT, "vrid": 181},
        "sites": {
            "s1": {
                "lbs": [lb("s1a"), lb("s1b")],
                "vip": {"address": S1_VIP, "port": PORT, "vrid": 182},
                "farms": farms["s1"],
            },
            "s2": {"lbs": [lb("s2")], "farms": farms["s2"]},
        },
    }


def lb_pillar(base_dir, name, **haproxy_extra):
    """The pillar of LB ``name``: the shared topology and haproxy settings, paths of its own."""
    tier, site, _address = LBS[name]
    directory = Path(base_dir) / name
    directory.mkdir(parents=True, exist_ok=True)
    tier_paths = {
        "config": str(directory / "haproxy.cfg"),
        "pidfile": str(directory / "haproxy.pid"),
        "socket": str(directory / "admin.sock"),
        "state_file": str(directory / "servers.state"),
    }
    if site:
        tier_paths["name"] = site
    haproxy = {
        "user": "",
        "group": "",
        "log": None,
        "check": {"inter": "500ms", "fall": 2, "rise": 1, "vip_fall": 12},
        tier: tier_paths,
        "vrrp": {
            # The defaults: VRRPv3, 0.5 s adverts, no password (peers from the topology).
            "netns": None,
            "config": str(directory / "keepalived.conf"),
            "pidfile": str(directory / "keepalived.pid"),
            "vrrp_pidfile": str(directory / "vrrp.pid"),
        },
        **haproxy_extra,
    }
    return {"webfarm": {"topology": topology()}, "haproxy": haproxy}


class Host:
    def __init__(self, lab, name):
        self.lab, self.name, self.ns = lab, name, f"{lab.prefix}-{name}"

    def exec(self, *argv, check=True, timeout=30):
        return run(["ip", "netns", "exec", self.ns, *argv], check=check, timeout=timeout)

    def addresses(self):
        out = run(["ip", "-n", self.ns, "-4", "-o", "addr", "show", "dev", "eth0"]).stdout
        return {line.split()[3].split("/")[0] for line in out.splitlines()}


class LB(Host):
    """One LB namespace: HAProxy (master-worker) and keepalived, both children of the test."""

    def __init__(self, lab, name):
        super().__init__(lab, name)
        self.tier, self.site, self.address = LBS[name]
        self.id = f"lb-{name}"
        self.pillar = lb_pillar(lab.base_dir, name, **lab.haproxy_extra)
        haproxy = defaults.load("haproxy")
        self.settings = webfarm_haproxy.tier_settings(self.pillar["haproxy"], self.tier, haproxy)
        self.vrrp = webfarm_haproxy.vrrp_settings(self.pillar["haproxy"], haproxy)
        self.clean = webfarm_haproxy.validate_topology(self.pillar["webfarm"]["topology"])
        self.haproxy = None
        self.keepalived = None

    def binds(self):
        binds = [(self.address, PORT)]
        vip = webfarm_haproxy.tier_vip(self.clean, self.tier, self.site)
        if vip:
            binds.append((vip["address"], vip["port"], True))
        return binds

    def haproxy_config(self):
        return webfarm_haproxy.render(self.clean, self.settings, site=self.site, binds=self.binds())

    def keepalived_config(self):
        return webfarm_haproxy.render_vrrp(
            self.clean, self.id, self.vrrp, self.settings["monitor_uri"]
        )

    def start_haproxy(self):
        path = Path(self.settings["config"])
        path.write_text(self.haproxy_config())
        argv = ["haproxy", "-W", "-p", self.settings["pidfile"], "-f", str(path)]
        self.haproxy = spawn(self.ns, argv, str(path) + ".log")
        wait_for(lambda: self.http_ok(self.address), 15, f"{self.name} HAProxy")
        return self

    def kill_haproxy(self):
        """SIGKILL the HAProxy master and its worker (a crashed HAProxy)."""
        pids = [self.haproxy.pid, *children(self.haproxy.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.haproxy.wait(10)
        self.haproxy = None

    def start_keepalived(self):
        path = Path(self.vrrp["config"])
        path.write_text(self.keepalived_config())
        path.chmod(0o600)
        argv = [
            "keepalived", "--dont-fork", "--log-console", "--vrrp", "-f", str(path),
            "-p", self.vrrp["pidfile"], "-r", self.vrrp["vrrp_pidfile"],
        ]  # fmt: skip
        self.keepalived = spawn(self.ns, argv, str(path) + ".log", start_new_session=True)
        return self

    def keepalived_pid(self):
        try:
            return int(Path(self.vrrp["pidfile"]).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill_keepalived(self):
        """SIGKILL keepalived and its VRRP child (a dead VRRP daemon: no goodbye advert)."""
        if self.keepalived is not None:
            os.killpg(self.keepalived.pid, signal.SIGKILL)
            self.keepalived.wait(10)
            self.keepalived = None
            return
        pid = self.keepalived_pid()  # started by the state (daemonised)
        if pid:
            for victim in (*children(pid), pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
            wait_for(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), 10, "keepalived")

    def http_ok(self, address, path="/haproxy-health"):
        def probe():
            conn = http.client.HTTPConnection(address, PORT, timeout=1)
            try:
                conn.request("GET", path)
                return conn.getresponse().status
            finally:
                conn.close()

        try:
            return self.lab.call_in(self.ns, probe) is not None
        except OSError:
            return False

    def holds_vip(self):
        vip = webfarm_haproxy.tier_vip(self.clean, self.tier, self.site)
        return bool(vip) and vip["address"] in self.addresses()

    def set_link(self, up):
        """eth0 up or down: a host that drops off the network (and comes back)."""
        run(["ip", "-n", self.ns, "link", "set", "eth0", "up" if up else "down"])

    def stop(self):
        if self.keepalived is not None:
            stop_process(self.keepalived, group=True)
        else:
            pid = self.keepalived_pid()
            if pid and Path(f"/proc/{pid}").exists() and not _zombie(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10, "keepalived")
                if Path(f"/proc/{pid}").exists():
                    for victim in (*children(pid), pid):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(victim, signal.SIGKILL)
        if self.haproxy is not None:
            stop_process(self.haproxy)


def _zombie(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


class VrrpLab:
    def __init__(self, base_dir, prefix, haproxy_extra=None, hosts=("client",), fast=False):
        self.base_dir = Path(base_dir)
        self.prefix = prefix
        self.haproxy_extra = haproxy_extra or {}
        self.namespaces = []
        self.extra_hosts = hosts
        self.lbs = {}
        self.backend = None
        self._veth = 0
        # fast: one HAProxy answers as every member (benchmarks: the LBs are measured, not
        # Python's http.server); the same JSON without the request's headers.
        self.fast_backends = fast

    def _fast_backend_config(self):
        lines = ["global", "    maxconn 8000", "defaults", "    mode http",
                 "    timeout client 30s", "    timeout server 30s", "    timeout connect 5s", ""]  # fmt: skip
        for (site, farm, member), address in MEMBERS.items():
            body = json.dumps({"site": site, "farm": farm, "member": member}).replace('"', '\\"')
            lines += [
                f"frontend m_{site}_{farm}_{member}",
                f"    bind {address}:{PORT}",
                f'    http-request return status 200 content-type application/json string "{body}"',
                "",
            ]
        path = self.base_dir / "fast-backends.cfg"
        path.write_text("\n".join(lines))
        return str(path)

    # -- network
    def _ns(self, name):
        ns = f"{self.prefix}-{name}"
        run(["ip", "netns", "add", ns])
        self.namespaces.append(ns)
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        return ns

    def _host(self, name, *addresses):
        ns = self._ns(name)
        self._veth += 1
        port = f"v{self._veth}"
        sw = f"{self.prefix}-sw"
        run(["ip", "-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0",
             "netns", ns])  # fmt: skip
        run(["ip", "-n", sw, "link", "set", port, "master", "br0", "up"])
        for address in addresses:
            run(["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        return ns

    def call_in(self, ns, func):
        """``func()`` in a thread inside namespace ``ns``; its result (or exception)."""
        box = {}

        def target():
            try:
                with in_netns(ns):
                    box["value"] = func()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                box["error"] = exc

        thread = threading.Thread(target=target)
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]
        return box["value"]

    def start(self, keepalived=True, skip_keepalived=()):
        sw = self._ns("sw")
        run(["ip", "-n", sw, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", sw, "link", "set", "br0", "up"])
        for name in self.extra_hosts:
            self._host(name, CLIENT if name == "client" else FLOOD)
        if "flood" in self.extra_hosts:  # the flood's spoofed sources leave by this gateway
            run(["ip", "-n", f"{self.prefix}-flood", "route", "add", "default", "dev", "eth0"])
        self.web = self._host("web", *MEMBERS.values(), APACHE_MEMBER[1])
        for name, (_tier, _site, address) in LBS.items():
            self._host(name, address)
            self.lbs[name] = LB(self, name)
        identities = [f"{a}:{PORT}:{s}:{f}:{m}" for (s, f, m), a in MEMBERS.items()]
        argv = ["python3", str(BACKEND), *identities]
        if self.fast_backends:
            argv = ["haproxy", "-f", self._fast_backend_config()]
        self.backend = spawn(self.web, argv, self.base_dir / "backends.log")
        # Site LBs first, so the primary tier's first checks find them.
        for name in ("s1a", "s1b", "s2", "pa", "pb"):
            self.lbs[name].start_haproxy()
        if keepalived:
            for name in ("s1a", "s1b", "pa", "pb"):
                if name not in skip_keepalived:
                    self.lbs[name].start_keepalived()
            wait_for(lambda: self.master("primary") and self.master("s1"), 20, "VRRP masters")
        return self

    def master(self, tier):
        """The LB holding the VIP of ``primary`` or ``s1`` (None while nobody does)."""
        names = ("pa", "pb") if tier == "primary" else ("s1a", "s1b")
        holders = [n for n in names if self.lbs[n].holds_vip()]
        return holders[0] if len(holders) == 1 else None

    def close(self):
        for lb in self.lbs.values():
            lb.stop()
        stop_process(self.backend)
        errors = []
        for ns in reversed(self.namespaces):
            proc = run(["ip", "netns", "del", ns], check=False)
            if proc.returncode != 0:
                errors.append(proc.stderr.strip())
        self.namespaces.clear()
        if errors:
            raise RuntimeError(f"could not delete namespaces: {errors}")


class Session:
    """A browser-like client: keeps cookies, one fresh connection per request."""

    def __init__(self, address, port=PORT):
        self.address, self.port = address, port
        self.cookies = {}
        self.extra_headers = {}

    def get(self, path="/", timeout=2):
        conn = http.client.HTTPConnection(self.address, self.port, timeout=timeout)
        try:
            headers = {"Connection": "close", **self.extra_headers}
            if self.cookies:
                headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            for header in resp.headers.get_all("Set-Cookie") or []:
                name, _, value = header.split(";", 1)[0].partition("=")
                self.cookies[name.strip()] = value.strip()
        finally:
            conn.close()
        return resp.status, (json.loads(body) if resp.status == 200 else None)


class StickyTraffic(Loops):
    """Sticky sessions through ``address`` from the client namespace, in threads, until
    stopped: every request's outcome with its time, and each session's first site/farm."""

    def __init__(self, lab, address, sessions=6, pause=0.02):
        self.lab, self.address, self.pause = lab, address, pause
        self.sessions = [Session(address) for _ in range(sessions)]
        self.events = []  # (monotonic time, session index, ok, site, farm)
        super().__init__(threads=sessions)

    def _loop(self, index):
        session = self.sessions[index]
        with in_netns(f"{self.lab.prefix}-client"):
            while not self._stop.is_set():
                try:
                    status, data = session.get()
                    ok = status == 200
                except OSError:
                    ok, data = False, None
                place = (data["site"], data["farm"]) if data else (None, None)
                with self._lock:
                    self.events.append((time.monotonic(), index, ok, *place))
                # A failed request is retried after 0.1 s, as a browser's user would retry.
                time.sleep(self.pause if ok else 0.1)

    def since(self, start):
        with self._lock:
            return [e for e in self.events if e[0] >= start]

    def first_places(self):
        places = {}
        with self._lock:
            for _t, index, ok, site, farm in self.events:
                if ok and index not in places:
                    places[index] = (site, farm)
        return places

    def outage(self, start):
        """(failed requests, seconds from ``start`` until the first success after the last
        failure) for the requests sent since ``start``."""
        events = self.since(start)
        failed = [e for e in events if not e[2]]
        if not failed:
            return 0, 0.0
        last_fail = max(e[0] for e in failed)
        after = [e[0] for e in events if e[2] and e[0] > last_fail]
        recovered = min(after) if after else None
        return len(failed), (recovered - start if recovered else None)

    def break_and_wait(self, fail, settle=6.0, limit=20):
        """Call ``fail()`` and wait until the requests succeed again (at least ``settle`` s,
        at most ``limit`` s): ``(start, failed requests, seconds until they did)`` as
        :meth:`outage` counts them from the moment of the call."""
        start = time.monotonic()
        fail()
        deadline = start + limit
        while time.monotonic() < deadline:
            time.sleep(0.5)
            failed, seconds = self.outage(start)
            if time.monotonic() - start >= settle and (failed == 0 or seconds is not None):
                break
        return (start, *self.outage(start))

    def moves(self):
        """``[(seconds since start, session, old place, new place)]`` of unsticky requests."""
        first = self.first_places()
        with self._lock:
            t0 = self.events[0][0] if self.events else 0
            return [
                (round(t - t0, 2), i, first.get(i), (s, f))
                for t, i, ok, s, f in self.events
                if ok and first.get(i) != (s, f)
            ][:10]

    def unsticky(self):
        """Sessions served by a site or farm other than their first one."""
        first = self.first_places()
        with self._lock:
            bad = {i for _t, i, ok, s, f in self.events if ok and first.get(i) != (s, f)}
        return sorted(bad)
