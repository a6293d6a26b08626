"""Loops of the lab (clients, writers, monitors) that run in threads until stopped."""

import threading


class Loops:
    """``threads`` threads, each running ``self._loop(index)`` until :meth:`stop` sets
    ``self._stop``; ``self._lock`` guards what they share. As a context manager it starts
    them on entry and stops them on exit."""

    join_timeout = 30

    def __init__(self, threads=1, name=None, daemon=False):
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._loop, args=(index,), name=name, daemon=daemon)
            for index in range(threads)
        ]

    def _loop(self, index):
        raise NotImplementedError

    def start(self):
        for thread in self._threads:
            thread.start()
        return self

    def stop(self):
        self._stop.set()
        for thread in self._threads:
            thread.join(self.join_timeout)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
