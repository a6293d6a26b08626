"""Step 1b: VRRP failover of the primary tier under live sticky sessions.

Right after step 1 (which started keepalived on both primary LBs with ``state.apply
haproxy.vrrp``): six cookie-keeping sessions run through the primary tier's VIP from the
master's namespace (``python -m lab.httpapp sticky``), the VIP's current holder gets its
HAProxy killed with SIGKILL (master and worker: a crashed HAProxy), keepalived's check on
that LB fails, and the other primary LB takes the VIP. The step prints how long the VIP did
not answer, how many requests failed, and how many sessions kept their SITEID and FARMID
(each served by one site and farm throughout). ``state.apply haproxy`` then restarts the
killed HAProxy; the VIP stays where it is (``nopreempt``: one move per failure).
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

from demo import netlab, salt_lab, step_haproxy, topology
from lab.proc import children

TITLE = (
    "step 1b: VRRP failover of the primary tier: kill -9 the VIP holder's HAProxy under live"
    " sticky sessions"
)
SESSIONS = 6


def pillar():
    return {}  # step 1 gives the LBs their haproxy (and haproxy:vrrp) pillar


def _kill_haproxy(minion_id):
    """SIGKILL the HAProxy master of ``minion_id`` (its pidfile) and its workers."""
    pidfile = salt_lab.host_root(minion_id) / "haproxy" / "haproxy.pid"
    master = int(pidfile.read_text().split()[0])
    victims = [master, *children(master)]
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return victims


def _traffic(vip, stop_file):
    argv = [
        sys.executable, "-m", "lab.httpapp", "sticky", "--host", vip["address"],
        "--port", str(vip["port"]), "--stop-file", str(stop_file), "--sessions", str(SESSIONS),
    ]  # fmt: skip
    return subprocess.Popen(
        netlab.exec_argv(salt_lab.MASTER_NS, argv),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=topology.REPO,
    )  # fmt: skip


def _wait_holder(address, minion_id, timeout=20):
    deadline = time.monotonic() + timeout
    holders = {}
    while time.monotonic() < deadline:
        holders = step_haproxy.vip_holders()
        if holders.get(address) == [minion_id]:
            return
        time.sleep(0.3)
    raise RuntimeError(f"VIP {address} did not move to {minion_id} within {timeout}s: {holders}")


def outage(events, start):
    """(failed requests since ``start``, seconds from ``start`` to the first success after
    the last failure, or None if none followed)."""
    after = [e for e in events if e[0] >= start]
    failed = [e for e in after if not e[2]]
    if not failed:
        return 0, 0.0
    last = max(e[0] for e in failed)
    ok = [e[0] for e in after if e[2] and e[0] > last]
    return len(failed), (min(ok) - start if ok else None)


def places(events):
    """``{session: [(site, farm) of every successful request, in order]}``."""
    out = {}
    for _t, session, ok, site, farm in sorted(events):
        if ok:
            out.setdefault(session, []).append((site, farm))
    return out


def run():
    """Kill the primary VIP holder's HAProxy under sticky traffic; the summary line."""
    vip = topology.load()["primary_vip"]
    masters = step_haproxy.wait_for_vrrp_masters()
    master = masters[vip["address"]]
    backup = next(lb["id"] for lb in topology.load()["primary_lb"] if lb["id"] != master)
    print(f"    VIP {vip['address']} held by {master}; {SESSIONS} sticky sessions through it")
    stop_file = salt_lab.STATE_DIR / "failover-traffic.stop"
    stop_file.unlink(missing_ok=True)
    proc = _traffic(vip, stop_file)
    try:
        time.sleep(3)  # every session has its SITEID and FARMID
        killed_at = time.monotonic()
        victims = _kill_haproxy(master)
        print(f"    kill -9 HAProxy on {master} (pids {', '.join(map(str, victims))})")
        _wait_holder(vip["address"], backup)
        print(f"    VIP {vip['address']} now held by {backup}")
        time.sleep(3)  # the sessions keep going on the new master
    finally:
        stop_file.write_text("")
        out, err = proc.communicate(timeout=60)
        stop_file.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError(f"sticky traffic failed: {err.strip()}")
    data = json.loads(out)
    events = data["events"]
    failed, seconds = outage(events, killed_at)
    served = places(events)
    kept = 0
    for session in range(1, SESSIONS + 1):
        seen = served.get(session, [])
        cookies = data["cookies"].get(str(session), {})
        sticky = bool(seen) and len(set(seen)) == 1
        kept += sticky
        where = "/".join(seen[0]) if seen else "-"
        print(
            f"    session {session}: SITEID={cookies.get('SITEID')} FARMID={cookies.get('FARMID')}"
            f" -> {len(seen)} served, {'all on ' + where if sticky else 'MOVED: ' + str(set(seen))}"
        )
    took = "no outage" if not failed else f"the VIP answered again after {seconds:.2f}s"
    print(
        f"    failover: {took}; requests failed: {failed} of {len(events)}; "
        f"sessions that kept SITEID and FARMID: {kept}/{SESSIONS}"
    )
    started = salt_lab.call(master, "haproxy_tier.start", "tier=primary")
    holders = step_haproxy.vip_holders()
    print(
        f"    {master}: haproxy_tier.start: HAProxy back (master pid {started['master_pid']}); "
        f"VIP {vip['address']} stays on "
        f"{','.join(holders.get(vip['address'], [])) or 'nobody'} (nopreempt)"
    )
    if failed and seconds is None:
        raise RuntimeError("the VIP never answered again")
    if kept != SESSIONS:
        raise RuntimeError(f"{SESSIONS - kept} sessions lost their SITEID/FARMID")
    return (
        f"kill -9 HAProxy on {master}: VIP on {backup}, answered again after "
        f"{seconds:.2f}s, {failed} requests failed, {kept}/{SESSIONS} sessions kept SITEID+FARMID"
    )
