"""A salt-master and one salt-minion per host, each a real daemon inside its namespace."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from demo import netlab
from demo.topology import MASTER_ADDRESS, REPO
from lab.proc import processes_naming, stop_pids

VENV_BIN = Path(sys.executable).parent
STATE_DIR = Path(os.environ.get("WEBFARM_DEMO_DIR", "/var/tmp/wfdemo"))
MASTER_NS = netlab.PREFIX + "master"
# <dir>/minions/<id>/var/run/salt/minion/minion_event_<hash>_pub.ipc must fit sun_path (108).
MAX_STATE_DIR_LEN = 40


def master_conf_dir():
    return STATE_DIR / "master" / "conf"


def minion_conf_dir(minion_id):
    return STATE_DIR / "minions" / minion_id / "conf"


def host_root(minion_id):
    """Where a host's own files live: namespaces isolate the network, not the filesystem."""
    return STATE_DIR / "hosts" / minion_id


def _write_yaml(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def write_demo_pillar(hosts, per_host=None):
    """The repo's pillar top plus ``demo.sls``, which roots each host's files under its own dir.

    ``per_host`` maps a minion id to extra pillar only that minion gets (the demo steps').
    """
    pillar_dir = STATE_DIR / "pillar"
    top = yaml.safe_load((REPO / "pillar" / "top.sls").read_text())
    top["base"].setdefault("*", []).append("demo")
    _write_yaml(pillar_dir / "top.sls", top)
    (pillar_dir / "demo.sls").write_text(
        "{%- set root = '" + str(STATE_DIR / "hosts") + "/' ~ grains['id'] %}\n"
        "motd:\n"
        "  target: {{ root }}/etc/motd\n"
        "  base: {{ root }}/etc/motd_base\n"
        "  pinned: {{ root }}/etc/motd_pinned\n"
        "  cron_file: {{ root }}/etc/cron.d/webfarm-motd\n"
        "less:\n"
        "  profile_file: {{ root }}/etc/profile.d/webfarm-less.sh\n"
        + "".join(
            "{%- if grains['id'] == '"
            + minion_id
            + "' %}\n"
            + yaml.safe_dump(extra, sort_keys=False)
            + "{%- endif %}\n"
            for minion_id, extra in (per_host or {}).items()
        )
    )
    for host in hosts:
        for sub in ("etc/cron.d", "etc/profile.d"):
            (host_root(host.id) / sub).mkdir(parents=True, exist_ok=True)
        motd = host_root(host.id) / "etc" / "motd"
        if not motd.exists():
            motd.write_text(f"{host.id} ({host.address}) — a webfarm demo host\n")
    return pillar_dir


def write_master_config(pillar_dir):
    conf = yaml.safe_load(
        (REPO / "docs" / "master.d-example.conf").read_text().replace("/srv/webfarm", str(REPO))
    )
    conf["pillar_roots"]["base"].insert(0, str(pillar_dir))
    conf.update(
        {
            "id": "wf-master",
            "root_dir": str(STATE_DIR / "master"),
            "interface": MASTER_ADDRESS,
            "auto_accept": True,
            "user": "root",
            "log_level_logfile": "info",
            "timeout": 30,
            "worker_threads": 4,
            # under the lab's root, not the host's /var/log/salt (step 6's rollback notifies)
            "webfarm_upgrade_notify": str(
                STATE_DIR / "master" / "var" / "log" / "salt" / "webfarm-upgrade-failed.log"
            ),
        }
    )
    _write_yaml(master_conf_dir() / "master", conf)


def write_minion_config(host):
    _write_yaml(
        minion_conf_dir(host.id) / "minion",
        {
            "id": host.id,
            "master": MASTER_ADDRESS,
            "root_dir": str(STATE_DIR / "minions" / host.id),
            "grains": host.grains,
            "log_level_logfile": "info",
            "acceptance_wait_time": 2,
            "random_reauth_delay": 0,
        },
    )


def start_master():
    argv = [str(VENV_BIN / "salt-master"), "-c", str(master_conf_dir()), "-d"]
    subprocess.run(netlab.exec_argv(MASTER_NS, argv), check=True, capture_output=True)


def start_minion(host):
    argv = [str(VENV_BIN / "salt-minion"), "-c", str(minion_conf_dir(host.id)), "-d"]
    subprocess.run(netlab.exec_argv(netlab.PREFIX + host.id, argv), check=True, capture_output=True)


def _cli(binary, args, timeout):
    proc = subprocess.run(
        cli_argv(binary, "--out=json", *args), capture_output=True, text=True, timeout=timeout + 60
    )
    try:
        return json.loads(proc.stdout or "{}")
    except json.JSONDecodeError as exc:
        raise RuntimeError(
            f"{binary} {' '.join(args)}: {proc.stderr.strip() or proc.stdout}"
        ) from exc


def salt(*args, timeout=300):
    """Run the ``salt`` CLI against the lab master; returns the parsed ``--out=json --static``."""
    return _cli("salt", ["--static", f"--timeout={timeout}", *args], timeout)


def salt_run(*args, timeout=300):
    """Run ``salt-run`` against the lab master; returns its parsed ``--out=json``."""
    return _cli("salt-run", [f"--timeout={timeout}", *args], timeout)


def call(minion_id, fun, *args, want=dict, timeout=300):
    """``salt <minion_id> <fun> <args>``: its answer, which must be a ``want``."""
    answer = salt(minion_id, fun, *args, timeout=timeout).get(minion_id)
    if not isinstance(answer, want):
        raise RuntimeError(f"salt {minion_id} {fun} {' '.join(args)} answered {answer!r}")
    return answer


def cli_argv(binary, *args):
    """The argument list that runs a salt CLI ``binary`` against the lab master: in the
    master's netns, as the CLI reaches the master over TCP on its interface."""
    return netlab.exec_argv(
        MASTER_NS, [str(VENV_BIN / binary), "-c", str(master_conf_dir()), *args]
    )


def app_root(minion_id):
    """A web member's release layout (``upgrade.release``): ``current`` -> ``releases/<v>``."""
    return host_root(minion_id) / "srv" / "www" / "app"


def wait_for_minions(ids, timeout=240):
    deadline = time.monotonic() + timeout
    answered = {}
    while time.monotonic() < deadline:
        answered = salt("-L", ",".join(ids), "test.ping", timeout=10)
        if all(answered.get(minion_id) is True for minion_id in ids):
            return
        time.sleep(2)
    missing = sorted(set(ids) - {k for k, v in answered.items() if v is True})
    raise RuntimeError(f"minions did not answer within {timeout}s: {', '.join(missing)}")


def _pids():
    pids = []
    for pidfile in STATE_DIR.glob("**/*.pid"):
        try:
            pids.append(int(pidfile.read_text().strip()))
        except (OSError, ValueError):
            continue
    # Daemons' children (salt's process manager forks) die with their parents; as a backstop,
    # any process whose command line names the lab's state dir goes too.
    return sorted(set(pids + processes_naming(STATE_DIR)))


def stop_all(timeout=20):
    """Stop every daemon of the lab; the pids that would not stop."""
    return stop_pids(_pids(), timeout)
