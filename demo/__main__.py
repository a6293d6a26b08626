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
        which = [f"changed {s.get('__id__', '?')}" for s in states.values() if s.get("changes")]
        rows.append((minion_id, ok, changed, len(failed), ", ".join(failed + which)))
    return rows


def orch_steps(result):
    """``[(step id, ok, comment)]`` of a ``salt-run state.orchestrate`` answer."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node and all(isinstance(k, str) and "_|-" in k for k in node):
                found.extend(
                    (v.get("__id__", k), v.get("result") is True, str(v.get("comment", "")))
                    for k, v in sorted(node.items(), key=lambda kv: kv[1].get("__run_num__", 0))
                )
                return
            for value in node.values():
                walk(value)

    walk(result)
    return found


def highstate_counts(result, ids, test=False):
    """Print the per-minion table of a highstate answer; ``{changed, failed}`` over all
    minions (with ``test``, a state that would change counts as changed). Raises unless both
    are 0 and every minion answered."""
    rows = summarize_highstate(result)
    print(f"    {'minion':<16} {'ok':>4} {'changed':>8} {'failed':>7}")
    changed = failed = 0
    for minion_id, ok, n_changed, n_failed, which in rows:
        states = result.get(minion_id)
        if test and isinstance(states, dict):
            n_changed = sum(
                1 for st in states.values() if st.get("result") is None or st.get("changes")
            )
            ok = len(states) - n_changed - n_failed
        changed += n_changed
        failed += n_failed
        print(f"    {minion_id:<16} {ok:>4} {n_changed:>8} {n_failed:>7} {which}")
    missing = [m for m in ids if m not in result]
    if changed or failed or missing:
        raise RuntimeError(
            f"not converged: {changed} changed, {failed} failed, no answer from {missing}"
        )
    return {"changed": changed, "failed": failed}


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
        with Step("lab services: web apps, SecantusDB, the check target's sshd, 2 uplinks"):
            step_haproxy.start_backends(hosts)
            step_accesslog.start_store()
            step_nagios.start_sshd()
            step_policyroute.wire()
        with Step("salt-run state.orchestrate orch.cluster (the highstate by role)") as step:
            # One highstate at a time: the lab's hosts share this machine's /etc/shadow, which
            # salt's shadow.set_password (user.present) rewrites without a lock.
            print(
                """    $ salt-run state.orchestrate orch.cluster pillar='{"orch": {"batch": 1}}'"""
            )
            result = salt_lab.salt_run(
                "state.orchestrate", "orch.cluster", 'pillar={"orch": {"batch": 1}}', timeout=1500
            )
            steps = orch_steps(result)
            figures["orch_s"] = time.monotonic() - step.started
            for sid, ok, comment in steps:
                print(f"    {'ok' if ok else 'FAILED':<6} {sid}{'' if ok else ': ' + comment}")
            if not steps or not all(ok for _sid, ok, _comment in steps):
                raise RuntimeError("orch.cluster did not converge the lab")
        with Step("state.apply on every minion again (a second highstate)") as step:
            figures["again"] = highstate_counts(salt_lab.salt("*", "state.apply", timeout=900), ids)
            figures["again_s"] = time.monotonic() - step.started
        with Step("state.apply test=True on every minion") as step:
            figures["dry"] = highstate_counts(
                salt_lab.salt("*", "state.apply", "test=True", timeout=900), ids, test=True
            )
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
    again, dry = figures["again"], figures["dry"]
    print(
        f"  orch.cluster: {figures['orch_s']:.1f}s; then a second highstate on all minions: "
        f"{again['changed']} changed, {again['failed']} failed ({figures['again_s']:.1f}s); "
        f"state.apply test=True: {dry['changed']} to change, {dry['failed']} failed"
    )
    print(f"  total: {total:.1f}s")
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
