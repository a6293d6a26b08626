"""Upgrade lab services: memcached (apt) per farm and a PHP app (``php -S``) per member.

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

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

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


def free_port(address="127.0.0.1"):
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


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


def stop(proc, timeout=10, group=False):
    """Stop ``proc`` by PID (with ``group``, its own process group: php -S forks workers)."""
    if proc is None or proc.poll() is not None:
        return
    if group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


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
        stop(self.proc, group=True)


@pytest.fixture(scope="session")
def upgrade_memcached():
    """One real memcached on a free loopback port: ``(address, port)``."""
    address = "127.0.0.1"
    port = free_port(address)
    proc = start_memcached(address, port)
    yield address, port
    stop(proc)


@pytest.fixture(scope="session")
def upgrade_dist(tmp_path_factory):
    """Published releases 1.0.0, 2.0.1 and a broken 2.0.2 (answers 500)."""
    dist = tmp_path_factory.mktemp("upgrade-dist")
    build_release(dist, "1.0.0")
    build_release(dist, "2.0.1")
    build_release(dist, "2.0.2", broken=True)
    return dist
