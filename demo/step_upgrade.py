"""Step 6: the preprod gate, a concurrent app upgrade and an automatic rollback, all started
by the ``webfarm/upgrade/release/ready`` event, under live traffic.

Releases are published under ``$WEBFARM_DEMO_DIR/dist/<version>`` (the binhost's part); one
member (``web-s1-f2-m2``) takes its releases from a second dist where 2.1.0 is broken (no
VERSION: its health check never sees 2.1.0). Every web member and the preprod host first get
1.0.0 by ``upgrade.release`` (their first deployment) and a memcached runs per farm on the
address the topology pillar names. Then, with browser-like sessions running through
lb-primary from the master's namespace:

1. ``webfarm/upgrade/release/ready 2.0.0`` is refused: 2.0.0 was never tested on preprod;
2. ``state.orchestrate upgrade.preprod`` tests 2.0.0 on ``preprod-generic`` (release, HTTP
   health, the release's check command) and the master records it;
3. ``webfarm/upgrade/release/ready 2.0.0`` again: the reactor's orchestration upgrades one farm per
   site at a time, both sites at once;
4. 2.1.0 is tested OK on preprod, then released: the farm of the broken member fails its
   health check and is rolled back to 2.0.0 automatically and put back in service.

The runner's ``webfarm/upgrade/*`` events are shown as they arrive (``salt-run state.event``).
"""

import json
import queue
import shutil
import subprocess
import sys
import threading
import time

from demo import netlab, salt_lab, topology
from lab.upgrade import orchestrate_report

TITLE = (
    "step 6: preprod gate, app upgrade 1.0.0 -> 2.0.0 with sites concurrently, automatic"
    " rollback of a broken 2.1.0, started by webfarm/upgrade/release/ready, under live traffic"
)
OLD, NEW, BAD = "1.0.0", "2.0.0", "2.1.0"
BROKEN_MEMBER = "web-s1-f2-m2"
WEB = ("-G", "webfarm:role:web")
ROLLOUT_TIMEOUT = 300


def _dist(broken=False):
    return salt_lab.STATE_DIR / ("dist-broken" if broken else "dist")


def _web_hosts():
    return [h for h in topology.hosts() if h.grains["webfarm"]["role"] == "web"]


def _preprod_hosts():
    return [h for h in topology.hosts() if h.grains["webfarm"]["role"] == "preprod"]


def pillar():
    """Each web member's and preprod host's ``upgrade`` pillar: release root, the demo dist
    (the broken member: the second dist), health URL; preprod also a release check."""
    ports = {
        member["id"]: member.get("port", 80)
        for site in topology.load()["sites"].values()
        for farm in site["farms"].values()
        for member in farm["members"].values()
    }
    ports.update({p["id"]: p.get("port", 80) for p in topology.load().get("preprod", [])})
    out = {}
    for host in _web_hosts() + _preprod_hosts():
        settings = {
            "root": str(salt_lab.app_root(host.id)),
            "source": str(_dist(host.id == BROKEN_MEMBER) / "{version}"),
            "health_url": f"http://{host.address}:{ports[host.id]}/",
            "health_timeout": 8,
            "php": {  # upgrade.php writes these; the 8.x binaries named are not run here
                "base": str(salt_lab.host_root(host.id) / "etc" / "webfarm" / "php"),
                "vhost": str(
                    salt_lab.host_root(host.id)
                    / "etc"
                    / "apache2"
                    / "conf-available"
                    / "webfarm-php.conf"
                ),
            },
        }
        if host.grains["webfarm"]["role"] == "preprod":
            release = salt_lab.app_root(host.id) / "releases" / "{version}"
            settings["check_cmd"] = ["test", "-s", f"{release}/static/app.css"]
        out[host.id] = {"upgrade": settings}
    return out


def publish(version, broken=False):
    """Build release ``version`` into the dists (what a build server would publish); a broken
    one (in the second dist only) has no VERSION, so the app never reports it."""
    for dist in (_dist(), _dist(True)):
        path = dist / version
        shutil.rmtree(path, ignore_errors=True)
        (path / "static").mkdir(parents=True, exist_ok=True)
        (path / "static" / "app.css").write_text(f"/* release {version} */\n")
        if not (broken and dist == _dist(True)):
            (path / "VERSION").write_text(version + "\n")
    return _dist() / version


def _listening(ns, port):
    out = subprocess.run(
        ["ss", "-N", ns, "-Hltn", f"sport = :{port}"], capture_output=True, text=True
    )
    return bool(out.stdout.strip())


def start_memcached():
    """One memcached per farm, in the namespace of the member that owns its address."""
    by_address = {h.address: h.id for h in topology.hosts()}
    started = []
    for site in topology.load()["sites"].values():
        for farm in site["farms"].values():
            cache = farm.get("memcached")
            if not cache:
                continue
            owner = by_address[cache["address"]]
            ns, port = netlab.PREFIX + owner, int(cache.get("port", 11211))
            argv = ["memcached", "-l", cache["address"], "-p", str(port), "-U", "0", "-m", "16"]
            proc = subprocess.Popen(
                netlab.exec_argv(ns, [*argv, "-u", "nobody"]),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            pidfile = salt_lab.host_root(owner) / "run" / "memcached.pid"
            pidfile.parent.mkdir(parents=True, exist_ok=True)
            pidfile.write_text(f"{proc.pid}\n")  # ip netns exec execs: this is memcached's pid
            started.append((ns, port, proc))
    deadline = time.monotonic() + 15
    for ns, port, proc in started:
        while not _listening(ns, port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"memcached in {ns} did not listen on port {port}")
            time.sleep(0.1)
    return len(started)


def _versions():
    answer = salt_lab.salt(*WEB, "upgrade.version")
    if len(answer) != len(_web_hosts()):
        raise RuntimeError(f"upgrade.version answered from {sorted(answer)} only")
    return answer


class _Events:
    """``salt-run state.event 'webfarm/*'`` in the background; the upgrade capability's events
    (``webfarm/upgrade/*``) in a queue."""

    KEEP = ("webfarm/upgrade/",)

    def __init__(self):
        self.lines = queue.Queue()
        self.proc = subprocess.Popen(
            salt_lab.cli_argv("salt-run", "state.event", "webfarm/*"),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            tag, _, data = line.strip().partition("\t")
            if not tag.startswith(self.KEEP):
                continue
            try:
                self.lines.put((tag, json.loads(data)))
            except ValueError:
                continue

    def next(self, deadline):
        try:
            return self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            return None, None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _traffic(stop_file):
    lb = topology.load()["primary_lb"][0]
    argv = [
        sys.executable, "-m", "lab.httpapp", "traffic", "--host", lb["address"],
        "--port", str(lb["port"]), "--stop-file", str(stop_file),
    ]  # fmt: skip
    return subprocess.Popen(
        netlab.exec_argv(salt_lab.MASTER_NS, argv),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=topology.REPO,
    )  # fmt: skip


def _step_line(data, version):
    t = data.get("timings") or {}
    total = t.get("drain", 0) + t.get("upgrade_step", 0) + t.get("ready", 0)
    inner = ", ".join(
        f"{label} {t[key]:.1f}s"
        for key, label in (("upgrade", "release"), ("health", "health"), ("flush", "flush"))
        if key in t
    )
    return total, (
        f"    wave {data.get('wave')}: {data.get('site')}/{data.get('farm')} on {version} in "
        f"{total:.1f}s (drain {t.get('drain', 0):.1f}s, member job {t.get('upgrade_step', 0):.1f}s"
        f" [{inner}], ready {t.get('ready', 0):.1f}s; {t.get('round_trips')} Salt round trips)"
    )


def _start_preprod_app(host):
    pidfile = salt_lab.host_root(host.id) / "run" / "httpapp.pid"
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    log = salt_lab.host_root(host.id) / "var" / "log" / "apache2" / "access.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable, "-m", "lab.httpapp", "serve", "--address", host.address,
        "--site", "preprod", "--farm", "preprod", "--member", "1", "--pidfile", str(pidfile),
        "--access-log", str(log), "--app-root", str(salt_lab.app_root(host.id)),
    ]  # fmt: skip
    subprocess.run(
        netlab.exec_argv(netlab.PREFIX + host.id, argv),
        check=True, capture_output=True, cwd=topology.REPO, timeout=30,
    )  # fmt: skip


def _prepare():
    publish(OLD)
    publish(NEW)
    publish(BAD, broken=True)
    print(
        f"    published {OLD}, {NEW} and {BAD} under {_dist()} ({BAD} broken for"
        f" {BROKEN_MEMBER} only); the upgrade runner: synced to the master by orch.cluster"
    )
    targets = ("-C", "G@webfarm:role:web or G@webfarm:role:preprod")
    first = salt_lab.salt(*targets, "upgrade.release", OLD)
    want = len(_web_hosts()) + len(_preprod_hosts())
    bad = {m: r for m, r in first.items() if not isinstance(r, dict) or r.get("version") != OLD}
    if bad or len(first) != want:
        raise RuntimeError(f"first deployment of {OLD} failed: {bad or sorted(first)}")
    print(
        f"    $ salt -C 'G@webfarm:role:web or G@webfarm:role:preprod' upgrade.release {OLD}"
        f"   -> {len(first)} hosts on {OLD}"
    )
    for host in _preprod_hosts():
        _start_preprod_app(host)
    print(f"    memcached started for {start_memcached()} farms (flushed after each switch)")


def _release_ready(version):
    payload = json.dumps({"version": version})
    print(f"    $ salt-run event.send webfarm/upgrade/release/ready '{payload}'")
    if salt_lab.salt_run("event.send", "webfarm/upgrade/release/ready", payload) is not True:
        raise RuntimeError("salt-run event.send webfarm/upgrade/release/ready was not sent")


def _preprod(events, version):
    pillar = json.dumps({"upgrade": {"kind": "app", "version": version}})
    print(f"    $ salt-run state.orchestrate upgrade.preprod pillar='{pillar}'")
    report = orchestrate_report(
        salt_lab.salt_run("state.orchestrate", "upgrade.preprod", f"pillar={pillar}")
    )
    if not report or not report.get("ok"):
        raise RuntimeError(f"preprod test of {version} failed: {report}")
    tag, data = _wait_for(events, ("webfarm/upgrade/preprod/done",), time.monotonic() + 60)
    if tag is None:
        raise RuntimeError(f"no webfarm/upgrade/preprod/done event for {version}")
    where = ", ".join(f"{p} on {e['minion']}" for p, e in sorted(data["profiles"].items()))
    print(
        f"    webfarm/upgrade/preprod/done {version}: ok={data['ok']} ({where}); record: {data['record']}"
    )


def _wait_for(events, tags, deadline):
    while True:
        tag, data = events.next(deadline)
        if tag is None or tag in tags:
            return tag, data
        if time.monotonic() > deadline:
            return None, None


def _wait_rollout(events, deadline, version):
    """Print the steps as they end; return (farm times, the failure event or None)."""
    farm_times = []
    while True:
        tag, data = events.next(deadline)
        if tag is None:
            raise RuntimeError(f"no end of the rollout within {ROLLOUT_TIMEOUT}s")
        if tag == "webfarm/upgrade/step/done":
            seconds, line = _step_line(data, version)
            farm_times.append(seconds)
            print(line, flush=True)
        elif tag == "webfarm/upgrade/rollout/done":
            return farm_times, None
        elif tag == "webfarm/upgrade/step/failed":
            return farm_times, data
        elif tag == "webfarm/upgrade/rollout/refused":
            raise RuntimeError(f"the rollout of {version} was refused: {data.get('comment')}")


def _stop_traffic(stop_file, traffic):
    stop_file.touch()
    try:
        out, err = traffic.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        traffic.kill()
        out, err = traffic.communicate()
    if traffic.returncode != 0:
        raise RuntimeError(f"the traffic client failed: {err.strip()}")
    return json.loads(out)


def _scenario(events):
    """The four parts under traffic; returns the figures of the summary."""
    # 1. an untested release is refused, nothing drained
    _release_ready(NEW)
    tag, data = _wait_for(events, ("webfarm/upgrade/rollout/refused",), time.monotonic() + 90)
    if tag is None:
        raise RuntimeError(f"webfarm/upgrade/release/ready {NEW} was not refused")
    print(f"    webfarm/upgrade/rollout/refused: {data['comment'].split(';')[0]}")
    if set(_versions().values()) != {OLD}:
        raise RuntimeError("a refused release changed a member")
    # 2. test it on preprod; 3. release it: sites concurrently
    _preprod(events, NEW)
    started = time.monotonic()
    _release_ready(NEW)
    farm_times, failed = _wait_rollout(events, started + ROLLOUT_TIMEOUT, NEW)
    elapsed = time.monotonic() - started
    if failed or not farm_times:
        raise RuntimeError(f"the rollout of {NEW} failed: {failed}")
    # 4. a release broken on one member: its farm is rolled back automatically
    _preprod(events, BAD)
    _release_ready(BAD)
    _, failed = _wait_rollout(events, time.monotonic() + ROLLOUT_TIMEOUT, BAD)
    if not failed:
        raise RuntimeError(f"the rollout of the broken {BAD} did not fail")
    print(
        f"    webfarm/upgrade/step/failed: {failed['site']}/{failed['farm']}: {failed['error']}"
        f"\n      -> {failed['action']}; rollout stopped"
    )
    if not str(failed.get("action", "")).startswith(f"rolled back to {NEW}"):
        raise RuntimeError(f"the failed farm was not rolled back: {failed}")
    return farm_times, elapsed, failed


def run():
    _prepare()
    stop_file = salt_lab.STATE_DIR / "traffic.stop"
    stop_file.unlink(missing_ok=True)
    events = _Events()
    traffic = _traffic(stop_file)
    try:
        time.sleep(2)
        print("    (browser-like sessions through lb-primary from now on)")
        farm_times, elapsed, failed = _scenario(events)
        time.sleep(1)
    finally:
        events.stop()
        seen = _stop_traffic(stop_file, traffic)
    versions = _versions()
    served = ", ".join(f"{v} x{n}" for v, n in sorted(seen["versions"].items()))
    rolled = f"{failed['site']}/{failed['farm']}"
    print(
        f"    traffic through lb-primary: {seen['requests']} requests in {seen['sessions']} "
        f"sessions, failed: {seen['failed']}, version regressions: {seen['regressed_sessions']}"
        f"\n    served: {served}; upgrade.version on the members now: "
        + ", ".join(f"{v} x{n}" for v, n in sorted(_count(versions.values()).items()))
    )
    if seen["failed"] or seen["regressed_sessions"]:
        raise RuntimeError(f"failures {seen['failures']} regressions {seen['regressions']}")
    rolled_back = set(failed["members"])
    want = {m: (NEW if m in rolled_back else BAD) for m in versions}
    if versions != want:
        raise RuntimeError(f"members not as expected ({want}): {versions}")
    return (
        f"{len(farm_times)} farms {OLD} -> {NEW} in {elapsed:.1f}s, sites concurrently "
        f"({min(farm_times):.1f}-{max(farm_times):.1f}s per farm) after the untested {NEW} was "
        f"refused and preprod passed it; {BAD} with a broken member: {rolled} rolled back to "
        f"{NEW} automatically; {seen['requests']} requests, 0 failed, 0 version regressions"
    )


def _count(values):
    out = {}
    for value in values:
        out[value] = out.get(value, 0) + 1
    return out
