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

import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import webfarm_haproxy
from lab.proc import stop_process

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


class Monitor:
    """Polls every site LB's ``show servers state``: which farm members are not ``ready``."""

    def __init__(self, instances, interval=0.05):
        self.instances = instances
        self.interval = interval
        self.max_farms_per_site = 0
        self.max_members_per_farm = 0
        self.max_sites_out = 0
        self.ever_down = set()
        self.errors = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

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

    def _run(self):
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

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)


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
