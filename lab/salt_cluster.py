"""Real salt daemons without pytest: a salt-master and salt-minions on 127.0.0.1, each
started by this process in its own session and stopped by pid.

Shared by bench/scale.py (N minions) and bench/upgrade.py (the upgrade lab's 2 x 2 x 2): the
master takes docs/master.d-example.conf with this checkout's paths, a pillar root of the
caller's first in ``pillar_roots`` and the bench's own state top first in ``file_roots``
(:func:`write_state_top`); every minion's files (motd, less) live under ``<root>/hosts/<id>``.
:func:`spawn` records each daemon in :data:`STARTED`; :func:`stop_everything` stops them (the
daemon and the children it forked: its session) and whatever names the caller's directory.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from lab.proc import processes_naming, stop_pids
from lab.proc import session_pids as proc_session_pids

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
BYROLE_TOP = "byrole_top.sls"
BENCH_TOP = {"base": ["motd", "less"]}  # what state.show_top answers for the bench's top

STARTED = []  # Popen of every daemon spawn() started


def write_yaml(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def write_pillar(root, topology, fmt="yaml"):
    """The bench's pillar tree (first in pillar_roots): this cluster's topology (YAML like
    pillar/webfarm/topology.sls, or ``#!json``), the repo's nagios pillar (mine functions),
    and each host's motd/less files under ``root``."""
    pillar = root / "pillar"
    write_yaml(pillar / "top.sls", {"base": {"*": ["webfarm.topology", "nagios", "bench"]}})
    data = {"webfarm": {"topology": topology}}
    if fmt == "json":
        (pillar / "webfarm").mkdir(parents=True, exist_ok=True)
        (pillar / "webfarm" / "topology.sls").write_text("#!json\n" + json.dumps(data))
    else:
        write_yaml(pillar / "webfarm" / "topology.sls", data)
    hosts = root / "hosts"
    (pillar / "bench.sls").write_text(
        "{%- set root = '" + str(hosts) + "/' ~ grains['id'] %}\n"
        "motd:\n"
        "  target: {{ root }}/etc/motd\n"
        "  base: {{ root }}/etc/motd_base\n"
        "  pinned: {{ root }}/etc/motd_pinned\n"
        "  cron_file: {{ root }}/etc/cron.d/webfarm-motd\n"
        "  text: webfarm scale bench\n"
        "less:\n"
        "  profile_file: {{ root }}/etc/profile.d/webfarm-less.sh\n"
        "mine_functions:\n"
        "  webfarm_grains:\n"
        "    - mine_function: grains.item\n"
        "    - webfarm\n"
        "    - ipv4\n"
    )
    return pillar


def write_state_top(root):
    """The bench's own state top, first in file_roots so it shadows the repo's: motd and less
    on every minion, their files under ``root/hosts/<id>`` (pillar ``bench``). The repo's
    by-role top would configure this machine's own /etc for every role at once (HAProxy,
    Nagios, Apache, the LB sysctls); the bench runs it, as ``BYROLE_TOP`` (a link to
    salt/states/top.sls), only with ``test=True``. (Not ``state_top``: the pillar top is
    looked up by that name too.)"""
    states = root / "states"
    write_yaml(states / "top.sls", {env: {"*": sls} for env, sls in BENCH_TOP.items()})
    (states / BYROLE_TOP).symlink_to(REPO / "salt" / "states" / "top.sls")
    return states


def master_conf(root, pillar, ports, ext_pillar=None, states=None):
    conf = yaml.safe_load(
        (REPO / "docs" / "master.d-example.conf").read_text().replace("/srv/webfarm", str(REPO))
    )
    conf["pillar_roots"]["base"].insert(0, str(pillar))
    # Without a top of the bench's own, a highstate is the repo's by-role top (see above).
    conf["file_roots"]["base"].insert(0, str(states or write_state_top(root)))
    if ext_pillar:
        conf.update({"ext_pillar": [ext_pillar], "ext_pillar_first": False})
    conf.update(
        {
            "id": "wf-scale-master",
            "root_dir": str(root / "master"),
            "interface": "127.0.0.1",
            "publish_port": ports[0],
            "ret_port": ports[1],
            "auto_accept": True,
            "user": "root",
            "log_level_logfile": "warning",
            "worker_threads": 4,
            "timeout": 30,
            "webfarm_upgrade_notify": str(root / "master" / "upgrade-failed.log"),
        }
    )
    path = root / "master" / "conf" / "master"
    write_yaml(path, conf)
    return path


def minion_conf(root, minion_id, grains, ports):
    path = root / "m" / minion_id / "conf" / "minion"
    write_yaml(
        path,
        {
            "id": minion_id,
            "master": "127.0.0.1",
            "master_port": ports[1],
            "publish_port": ports[0],
            "root_dir": str(root / "m" / minion_id),
            "grains": grains,
            "log_level_logfile": "warning",
            "acceptance_wait_time": 2,
            "random_reauth_delay": 0,
            "auth_timeout": 60,
        },
    )
    for sub in ("etc/cron.d", "etc/profile.d"):
        (root / "hosts" / minion_id / sub).mkdir(parents=True, exist_ok=True)
    (root / "hosts" / minion_id / "etc" / "motd").write_text(f"{minion_id}\n")
    return path


def spawn(binary, conf, log):
    proc = subprocess.Popen(
        [str(VENV_BIN / binary), "-c", str(conf.parent), "-l", "quiet"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    STARTED.append(proc)
    return proc


def session_pids(proc):
    """The pids of ``proc``'s session (the daemon and the children it forked)."""
    return proc_session_pids(proc.pid)


def stop_everything(root=None):
    """Stop every daemon spawn() started (by pid, with their children), then anything
    whose command line still names ``root`` (the bench's dir)."""
    pids = []
    for proc in STARTED:
        pids += session_pids(proc) or [proc.pid]
    if root is not None:
        pids += processes_naming(root)
    left = stop_pids(sorted(set(pids)), timeout=15)
    for proc in STARTED:
        try:
            proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            pass
    STARTED.clear()
    return left


def wait_ping(client, ids, timeout):
    deadline = time.monotonic() + timeout
    missing = ids
    while time.monotonic() < deadline:
        ret = client.cmd(ids, "test.ping", tgt_type="list", timeout=10)
        missing = [m for m in ids if ret.get(m) is not True]
        if not missing:
            return
        time.sleep(1)
    raise RuntimeError(f"minions did not answer within {timeout}s: {missing}")


def salt_run(mconf, *args, timeout=1800):
    """``salt-run`` as an operator runs it (JSON out): ``(returncode, data)``."""
    proc = subprocess.run(
        [str(VENV_BIN / "salt-run"), "-c", str(mconf.parent), "--out=json", *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    try:
        data = json.loads(proc.stdout) if proc.stdout.strip() else None
    except ValueError:
        data = proc.stdout[-2000:]
    return proc.returncode, data
