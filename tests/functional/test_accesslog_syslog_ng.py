"""Integration-style: both sides of accesslog/syslog_ng.sls in one real syslog-ng on loopback.

The web side follows an access log and forwards over TCP (syslog protocol) to the log-host side,
whose program() destination is the real shipper writing into the real store.
"""

import os
import shutil
import signal
import subprocess
import time
import uuid

import pytest

from lab.mongo import free_port
from lab.proc import descendants
from tests.functional.states.test_accesslog import acl_pillar, all_ok, apply

SYSLOG_NG = shutil.which("syslog-ng") or "/usr/sbin/syslog-ng"


@pytest.mark.timeout(120)
def test_web_to_loghost_to_store(modules, tmp_path, mongo_server, shared_data):
    if not os.path.exists(SYSLOG_NG):
        pytest.skip("syslog-ng is not installed (apt-get install syslog-ng-core)")
    port = free_port()
    database = f"sng{uuid.uuid4().hex[:8]}"
    confs = []
    for side, log_host in (("web", False), ("loghost", True)):
        pillar, root = acl_pillar(
            tmp_path / side,
            mongo_server.uri,
            mode="syslog_ng",
            log_host=log_host,
            syslog={
                "log_host_address": "127.0.0.1",
                "listen": "127.0.0.1",
                "port": port,
                # One process holds both sides: the web side may connect before the
                # log-host side listens, so retry quickly.
                "time_reopen": 1,
            },
            shipper={"flush_interval": 0.2},
        )
        pillar["accesslog"]["store"]["database"] = database
        all_ok(apply(modules, "accesslog.syslog_ng", pillar), False)
        confs.append(root / "syslog-ng/conf.d/webfarm-accesslog.conf")
        if not log_host:
            access_log = root / "log/access.log"
    main = tmp_path / "syslog-ng.conf"
    main.write_text("@version: 3.38\n" + "".join(f'@include "{conf}"\n' for conf in confs))
    lines = (shared_data / "elastic-apache_logs.log").read_bytes().split(b"\n")[:300]
    access_log.write_bytes(b"\n".join(lines) + b"\n")

    proc = subprocess.Popen(
        [
            SYSLOG_NG,
            "-F",
            "--no-caps",
            "-f",
            str(main),
            "-R",
            str(tmp_path / "syslog-ng.persist"),
            "-p",
            str(tmp_path / "syslog-ng.pid"),
            "-c",
            str(tmp_path / "syslog-ng.ctl"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    coll = mongo_server.client()[database].access
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and coll.count_documents({}) < len(lines):
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.3)
        assert coll.count_documents({}) == len(lines)
        doc = coll.find_one(
            {"path": "/presentations/logstash-monitorama-2013/images/kibana-search.png"}
        )
        assert doc["ip"] == "83.149.9.216" and doc["bytes"] == 203023
        assert doc["source"] not in ("", None)  # the sending host, taken from each line
        loggers = [p for p in descendants(proc.pid)]
        assert loggers, "syslog-ng did not start the shipper"
    finally:
        loggers = descendants(proc.pid)
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in loggers):
            time.sleep(0.2)
        for pid in loggers:
            if os.path.exists(f"/proc/{pid}"):
                os.kill(pid, signal.SIGKILL)
