"""A real MongoDB-wire-protocol server for tests: SecantusDB as its own process on loopback.

``mongo_server`` is one session-wide server; ``mongo_factory`` makes extra servers a test can
stop and restart (outage tests). Servers are stopped by PID; data lives under a tmp dir.
"""

import subprocess
import sys
import time
from pathlib import Path

from lab.net import free_port
from lab.proc import stop_process

SECANTUSD = Path(sys.executable).with_name("secantusd-py")


class MongoServer:
    """One secantusd-py process; ``stop()``/``start()`` keep the port and the data."""

    def __init__(self, storage, port=None, host="127.0.0.1"):
        self.host = host
        self.port = port or free_port(host)
        self.storage = Path(storage)
        self.proc = None
        self._log = None

    @property
    def uri(self):
        return f"mongodb://{self.host}:{self.port}/"

    def client(self, **kwargs):
        import pymongo

        kwargs.setdefault("serverSelectionTimeoutMS", 5000)
        return pymongo.MongoClient(self.uri, **kwargs)

    def start(self, timeout=60):
        if self.proc is not None and self.proc.poll() is None:
            return self
        if not SECANTUSD.exists():
            raise FileNotFoundError(
                f"{SECANTUSD} not found: install the dev requirements (secantusdb)"
            )
        self.storage.mkdir(parents=True, exist_ok=True)
        self._log = open(self.storage.parent / f"secantusd-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                str(SECANTUSD),
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--storage-path",
                str(self.storage),
                "--log-level",
                "WARNING",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=str(self.storage.parent),
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        client = self.client(serverSelectionTimeoutMS=500)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"secantusd-py exited with {self.proc.returncode}; see {self._log.name}"
                    )
                try:
                    client.admin.command("ping")
                    return self
                except Exception:  # noqa: BLE001 - not up yet
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(
                            f"secantusd-py did not answer ping in {timeout}s"
                        ) from None
                    time.sleep(0.2)
        finally:
            client.close()

    def stop(self, timeout=30):
        if self.proc is None:
            return
        stop_process(self.proc, timeout)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
