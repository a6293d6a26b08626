"""python -m demo up|down — see README ("make demo")."""

import argparse
import os
import shutil
import sys
import time

from demo import (
    netlab,
    salt_lab,
    step_accesslog,
    step_failover,
    step_haproxy,
    step_mysqlsnap,
    step_nagios,
    step_policyroute,
    step_upgrade,
    topology,
)

# Issue 9's numbered steps (and issue 18's 1b), in the order the demo runs them.
STEPS = [
    step_haproxy,
    step_failover,
    step_accesslog,
    step_mysqlsnap,
    step_policyroute,
    step_nagios,
    step_upgrade,
]


def steps_pillar():
    merged = {}
    for step in STEPS:
        for minion_id, extra in step.pillar().items():
            merged.setdefault(minion_id, {}).update(extra)
    return merged


class Step:
    """Prints progress; a failing step names itself and why."""

    def __init__(self, title):
        self.title = title

    def __enter__(self):
        self.started = time.monotonic()
        print(f"==> {self.title} ...", flush=True)
        return self

    def __exit__(self, exc_type, exc, tb):
        elapsed = time.monotonic() - self.started
        if exc is None:
            print(f"    done in {elapsed:.1f}s", flush=True)
        else:
            print(f"!!  step failed: {self.title}: {exc}", flush=True)
        return False


def summarize_highstate(result):
    rows = []
    for minion_id in sorted(result):
        states = result[minion_id]
        if not isinstance(states, dict):
            rows.append((minion_id, 0, 0, 1, f"{states}"))
            continue
        ok = sum(1 for s in states.values() if s.get("result") is True)
        changed = sum(1 for s in states.values() if s.get("changes"))
        failed = [s.get("__id__", "?") for s in states.values() if s.get("result") is False]
        rows.append((minion_id, ok, changed, len(failed), ", ".join(failed)))
    return rows


def up(args):
    if len(str(salt_lab.STATE_DIR)) > salt_lab.MAX_STATE_DIR_LEN:
        print(
            f"WEBFARM_DEMO_DIR={salt_lab.STATE_DIR} is too long: salt's unix sockets under it "
            f"must fit 108 bytes; use at most {salt_lab.MAX_STATE_DIR_LEN} characters",
            file=sys.stderr,
        )
        return 2
    down(quiet=True)
    hosts = topology.hosts()
    ids = [h.id for h in hosts]
    started = time.monotonic()
    figures = {}
    try:
        with Step(f"lab network: {len(hosts)} hosts + master in namespaces on one bridge"):
            netlab.create_switch()
            netlab.add_host(0, "master", topology.MASTER_ADDRESS)
            for index, host in enumerate(hosts, start=1):
                netlab.add_host(index, host.id, host.address)
        # Mounted before the minions start: each gets a private copy of the mount table.
        with Step("MariaDB on db-primary and db-replica (replica datadir on btrfs, loop)"):
            print(f"    {step_mysqlsnap.setup()}")
        with Step("salt-master and one salt-minion daemon per host"):
            pillar_dir = salt_lab.write_demo_pillar(hosts, steps_pillar())
            salt_lab.write_master_config(pillar_dir)
            salt_lab.start_master()
            for host in hosts:
                salt_lab.write_minion_config(host)
                salt_lab.start_minion(host)
            salt_lab.wait_for_minions(ids)
        with Step("saltutil.sync_all on every minion"):
            synced = salt_lab.salt("*", "saltutil.sync_all")
            missing = [
                m for m in ids if "modules.motd" not in (synced.get(m) or {}).get("modules", [])
            ]
            if missing and any(synced.get(m) is None for m in missing):
                raise RuntimeError(f"sync_all did not answer from {missing}")
        # Not the by-role highstate yet: it would configure the real /etc of this machine, because
        # the lab's per-host roots are given per step (issue 16).
        with Step("state.apply motd,less on every minion") as step:
            result = salt_lab.salt("*", "state.apply", "motd,less", timeout=600)
            rows = summarize_highstate(result)
            figures["highstate_s"] = time.monotonic() - step.started
            print(f"    {'minion':<16} {'ok':>4} {'changed':>8} {'failed':>7}")
            for minion_id, ok, changed, failed, which in rows:
                print(f"    {minion_id:<16} {ok:>4} {changed:>8} {failed:>7} {which}")
            bad = [r[0] for r in rows if r[3]] + [m for m in ids if m not in result]
            if bad:
                raise RuntimeError(f"highstate failed on {', '.join(sorted(set(bad)))}")
        for step in STEPS:
            with Step(step.TITLE) as progress:
                line = step.run()
                seconds = time.monotonic() - progress.started
                figures.setdefault("steps", []).append(
                    f"{step.TITLE.split(':')[0]}: {line} ({seconds:.1f}s)"
                )
        with Step("step 7: the MOTD scroll (web-s1-f1-m1:/etc/motd, rooted under the demo dir)"):
            motd = salt_lab.host_root("web-s1-f1-m1") / "etc" / "motd"
            print(motd.read_text(), end="")
    except Exception as exc:  # noqa: BLE001 - a demo step reports and cleans up
        print(f"demo failed: {exc}\ntearing the lab down; logs were in {salt_lab.STATE_DIR}")
        down(quiet=True, keep_logs=True)
        return 1
    total = time.monotonic() - started
    print()
    print("=" * 72)
    print(f"webfarm demo: {len(hosts)} minions + master, each a real daemon in its own netns")
    print(f"  motd,less on all minions: {figures['highstate_s']:.1f}s   total: {total:.1f}s")
    for line in figures.get("steps", []):
        print(f"  {line}")
    print(f"  logs:  {salt_lab.STATE_DIR}/master/var/log/salt, .../minions/<id>/var/log/salt")
    print(
        f"  try:   ip netns exec {salt_lab.MASTER_NS} .venv/bin/salt -c {salt_lab.master_conf_dir()} '*' motd.scroll"
    )
    print("  down:  make demo-down")
    print("=" * 72)
    return 0


def down(args=None, quiet=False, keep_logs=False):
    left = salt_lab.stop_all()
    step_nagios.cleanup()  # while the namespaces still carry its ssh sessions
    gone = netlab.destroy()
    step_mysqlsnap.cleanup()
    if not keep_logs:
        shutil.rmtree(salt_lab.STATE_DIR, ignore_errors=True)
    if not quiet:
        print(f"demo down: {len(gone)} namespaces removed, daemons stopped")
    if left:
        print(f"processes that would not stop: {left}", file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m demo")
    parser.add_argument("action", choices=["up", "down"])
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("make demo needs root (network namespaces, daemons)", file=sys.stderr)
        return 2
    return up(args) if args.action == "up" else down(args)


if __name__ == "__main__":
    sys.exit(main())
