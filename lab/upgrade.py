"""What the upgrade lab runs: memcached (apt) per farm and a PHP app (``php -S``) per member.

The app is the real thing the upgrade moves: ``<root>/current`` is a symlink to
``releases/<version>``; every release holds ``index.php`` and ``VERSION``. A fixed router
script includes ``<root>/current/index.php`` on every request (the link is
resolved with readlink on every request, so a switched symlink is seen by the next request). The app:

- answers JSON ``{"version", "member", "hits"}`` with header ``X-App-Version``;
- keeps a per-client session (cookie ``APPSID``, a hit counter) in the farm's memcached;
- refuses (HTTP 409) a client whose cookie ``APPV`` names a newer version than its own — the
  seed's "a session created by a newer version is refused" — and otherwise raises ``APPV``
  to its own version, so a version regression shows up as a failed request.

Processes are started with subprocess argument lists and stopped by PID.
"""

import copy
import shutil
import socket
import statistics
import subprocess
import time
from pathlib import Path

import webfarm_haproxy
from lab import defaults
from lab.haproxy_lab import Instance, haproxy_pillar
from lab.httpapp import Traffic
from lab.loops import Loops
from lab.net import free_port
from lab.proc import stop_process, wait_for

APP_INDEX = r"""<?php
$version = trim(file_get_contents(__DIR__ . '/VERSION'));
$member = getenv('APP_MEMBER') ?: '';
header('X-App-Version: ' . $version);
header('X-App-Member: ' . $member);
header('Content-Type: application/json');
header('Cache-Control: no-store');
$seen = $_COOKIE['APPV'] ?? '';
if ($seen !== '' && version_compare($seen, $version, '>')) {
    http_response_code(409);
    echo json_encode(['error' => "session created by $seen, this is $version", 'version' => $version, 'member' => $member]);
    return;
}
$hits = null;
$cache = getenv('APP_MEMCACHED');
if ($cache && class_exists('Memcached')) {
    [$host, $port] = explode(':', $cache);
    $mc = new Memcached();
    $mc->addServer($host, (int)$port);
    $sid = $_COOKIE['APPSID'] ?? bin2hex(random_bytes(8));
    if (!ctype_xdigit($sid)) { $sid = bin2hex(random_bytes(8)); }
    $hits = $mc->get("sess:$sid");
    $hits = ($hits === false) ? 1 : $hits + 1;
    $mc->set("sess:$sid", $hits, 3600);
    setcookie('APPSID', $sid, ['path' => '/']);
}
if ($seen === '' || version_compare($version, $seen, '>')) {
    setcookie('APPV', $version, ['path' => '/']);
}
echo json_encode(['version' => $version, 'member' => $member, 'hits' => $hits]);
"""

BROKEN_INDEX = r"""<?php
http_response_code(500);
echo "release broken on purpose\n";
"""

ROUTER = r"""<?php
// Resolve `current` on every request (like nginx's $realpath_root): PHP caches the paths of
// included files, so a plain include through the symlink would keep serving the old release.
clearstatcache(true);
$root = getenv('APP_ROOT');
require $root . '/' . readlink($root . '/current') . '/index.php';
"""


# The fixed lab of the upgrade tests and bench/upgrade.py: 2 sites x 2 farms x 2 members, a
# preprod host, and a minion that lies (its grains claim member 3 of s1/f1; no topology names it).
LAB_SITES, LAB_FARMS, LAB_MEMBERS = ("s1", "s2"), ("f1", "f2"), (1, 2)
LAB_PREPROD = "u-preprod"
LAB_ROGUE = "u-rogue"
HW_PROFILE = "generic-x86_64"


def lab_minion_id(site, farm, member):
    return f"u-web-{site}-{farm}-m{member}"


def webfarm_grains(role, site=None, farm=None, member=None, hw_profile=HW_PROFILE):
    """A minion's ``webfarm`` grains."""
    grains = {"role": role, "hw_profile": hw_profile}
    grains.update({k: v for k, v in (("site", site), ("farm", farm), ("member", member)) if v})
    return {"webfarm": grains}


def lab_grains():
    """``{minion_id: grains}`` of the fixed lab's web members, site LBs and preprod host."""
    grains = {
        lab_minion_id(site, farm, member): webfarm_grains("web", site, farm, member)
        for site in LAB_SITES
        for farm in LAB_FARMS
        for member in LAB_MEMBERS
    }
    grains.update({f"u-lb-{site}": webfarm_grains("lb-site", site) for site in LAB_SITES})
    grains[LAB_PREPROD] = webfarm_grains("preprod")
    return grains


ROGUE_GRAINS = webfarm_grains("web", "s1", "f1", 3)


def lab_minions():
    """``{minion_id: grains}`` of every minion the fixed lab starts: :func:`lab_grains` and
    the rogue minion (:data:`LAB_ROGUE`) claiming a web member's place the topology does not
    give it."""
    return {**lab_grains(), LAB_ROGUE: ROGUE_GRAINS}


def wait_port(address, port, timeout=15, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {address}:{port} exited with {proc.returncode}")
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {address}:{port} after {timeout}s")


def build_release(dist, version, broken=False):
    """Write release ``version`` (index.php + VERSION) under ``dist/<version>``; return its path."""
    path = Path(dist) / version
    path.mkdir(parents=True, exist_ok=True)
    (path / "index.php").write_text(BROKEN_INDEX if broken else APP_INDEX)
    (path / "VERSION").write_text(version + "\n")
    (path / "assets").mkdir(exist_ok=True)
    (path / "assets" / "app.css").write_text(f"/* release {version} */\nbody {{ margin: 0 }}\n")
    return path


def install_release(root, dist, version):
    """Lay out ``root/releases/<version>`` + ``current`` as the very first deployment would."""
    root = Path(root)
    (root / "releases").mkdir(parents=True, exist_ok=True)
    shutil.copytree(Path(dist) / version, root / "releases" / version, dirs_exist_ok=True)
    link = root / "current"
    if link.is_symlink():
        link.unlink()
    link.symlink_to(Path("releases") / version)


def start_memcached(address, port):
    binary = shutil.which("memcached") or "/usr/bin/memcached"
    proc = subprocess.Popen(
        [
            binary,
            "-l",
            address,
            "-p",
            str(port),
            "-U",
            "0",
            "-m",
            "16",
            "-c",
            "256",
            "-u",
            "nobody",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(address, port, proc=proc)
    return proc


def memcached_command(address, port, command):
    with socket.create_connection((address, port), timeout=5) as sock:
        sock.sendall(command.encode() + b"\r\n")
        data = b""
        while not data.endswith((b"END\r\n", b"STORED\r\n", b"OK\r\n", b"ERROR\r\n")):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.decode()


class PhpApp:
    """One member's app: ``php -S address:port router.php`` with root/memcached in its env."""

    def __init__(self, root, address, port, member="", memcached=None, workers=2):
        self.root = Path(root)
        self.address, self.port = address, port
        self.member, self.memcached, self.workers = member, memcached, workers
        self.proc = None

    @property
    def url(self):
        return f"http://{self.address}:{self.port}/"

    def start(self):
        router = self.root / "router.php"
        router.write_text(ROUTER)
        env = {
            "PATH": "/usr/bin:/bin",
            "APP_ROOT": str(self.root),
            "APP_MEMBER": self.member,
            "PHP_CLI_SERVER_WORKERS": str(self.workers),
        }
        if self.memcached:
            env["APP_MEMCACHED"] = f"{self.memcached[0]}:{self.memcached[1]}"
        self.proc = subprocess.Popen(
            [
                shutil.which("php") or "/usr/bin/php",
                "-d",
                "realpath_cache_size=0",
                "-d",
                "variables_order=EGPCS",
                "-S",
                f"{self.address}:{self.port}",
                "-t",
                str(self.root),
                str(router),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=str(self.root),
            start_new_session=True,
        )
        wait_port(self.address, self.port, proc=self.proc)
        return self

    def stop(self):
        stop_process(self.proc, group=True)


class Monitor(Loops):
    """Polls every site LB's ``show servers state``: which farm members are not ``ready``."""

    join_timeout = 10

    def __init__(self, instances, interval=0.05):
        self.instances = instances
        self.interval = interval
        self.max_farms_per_site = 0
        self.max_members_per_farm = 0
        self.max_sites_out = 0
        self.ever_down = set()
        self.errors = []
        super().__init__()

    def snapshot(self):
        down = {}
        for site, instance in self.instances.items():
            rows = webfarm_haproxy.parse_servers_state(instance.command("show servers state"))
            for row in rows:
                if not row["be_name"].startswith("farm_"):
                    continue
                if webfarm_haproxy.admin_state(row["srv_admin_state"]) != "ready":
                    farm = row["be_name"][len("farm_") :]
                    down.setdefault(site, {}).setdefault(farm, set()).add(row["srv_name"])
        return down

    def _loop(self, _index):
        while not self._stop.is_set():
            try:
                down = self.snapshot()
            except (OSError, ValueError) as exc:
                self.errors.append(repr(exc))
                time.sleep(self.interval)
                continue
            self.max_sites_out = max(self.max_sites_out, len(down))
            for site, farms in down.items():
                self.max_farms_per_site = max(self.max_farms_per_site, len(farms))
                for farm, servers in farms.items():
                    self.max_members_per_farm = max(self.max_members_per_farm, len(servers))
                    self.ever_down |= {(site, farm, s) for s in servers}
            time.sleep(self.interval)


def orchestrate_report(data):
    """The upgrade runner's report inside ``state.orchestrate`` output (None when absent)."""
    if isinstance(data, dict):
        changes = data.get("changes")
        if isinstance(changes, dict) and isinstance(changes.get("return"), dict):
            return changes["return"]
        for value in data.values():
            found = orchestrate_report(value)
            if found is not None:
                return found
    return None


class FarmLab:
    """Every farm of a ``webfarm:topology`` (sites -> farms -> members with ids) running on
    loopback: memcached per farm, a :class:`PhpApp` per member and per ``preprod`` entry at
    release ``initial``, one site HAProxy per site (for its first LB) and the primary HAProxy.

    Site ``i`` lives on ``127.<10+i>.0.0/16``: its LB on ``.0.1``, farm ``j``'s memcached on
    ``.j.2`` and member ``m`` on ``.j.<m+10>``; preprod on ``127.10.0.<10+k>``, the primary on
    127.0.0.1; every port is free-picked. :attr:`topology` is the input with those addresses,
    what the master's pillar must name. :meth:`pillars` gives each minion's ``upgrade`` /
    ``haproxy`` pillar (paths, URLs, sockets), for :class:`lab.pillar_tree.PillarOverrides`.
    """

    def __init__(self, topology, base_dir, dist, initial="1.0.0", workers=1):
        self.source = topology
        self.base, self.dist = Path(base_dir), Path(dist)
        self.initial, self.workers = initial, workers
        self.topology = None
        self.caches, self.apps, self.instances = {}, {}, {}
        self.site_lbs = {}  # site -> the LB minion its HAProxy instance stands for
        self.primary_port = None
        self._procs = []

    def start(self):
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _app(self, ident, address, memcached=None):
        root = self.base / "apps" / ident
        install_release(root, self.dist, self.initial)
        app = PhpApp(root, address, free_port(address), ident, memcached, self.workers)
        self.apps[ident] = app.start()
        return app

    def _start(self):
        topo = copy.deepcopy(self.source)
        topo["from_mine"] = False
        for s_index, (site, data) in enumerate(sorted(topo["sites"].items()), 1):
            net = f"127.{10 + s_index}"
            lb = data["lbs"][0]
            lb.update(address=f"{net}.0.1", port=free_port(f"{net}.0.1"))
            self.site_lbs[site] = lb["id"]
            for f_index, (farm, farm_data) in enumerate(sorted(data["farms"].items()), 1):
                cache = (f"{net}.{f_index}.2", free_port(f"{net}.{f_index}.2"))
                self._procs.append(start_memcached(*cache))
                self.caches[(site, farm)] = cache
                farm_data["memcached"] = {"address": cache[0], "port": cache[1]}
                for number, member in farm_data["members"].items():
                    app = self._app(member["id"], f"{net}.{f_index}.{int(number) + 10}", cache)
                    member.update(address=app.address, port=app.port)
        for k, entry in enumerate(topo.get("preprod") or [], 1):
            app = self._app(entry["id"], f"127.10.0.{10 + k}")
            entry.update(address=app.address, port=app.port)
        self.primary_port = free_port("127.0.0.1")
        topo["primary_lb"][0].update(address="127.0.0.1", port=self.primary_port)
        self.topology = topo
        self._start_tiers()

    def _start_tiers(self, up_timeout=60):
        """A site HAProxy per site (on its first LB's address) and the primary HAProxy, both
        rendered from :attr:`topology`; wait until every server of each is UP."""
        clean = webfarm_haproxy.validate_topology(self.topology)
        haproxy_dir = str(self.base / "haproxy")
        for site, data in clean["sites"].items():
            lb = data["lbs"][0]
            pillar = haproxy_pillar(haproxy_dir, "site", site, f"{lb['address']}:{lb['port']}")
            pillar["site"]["name"] = site
            settings = webfarm_haproxy.tier_settings(pillar, "site", defaults.load("haproxy"))
            binds = [(lb["address"], lb["port"])]
            text = webfarm_haproxy.render(clean, settings, site=site, binds=binds)
            self.instances[site] = Instance("site", settings, site).start(text)
        bind = f"127.0.0.1:{self.primary_port}"
        settings = webfarm_haproxy.tier_settings(
            haproxy_pillar(haproxy_dir, "primary", "primary", bind),
            "primary",
            defaults.load("haproxy"),
        )
        text = webfarm_haproxy.render(clean, settings, binds=[("127.0.0.1", self.primary_port)])
        self.instances["primary"] = Instance("primary", settings).start(text)
        for name, instance in self.instances.items():
            wait_for(lambda i=instance: all_up(i), up_timeout, f"{name} HAProxy: every server UP")

    def member_pillar(self, ident, source=None, cache=None):
        """``upgrade`` pillar of member (or, without ``cache``, preprod host) ``ident``."""
        app = self.apps[ident]
        upgrade = {
            "root": str(app.root),
            "source": source or str(self.dist / "{version}"),
            "health_url": app.url,
            "health_timeout": "6",
        }
        if cache:
            upgrade["memcached"] = {"address": cache[0], "port": str(cache[1])}
        return {"upgrade": upgrade}

    def pillars(self):
        """``{minion_id: pillar}`` of every member, preprod host and site LB of the lab."""
        out = {}
        for site, data in self.topology["sites"].items():
            for farm, farm_data in data["farms"].items():
                for member in farm_data["members"].values():
                    out[member["id"]] = self.member_pillar(
                        member["id"], cache=self.caches[(site, farm)]
                    )
            socket_path = self.instances[site].socket
            out[self.site_lbs[site]] = {"haproxy": {"site": {"socket": socket_path}}}
        for entry in self.topology.get("preprod") or []:
            out[entry["id"]] = self.preprod_pillar(entry["id"])
        return out

    def preprod_pillar(self, ident):
        """``upgrade`` pillar of preprod host ``ident``: a member's, plus the release's own
        check (PHP must parse its entry point)."""
        pillar = FarmLab.member_pillar(self, ident)
        root = pillar["upgrade"]["root"]
        pillar["upgrade"]["check_cmd"] = f"php -l {root}/releases/{{version}}/index.php"
        return pillar

    def traffic(self, **kwargs):
        """Browser-like sessions through the primary HAProxy (:class:`lab.httpapp.Traffic`)."""
        return Traffic("127.0.0.1", self.primary_port, **{"threads": 6, **kwargs})

    def monitor(self):
        return Monitor({s: i for s, i in self.instances.items() if s != "primary"})

    def stop(self):
        for instance in self.instances.values():
            instance.stop()
        for app in self.apps.values():
            app.stop()
        for proc in self._procs:
            stop_process(proc)


def all_up(instance):
    """Whether every server of the HAProxy ``instance`` is UP."""
    rows = webfarm_haproxy.parse_show_stat(instance.command("show stat"))
    return all(r["status"] == "UP" for r in rows if r["svname"] != "FRONTEND")


def rollout_summary(report, wall):
    """Figures of one upgrade runner ``report`` that took ``wall`` seconds.

    Per wave (its farms run at once): the longest drain wait and the longest health wait of
    its farms (the inherent waits) and its longest farm step (drain + member job + ready);
    ``waves_s`` sums the latter, ``fixed_s`` is the rest of ``wall`` (salt-run, the plan:
    grains of every minion, versions of every member, the preprod record); the overhead per
    wave and per farm step is what the waves took beyond their inherent waits. Also the
    round trips per step and the Salt job latency of each step function
    (``{fun: [seconds]}``)."""
    waves = {}
    for step in report["steps"]:
        timings = step["timings"]
        wave = waves.setdefault(timings["wave"], [0.0, 0.0, 0.0])
        wave[0] = max(wave[0], timings.get("drain_wait", 0))
        wave[1] = max(wave[1], timings.get("health_wait", 0))
        took = sum(timings.get(k, 0) for k in ("drain", "upgrade_step", "rollback", "ready"))
        wave[2] = max(wave[2], took)
    drain = sum(w[0] for w in waves.values())
    health = sum(w[1] for w in waves.values())
    waves_s = sum(w[2] for w in waves.values())
    latency = {}
    for call in report.get("latency") or []:
        latency.setdefault(call["fun"], []).append(call["seconds"])
    steps = max(1, len(report["steps"]))
    return {
        "wall": wall,
        "runner": report.get("seconds"),
        "waves": len(waves),
        "steps": len(report["steps"]),
        "drain": drain,
        "health": health,
        "waves_s": waves_s,
        "fixed_s": wall - waves_s,
        "overhead_per_wave": (waves_s - drain - health) / max(1, len(waves)),
        "overhead_per_step": (waves_s - drain - health) / steps,
        "round_trips": [s["timings"]["round_trips"] for s in report["steps"]],
        "latency": latency,
    }


def median_latency(latency, fun):
    """Median seconds of ``fun``'s calls in a :func:`rollout_summary` latency map (0 if none)."""
    values = latency.get(fun)
    return statistics.median(values) if values else 0.0
