"""A real Apache (Debian apache2) with its own ServerRoot and config on a loopback port.

``apache_factory(include)`` writes a minimal httpd.conf that ``Include``s ``include`` (e.g. the
config an SLS rendered), and returns a handle: ``check()`` runs ``apache2 -t -f <conf>``,
``start()`` runs it in the foreground (stopped by PID at teardown, as are the piped loggers it
started: its children whose command line holds the marker path).
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from lab.net import free_port
from lab.proc import stop_process

APACHE2 = shutil.which("apache2") or "/usr/sbin/apache2"
MODULES = Path("/usr/lib/apache2/modules")

CONF = """\
ServerRoot "{root}"
DefaultRuntimeDir "{root}/run"
PidFile "{root}/run/httpd.pid"
Listen 127.0.0.1:{port}
ServerName 127.0.0.1
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
User www-data
Group www-data
ErrorLog "{root}/error.log"
LogLevel warn
DocumentRoot "{docroot}"
<Directory "{docroot}">
    Require all granted
</Directory>
LogFormat "%h %l %u %t \\"%r\\" %>s %b \\"%{{Referer}}i\\" \\"%{{User-agent}}i\\"" combined
LogFormat "%h %l %u %t \\"%r\\" %>s %b" common
LogFormat "%v:%p %h %l %u %t \\"%r\\" %>s %O \\"%{{Referer}}i\\" \\"%{{User-Agent}}i\\"" vhost_combined
Include "{include}"
"""


def _alive(pid):
    """True while ``pid`` runs (zombies count as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Apache:
    def __init__(self, root, include, marker):
        if not os.path.isabs(marker) or len(marker) < 12:
            raise ValueError("marker must be a unique absolute path (it selects the loggers)")
        self.root = Path(root)
        self.port = free_port()
        self.marker = marker
        (self.root / "run").mkdir(parents=True, exist_ok=True)
        self.docroot = Path(tempfile.mkdtemp(prefix="webfarm-apache-docroot-"))
        os.chmod(self.docroot, 0o755)
        self.conf = self.root / "httpd.conf"
        self.conf.write_text(
            CONF.format(
                root=self.root,
                port=self.port,
                modules=MODULES,
                docroot=self.docroot,
                include=include,
            )
        )
        self.proc = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def check(self):
        return subprocess.run(
            [APACHE2, "-t", "-f", str(self.conf)], capture_output=True, text=True, timeout=30
        )

    def start(self, timeout=20):
        self.proc = subprocess.Popen(
            [APACHE2, "-f", str(self.conf), "-DFOREGROUND"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"apache2 exited: {self.proc.stderr.read().decode()}")
            try:
                urllib.request.urlopen(self.url + "/", timeout=1).close()
                return self
            except urllib.error.HTTPError:
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("apache2 did not answer in time")

    def get(self, path, headers=None):
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def piped_loggers(self):
        """PIDs of the running Apache's children whose command line holds the marker."""
        if self.proc is None:
            return []
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.proc.pid and self.marker.encode() in cmdline:
                pids.append(int(entry.name))
        return pids

    def stop(self, timeout=20):
        """Stop Apache, then wait for (and, if need be, kill) the piped loggers it had started."""
        loggers = self.piped_loggers()
        stop_process(self.proc, timeout)
        self.proc = None
        deadline = time.monotonic() + timeout
        leftover = loggers
        while leftover and time.monotonic() < deadline:
            time.sleep(0.2)
            leftover = [pid for pid in leftover if _alive(pid)]
        for pid in leftover:
            os.kill(pid, signal.SIGKILL)
        return leftover

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.docroot, ignore_errors=True)
