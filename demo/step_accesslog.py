"""Step 2: the web members' access logs shipped into SecantusDB on the log store, then
"which IPs visited /some/page" answered by ``salt logstore accesslog.visitors``.

SecantusDB (a MongoDB-wire server) runs in the logstore namespace on its topology address,
started before orch.cluster (the log store's ``accesslog.store`` makes its indexes). Clients
in three namespaces browse through lb-primary; on every web member, the shipper and the
settings file its highstate installed (``accesslog``, piped mode: the Apache conf that pipes
into it is written too, but the demo's web app writes the log file itself) import that
member's access log.
"""

import subprocess
import sys
import time
from pathlib import Path

import pymongo

from demo import netlab, salt_lab, step_haproxy, topology

TITLE = "step 2: access logs shipped into SecantusDB on logstore; who visited /some/page"
PAGE = "/some/page"
SECANTUSD = Path(sys.executable).with_name("secantusd-py")
# namespace -> the path its client browses
BROWSERS = {"wf-master": PAGE, "wf-monitor": PAGE, "wf-db-replica": "/another/page"}


def _store():
    return topology.load()["logstore"]


def uri():
    store = _store()
    return f"mongodb://{store['address']}:{store['port']}/"


def _paths(minion_id):
    """``accesslog:paths`` of a host, every file under its own dir."""
    root = salt_lab.host_root(minion_id)
    return {
        "shipper": str(root / "usr" / "local" / "bin" / "webfarm_shipper.py"),
        "config": str(root / "etc" / "webfarm" / "accesslog-shipper.json"),
        "spool_dir": str(root / "var" / "spool" / "webfarm-shipper"),
        "status_file": str(root / "run" / "webfarm-shipper.status.json"),
        "log_file": str(root / "var" / "log" / "webfarm-shipper.log"),
        "imported_journal": str(root / "var" / "lib" / "webfarm-shipper" / "imported.json"),
        "apache_conf_available": str(root / "etc" / "apache2" / "conf-available"),
        "apache_conf_enabled": str(root / "etc" / "apache2" / "conf-enabled"),
        "apache_access_log": str(step_haproxy.access_log(minion_id)),
        "syslog_ng_conf_dir": str(root / "etc" / "syslog-ng" / "conf.d"),
        "cron_file": str(root / "etc" / "cron.d" / "webfarm-accesslog-batch"),
    }


def pillar():
    """The web members' and the log store's ``accesslog`` pillar: files under their dirs, no
    packages and no Apache reload (the demo's web app writes the access log itself), the
    shipper run by this Python (it has pymongo); the log store manages the store's indexes
    and is no syslog-ng log host (the demo ships piped)."""
    out = {}
    for host in topology.hosts():
        role = host.grains["webfarm"]["role"]
        if role in ("web", "logstore"):
            out[host.id] = {
                "accesslog": {
                    "paths": _paths(host.id),
                    "install_packages": False,
                    "reload_services": False,
                    "python": sys.executable,
                    "store": {"uri": uri()},
                }
            }
    out[_store()["id"]]["accesslog"]["log_host"] = False
    return out


def start_store(timeout=60):
    """SecantusDB in the log store's namespace on its topology address (before orch.cluster:
    the log store's accesslog.store makes its indexes)."""
    pymongo.uri_parser.parse_uri(uri())
    store = _store()
    root = salt_lab.host_root(store["id"]) / "secantus"
    (root / "data").mkdir(parents=True, exist_ok=True)
    argv = [
        str(SECANTUSD), "--host", store["address"], "--port", str(store["port"]),
        "--storage-path", str(root / "data"), "--log-level", "WARNING",
    ]  # fmt: skip
    with open(root / "secantusd.log", "ab") as log:
        subprocess.Popen(
            netlab.exec_argv(netlab.PREFIX + store["id"], argv),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=root, start_new_session=True,
        )  # fmt: skip
    ping = [
        sys.executable, "-c",
        "import pymongo,sys; pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=500)"
        ".admin.command('ping')", uri(),
    ]  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = subprocess.run(netlab.exec_argv(salt_lab.MASTER_NS, ping), capture_output=True)
        if probe.returncode == 0:
            return
        time.sleep(0.5)
    raise RuntimeError(f"SecantusDB did not answer on {uri()} within {timeout}s; see {root}")


def ship(host):
    """Import the host's access log with the shipper and settings accesslog installed there."""
    paths = _paths(host.id)
    argv = [
        sys.executable, paths["shipper"], "--config", paths["config"],
        "--file", str(step_haproxy.access_log(host.id)),
    ]  # fmt: skip
    proc = subprocess.run(
        netlab.exec_argv(netlab.PREFIX + host.id, argv), capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise RuntimeError(f"shipper on {host.id} exited {proc.returncode}: {proc.stderr[-500:]}")


def run():
    """Browse, ship every member's log with its installed shipper, ask the log store."""
    requests = 0
    for netns, path in BROWSERS.items():
        sessions = step_haproxy.client_sessions(sessions=2, requests=3, path=path, netns=netns)
        failed = sum(s["failed"] for s in sessions)
        if failed:
            raise RuntimeError(f"{failed} requests from {netns} to {path} failed")
        requests += sum(len(s["served"]) for s in sessions)
    webs = [h for h in topology.hosts() if h.grains["webfarm"]["role"] == "web"]
    lines = 0
    for host in webs:
        log = step_haproxy.access_log(host.id)
        lines += sum(1 for _ in log.open()) if log.exists() else 0
        if log.exists():
            ship(host)
    print(
        f"    {requests} requests browsed; {lines} access-log lines shipped from {len(webs)} members"
    )
    counts = salt_lab.call(_store()["id"], "accesslog.counts")
    print(f"    $ salt logstore accesslog.counts\n      {counts}")
    print(f"    $ salt logstore accesslog.visitors {PAGE}")
    answer = salt_lab.call(_store()["id"], "accesslog.visitors", PAGE, want=list)
    for row in answer:
        print(
            f"      {row['ip']:<12} hits {row['hits']:>3}  first {row['first']}  last {row['last']}"
        )
    want = {
        topology.MASTER_ADDRESS if ns == salt_lab.MASTER_NS else _address(ns)
        for ns, path in BROWSERS.items()
        if path == PAGE
    }
    got = {row["ip"] for row in answer}
    if got != want:
        raise RuntimeError(f"visitors of {PAGE}: {sorted(got)}, wanted {sorted(want)}")
    return f"{lines} log lines shipped; visitors of {PAGE}: {', '.join(sorted(got))}"


def _address(netns):
    return next(h.address for h in topology.hosts() if netlab.PREFIX + h.id == netns)
