"""Step 6: an app upgrade started by the ``webfarm/release/ready`` event, under live traffic.

Releases are published under ``$WEBFARM_DEMO_DIR/dist/<version>`` (the binhost's part). Every
web member first gets the old release by ``farm.release`` (its first deployment) and a
memcached runs per farm on the address the topology pillar names. Then browser-like sessions
run through lb-primary from the master's namespace while ``salt-run event.send
webfarm/release/ready`` is sent: the release_ready reactor starts ``state.orchestrate
upgrade``, whose runner drains one farm per site on its site LB, switches the release,
checks health, flushes the farm's memcached and puts the farm back. The runner's
``webfarm/upgrade/*`` events are shown as they arrive (``salt-run state.event``).
"""

import json
import queue
import subprocess
import sys
import threading
import time

from demo import netlab, salt_lab, topology

TITLE = "step 6: app upgrade 1.0.0 -> 2.0.0 started by webfarm/release/ready, under live traffic"
OLD, NEW = "1.0.0", "2.0.0"
WEB = ("-G", "webfarm:role:web")
ROLLOUT_TIMEOUT = 300


def _dist():
    return salt_lab.STATE_DIR / "dist"


def _web_hosts():
    return [h for h in topology.hosts() if h.grains["webfarm"]["role"] == "web"]


def pillar():
    """Each web member's ``upgrade`` pillar: its release root, the demo dist, its health URL."""
    ports = {
        member["id"]: member.get("port", 80)
        for site in topology.load()["sites"].values()
        for farm in site["farms"].values()
        for member in farm["members"].values()
    }
    return {
        host.id: {
            "upgrade": {
                "root": str(salt_lab.app_root(host.id)),
                "source": str(_dist() / "{version}"),
                "health_url": f"http://{host.address}:{ports[host.id]}/",
                "health_timeout": 15,
            }
        }
        for host in _web_hosts()
    }


def publish(version):
    """Build release ``version`` into the dist (what a build server would publish)."""
    path = _dist() / version
    (path / "static").mkdir(parents=True, exist_ok=True)
    (path / "VERSION").write_text(version + "\n")
    (path / "static" / "app.css").write_text(f"/* release {version} */\n")
    return path


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
    answer = salt_lab.salt(*WEB, "farm.version")
    if len(answer) != len(_web_hosts()):
        raise RuntimeError(f"farm.version answered from {sorted(answer)} only")
    return answer


class _Events:
    """``salt-run state.event 'webfarm/upgrade/*'`` in the background, lines in a queue."""

    def __init__(self):
        self.lines = queue.Queue()
        self.proc = subprocess.Popen(
            salt_lab.cli_argv("salt-run", "state.event", "webfarm/upgrade/*"),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            tag, _, data = line.strip().partition("\t")
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
        sys.executable, "-m", "demo.httpapp", "traffic", "--host", lb["address"],
        "--port", str(lb["port"]), "--stop-file", str(stop_file),
    ]  # fmt: skip
    return subprocess.Popen(
        netlab.exec_argv(salt_lab.MASTER_NS, argv),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=topology.REPO,
    )  # fmt: skip


def _step_line(data):
    timings = data.get("timings") or {}
    phases = [("drain", "drain"), ("upgrade", "release"), ("health", "health")]
    phases += [("flush", "flush"), ("ready", "ready")]
    parts = [f"{label} {timings[key]:.1f}s" for key, label in phases if key in timings]
    total = sum(timings.get(key, 0) for key, _ in phases)
    return total, (
        f"    wave {data.get('wave')}: {data.get('site')}/{data.get('farm')} on {NEW} in "
        f"{total:.1f}s ({', '.join(parts)})"
    )


def _prepare():
    synced = salt_lab.salt_run("saltutil.sync_all")
    if "runners.upgrade" not in json.dumps(synced):
        raise RuntimeError(f"salt-run saltutil.sync_all did not sync the upgrade runner: {synced}")
    publish(OLD)
    publish(NEW)
    print(f"    published {OLD} and {NEW} under {_dist()}; master synced (runners.upgrade)")
    first = salt_lab.salt(*WEB, "farm.release", OLD)
    bad = {m: r for m, r in first.items() if not isinstance(r, dict) or r.get("version") != OLD}
    if bad or len(first) != len(_web_hosts()):
        raise RuntimeError(f"first deployment of {OLD} failed: {bad or sorted(first)}")
    print(f"    $ salt -G webfarm:role:web farm.release {OLD}   -> {len(first)} members on {OLD}")
    print(f"    memcached started for {start_memcached()} farms (flushed after each switch)")


def _wait_rollout(events, deadline):
    farm_times, outcome = [], None
    while outcome is None:
        tag, data = events.next(deadline)
        if tag is None:
            raise RuntimeError(f"no end of the rollout within {ROLLOUT_TIMEOUT}s")
        if tag == "webfarm/upgrade/step/done":
            seconds, line = _step_line(data)
            farm_times.append(seconds)
            print(line, flush=True)
        elif tag == "webfarm/upgrade/rollout/done":
            outcome = "done"
        elif tag == "webfarm/upgrade/failed":
            raise RuntimeError(
                f"the rollout failed on {data.get('site')}/{data.get('farm')}: {data.get('error')}"
            )
    if not farm_times:
        raise RuntimeError("the rollout ended without upgrading a farm")
    return farm_times


def run():
    _prepare()
    stop_file = salt_lab.STATE_DIR / "traffic.stop"
    stop_file.unlink(missing_ok=True)
    events = _Events()
    traffic = _traffic(stop_file)
    try:
        time.sleep(2)
        payload = json.dumps({"version": NEW})
        print(f"    $ salt-run event.send webfarm/release/ready '{payload}'   (traffic running)")
        started = time.monotonic()
        if salt_lab.salt_run("event.send", "webfarm/release/ready", payload) is not True:
            raise RuntimeError("salt-run event.send webfarm/release/ready was not sent")
        farm_times = _wait_rollout(events, started + ROLLOUT_TIMEOUT)
        elapsed = time.monotonic() - started
        time.sleep(1)
    finally:
        stop_file.touch()
        events.stop()
        try:
            out, err = traffic.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            traffic.kill()
            out, err = traffic.communicate()
    if traffic.returncode != 0:
        raise RuntimeError(f"the traffic client failed: {err.strip()}")
    seen = json.loads(out)
    versions = _versions()
    served = ", ".join(f"{v} x{n}" for v, n in sorted(seen["versions"].items()))
    print(
        f"    traffic through lb-primary: {seen['requests']} requests in {seen['sessions']} "
        f"sessions, failed: {seen['failed']}, version regressions: {seen['regressed_sessions']}"
        f"\n    served: {served}; farm.version on the members now: "
        f"{', '.join(sorted(set(versions.values())))}"
    )
    if seen["failed"] or seen["regressed_sessions"]:
        raise RuntimeError(f"failures {seen['failures']} regressions {seen['regressions']}")
    if set(versions.values()) != {NEW}:
        raise RuntimeError(f"members not on {NEW}: {versions}")
    return (
        f"{len(farm_times)} farms {OLD} -> {NEW} in {elapsed:.1f}s "
        f"({min(farm_times):.1f}-{max(farm_times):.1f}s per farm); {seen['requests']} requests, "
        f"0 failed, 0 version regressions"
    )
