#!/usr/bin/env python3
"""webfarm access-log shipper: Apache access log lines -> MongoDB, never blocking, never losing.

A standalone program (Python stdlib + pymongo, nothing from Salt) that Apache runs as a piped
log (``CustomLog "|/usr/local/bin/webfarm_shipper.py --config /etc/webfarm/shipper.json"
combined``), that syslog-ng runs as a ``program()`` destination, or that a scheduled job runs
over rotated files (``--file``). It also holds the ``LogFormat`` parser; the Salt execution
module's tests import this file by path so there is one copy of it.

The fields of the documents it writes (access and dead-letter) are the store's contract,
defined in ``salt/_utils/webfarm_accessdoc.py``; deployed as this one file, the shipper names
them itself, and ``tests/unit/test_accessdoc.py`` fails when the two drift apart.

Pipeline
--------
* A reader thread reads the input in 64 KiB chunks, splits lines and cuts batches. It never
  waits for the database: a batch goes to a bounded in-memory queue, or, when the queue is full
  or the spool already holds data, is appended to the on-disk spool.
* A sender thread parses each batch against the ``LogFormat`` and writes it with
  ``insert_many(ordered=False)``; lines that do not parse go whole, with the reason, to the
  dead-letter collection. While the server is down or slow the sender keeps retrying its batch
  and the reader spools; when the server is back, the sender sends the queue (older) and then
  replays the spool (newer), so lines arrive in order.
* EOF or SIGTERM: the reader takes what is already in the pipe, the sender drains for
  ``drain_timeout`` seconds, and whatever could not be sent is written to the front of the spool,
  so the next run replays it first. A retried batch keeps its ``_id`` values, so a retry after
  an unacknowledged write cannot duplicate; a replayed spool segment can (duplicates after a
  crash are accepted, losses are not).

Spool and alerts
----------------
The spool directory holds numbered segment files of raw lines, bounded by ``spool_max_bytes``.
At ``spool_alert_ratio`` of the bound the shipper logs a WARNING once, creates the flag file
``<spool_dir>/ALERT`` (a JSON object: bytes used, bound, time) and sets ``"alert": true`` in the
status file (``status_file``, JSON, rewritten every second); the flag file is removed when the
spool falls back under the ratio. Monitoring checks the flag file (Nagios: ``check_file_age``
with ``-f``/``check_file_exists``-style checks) - no Salt is needed on the alert path. When
``alert_command`` is set (an argument list; on the command line one shell-quoted string), it is
started once per alert, without waiting for it, with the flag file's JSON as its last argument:
the ``accesslog`` SLS sets it to ``salt-call event.send webfarm/accesslog/spool/alert`` so
reactors see it. At the
bound itself, ``on_spool_full`` decides: ``drop`` (default: count the lines in ``dropped`` and
log; Apache keeps serving) or ``block`` (stop reading; Apache stalls on the full pipe).

Spool writes are not fsynced per batch: they survive a crash of this process (page cache), not
a power loss of the host.
"""

import argparse
import datetime as _dt
import fcntl
import json
import logging
import os
import queue
import re
import select
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

log = logging.getLogger("webfarm_shipper")

# --------------------------------------------------------------------------------------------
# LogFormat parser
# --------------------------------------------------------------------------------------------

NICKNAMES = {
    "common": '%h %l %u %t "%r" %>s %b',
    "combined": '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"',
    "vhost_combined": '%v:%p %h %l %u %t "%r" %>s %O "%{Referer}i" "%{User-Agent}i"',
    "referer": "%{Referer}i -> %U",
    "agent": "%{User-agent}i",
}

MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}

_DIRECTIVE = re.compile(r"%([<>]?)(?:\{([^}]*)\})?([a-zA-Z%])")
_QUOTED = r'([^"\\]*(?:\\.[^"\\]*)*)'
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|.)")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


class ParseError(ValueError):
    """A line does not match the LogFormat; ``str(exc)`` is the reason kept in dead-letter."""


class FormatError(ValueError):
    """The LogFormat string itself is not supported."""


def _unescape_match(match):
    code = match.group(1)
    if code[0] == "x" and len(code) == 3:
        return chr(int(code[1:], 16))
    return _ESCAPES.get(code, "\\" + code)


def _text(value):
    if value == "-":
        return None
    if "\\" in value:
        return _ESCAPE.sub(_unescape_match, value)
    return value


def _int_or_none(value):
    return None if value == "-" else int(value)


def _clf_bytes(value):
    return 0 if value == "-" else int(value)


def _query(value):
    if not value:
        return None
    return value[1:] if value[0] == "?" else value


_TZ_CACHE = {}


def _tz(offset):
    tz = _TZ_CACHE.get(offset)
    if tz is None:
        sign = -1 if offset[0] == "-" else 1
        minutes = sign * (int(offset[1:3]) * 60 + int(offset[3:5]))
        tz = _dt.timezone(_dt.timedelta(minutes=minutes))
        _TZ_CACHE[offset] = tz
    return tz


def parse_apache_time(value):
    """``10/Oct/2000:13:55:36 -0700`` -> timezone-aware datetime; ValueError when malformed."""
    try:
        if len(value) != 26 or value[2] != "/" or value[6] != "/" or value[11] != ":":
            raise ValueError
        return _dt.datetime(
            int(value[7:11]),
            MONTHS[value[3:6]],
            int(value[0:2]),
            int(value[12:14]),
            int(value[15:17]),
            int(value[18:20]),
            tzinfo=_tz(value[21:26]),
        )
    except (KeyError, ValueError, IndexError):
        raise ValueError(f"bad timestamp [{value}]") from None


def split_request(request):
    """``GET /a?b=1 HTTP/1.1`` -> (method, path, query, protocol); Nones when it does not split."""
    parts = request.split(" ")
    if len(parts) == 3:
        method, target, protocol = parts
    elif len(parts) == 2:
        (method, target), protocol = parts, None
    else:
        return None, None, None, None
    path, sep, query = target.partition("?")
    return method, path, (query if sep and query else None), protocol


def _field_name(prefix, name):
    return prefix + re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


_HEADER_NAMES = {"referer": "referer", "user-agent": "user_agent"}

# directive letter -> (field name, regex for an unquoted value, converter)
#
# "-" in a field: ``%b`` is Apache's CLF byte count, where "-" means zero bytes sent (a 304,
# a HEAD), so it is stored as 0 - the same value ``%B`` logs for that response. Everywhere
# else "-" means the field is absent (no ident, no user, no Referer or other request
# header, no port) and is stored as None.
_SIMPLE = {
    "h": ("ip", None, _text),
    "a": ("remote_addr", None, _text),
    "l": ("logname", None, _text),
    "u": ("user", None, _text),
    "v": ("vhost", None, _text),
    "V": ("server_name", None, _text),
    "p": ("port", r"(\d+|-)", _int_or_none),
    "m": ("method", None, _text),
    "U": ("path", None, _text),
    "q": ("query", None, _query),
    "H": ("protocol", None, _text),
    "b": ("bytes", r"(\d+|-)", _clf_bytes),
    "B": ("bytes", r"(\d+)", int),
    "O": ("bytes_sent", r"(\d+|-)", _int_or_none),
    "I": ("bytes_received", r"(\d+|-)", _int_or_none),
    "D": ("duration_us", r"(\d+)", int),
    "T": ("duration_s", r"(\d+)", int),
}


class LogFormat:
    """An Apache ``LogFormat`` compiled to one regex and a list of typed converters.

    >>> LogFormat("combined").parse('1.2.3.4 - - [17/May/2015:10:05:03 +0000] "GET / HTTP/1.1" 200 5 "-" "x"')["status"]
    200
    """

    def __init__(self, fmt):
        self.source = NICKNAMES.get(fmt, fmt)
        if not isinstance(self.source, str) or not self.source.strip():
            raise FormatError("LogFormat must be a non-empty string")
        self._pieces = []  # (regex piece, human label) for failure reasons
        self._plan = []  # (group index, kind, name, converter)
        self._compile()
        pattern = "".join(piece for piece, _ in self._pieces)
        self._match = re.compile(pattern + r"\Z").match
        self._prefixes = None

    def _compile(self):
        src = self.source
        directives = list(_DIRECTIVE.finditer(src))
        letters = {(m.group(1) or "") + m.group(3) for m in directives}
        has_final_status = ">s" in letters
        has_h = "h" in letters
        group = 0
        pos = 0
        for index, m in enumerate(directives):
            literal = src[pos : m.start()]
            if literal:
                self._pieces.append((re.escape(literal), repr(literal)))
            pos = m.end()
            mod, arg, letter = m.group(1), m.group(2), m.group(3)
            label = m.group(0)
            if letter == "%":
                self._pieces.append(("%", label))
                continue
            following = (
                src[m.end() : directives[index + 1].start()]
                if index + 1 < len(directives)
                else src[m.end() :]
            )
            quoted = literal.endswith('"') and following.startswith('"')
            stop = following[:1]
            unquoted = r"(\S*)" if not stop or stop.isspace() else f"([^\\s{re.escape(stop)}]*)"
            text_re = _QUOTED if quoted else unquoted
            if letter == "t":
                if arg:
                    raise FormatError(f"{label}: custom time formats are not supported")
                self._pieces.append((r"\[([^\]]*)\]", label))
                self._plan.append((group, "time", "time", None))
            elif letter == "r":
                self._pieces.append((text_re, label))
                self._plan.append((group, "request", "request", None))
            elif letter == "s":
                self._pieces.append((r"(\d{3}|-)", label))
                final = mod == ">" or not has_final_status
                name = "status" if final else "status_original"
                self._plan.append((group, "field", name, _int_or_none))
            elif letter in ("i", "o", "e"):
                if not arg:
                    raise FormatError(f"{label}: needs a name, e.g. %{{Referer}}{letter}")
                if letter == "i":
                    name = _HEADER_NAMES.get(arg.lower()) or _field_name("req_", arg)
                elif letter == "o":
                    name = _field_name("resp_", arg)
                else:
                    name = _field_name("env_", arg)
                self._pieces.append((text_re, label))
                self._plan.append((group, "field", name, _text))
            elif letter in _SIMPLE:
                if arg:
                    raise FormatError(f"{label}: arguments are not supported for %{letter}")
                name, regex, conv = _SIMPLE[letter]
                if letter == "a" and not has_h:
                    name = "ip"
                self._pieces.append((regex or text_re, label))
                self._plan.append((group, "field", name, conv))
            else:
                raise FormatError(f"{label}: unsupported LogFormat directive")
            group += 1
        tail = src[pos:]
        if tail:
            self._pieces.append((re.escape(tail), repr(tail)))
        if not self._plan:
            raise FormatError("LogFormat has no directives")
        self.fields = [name for _, _, name, _ in self._plan]

    def parse(self, line):
        """Return the typed document of one line (without newline); ParseError when it fails."""
        m = self._match(line)
        if m is None:
            raise ParseError(self._why(line))
        groups = m.groups()
        doc = {}
        for group, kind, name, conv in self._plan:
            value = groups[group]
            if kind == "field":
                doc[name] = conv(value)
            elif kind == "time":
                try:
                    stamp = parse_apache_time(value)
                except ValueError as exc:
                    raise ParseError(str(exc)) from None
                doc["time"] = stamp
                doc["tz"] = value[21:26]
            else:
                request = _text(value)
                if request is None:
                    doc["request"] = None
                    continue
                method, path, query, protocol = split_request(request)
                if method is None:
                    doc["request"] = request
                    continue
                doc["method"] = method
                doc["path"] = path
                doc["query"] = query
                doc["protocol"] = protocol
        return doc

    def _why(self, line):
        """Name the first directive the line stops matching at (only computed for failures)."""
        if self._prefixes is None:
            self._prefixes = []
            acc = ""
            for piece, label in self._pieces:
                acc += piece
                self._prefixes.append((re.compile(acc), label))
        last_end = 0
        previous = "the start"
        for regex, label in self._prefixes:
            m = regex.match(line)
            if m is None:
                return (
                    f"does not match LogFormat {self.source!r} at {label} after {previous} "
                    f"(column {last_end + 1}: {line[last_end : last_end + 30]!r})"
                )
            last_end = m.end()
            previous = label
        return (
            f"does not match LogFormat {self.source!r}: unexpected text at column "
            f"{last_end + 1}: {line[last_end : last_end + 30]!r}"
        )


def parse_lines(fmt, lines, source=None, source_from_line=False):
    """Split decoded lines into (documents, dead letters); ``source`` tags both when given.

    With ``source_from_line`` each line starts with the sending host and a space (the syslog-ng
    log host writes ``${HOST} ${MSG}``), which becomes the ``source``.
    """
    docs, dead = [], []
    parse = fmt.parse
    for line in lines:
        if source_from_line:
            source, _, line = line.partition(" ")
        try:
            doc = parse(line)
        except ParseError as exc:
            item = {"line": line, "reason": str(exc)}
            if source:
                item["source"] = source
            item["received"] = _dt.datetime.now(_dt.UTC)
            dead.append(item)
            continue
        if source:
            doc["source"] = source
        docs.append(doc)
    return docs, dead


# --------------------------------------------------------------------------------------------
# Spool: numbered segment files of raw lines, FIFO, with a front for unsent in-memory data
# --------------------------------------------------------------------------------------------


class SpoolFull(Exception):
    pass


class Spool:
    """On-disk FIFO of batches of raw lines (bytes, one per line) bounded by ``max_bytes``."""

    FIRST = 10**12
    SEGMENT_BYTES = 8 << 20

    def __init__(self, directory, max_bytes, alert_ratio=0.8, lock_wait=10.0, alert_command=None):
        self.dir = directory
        self.max_bytes = int(max_bytes)
        self.alert_ratio = float(alert_ratio)
        self.alert_command = list(alert_command or [])
        self._alert_procs = []
        os.makedirs(directory, mode=0o750, exist_ok=True)
        self._lockfile = open(os.path.join(directory, "lock"), "a+")  # noqa: SIM115
        deadline = time.monotonic() + lock_wait
        while True:
            try:
                fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"spool {directory} is locked by another shipper; give each shipper "
                        "its own spool_dir"
                    ) from None
                time.sleep(0.2)
        self._lock = threading.Lock()
        self._seqs = sorted(
            int(name[4:-6])
            for name in os.listdir(directory)
            if name.startswith("seg-") and name.endswith(".lines")
        )
        self.bytes = sum(os.path.getsize(self._path(s)) for s in self._seqs)
        self._tail = None  # (seq, file) open for appending
        self.alert = False
        self._alert_path = os.path.join(directory, "ALERT")
        self._update_alert()

    def _path(self, seq):
        return os.path.join(self.dir, f"seg-{seq:015d}.lines")

    def __len__(self):
        return len(self._seqs)

    def has_data(self):
        return bool(self._seqs)

    def _update_alert(self):
        alert = self.bytes >= self.max_bytes * self.alert_ratio
        if alert and not self.alert:
            log.warning(
                "spool %s at %d of %d bytes (alert ratio %.2f): MongoDB unreachable or slow",
                self.dir,
                self.bytes,
                self.max_bytes,
                self.alert_ratio,
            )
            payload = {"bytes": self.bytes, "max_bytes": self.max_bytes, "since": time.time()}
            with open(self._alert_path, "w", encoding="utf-8") as handle:
                json.dump(payload, handle)
            self._run_alert_command(payload)
        elif not alert and self.alert:
            log.warning("spool %s back under the alert ratio (%d bytes)", self.dir, self.bytes)
            try:
                os.unlink(self._alert_path)
            except FileNotFoundError:
                pass
        self.alert = alert

    def _run_alert_command(self, payload):
        self._alert_procs = [proc for proc in self._alert_procs if proc.poll() is None]
        if not self.alert_command:
            return
        try:
            self._alert_procs.append(
                subprocess.Popen(
                    [*self.alert_command, json.dumps(payload)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        except OSError as exc:
            log.error("alert command %s failed to start: %s", self.alert_command[0], exc)

    @staticmethod
    def _encode(lines):
        return b"".join(line + b"\n" for line in lines)

    def append(self, lines):
        """Append a batch at the tail; SpoolFull when it would pass the bound."""
        data = self._encode(lines)
        with self._lock:
            if self.bytes + len(data) > self.max_bytes:
                raise SpoolFull
            if self._tail is None or self._tail[1].tell() >= self.SEGMENT_BYTES:
                self._seal()
                seq = (self._seqs[-1] + 1) if self._seqs else self.FIRST
                self._seqs.append(seq)
                self._tail = (seq, open(self._path(seq), "ab"))  # noqa: SIM115
            self._tail[1].write(data)
            self._tail[1].flush()
            self.bytes += len(data)
            self._update_alert()

    def prepend(self, lines):
        """Write unsent lines that are older than everything spooled as a new head segment."""
        if not lines:
            return
        data = self._encode(lines)
        with self._lock:
            seq = (self._seqs[0] - 1) if self._seqs else self.FIRST
            path = self._path(seq)
            with open(path + ".tmp", "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(path + ".tmp", path)
            self._seqs.insert(0, seq)
            self.bytes += len(data)
            self._update_alert()

    def _seal(self):
        if self._tail is not None:
            self._tail[1].close()
            self._tail = None

    def head(self):
        """(seq, lines) of the oldest segment, sealing it first if it is being appended to."""
        with self._lock:
            if not self._seqs:
                return None
            seq = self._seqs[0]
            if self._tail is not None and self._tail[0] == seq:
                self._seal()
        with open(self._path(seq), "rb") as handle:
            data = handle.read()
        return seq, data.split(b"\n")[:-1]

    def remove(self, seq):
        with self._lock:
            path = self._path(seq)
            size = os.path.getsize(path)
            os.unlink(path)
            self._seqs.remove(seq)
            self.bytes -= size
            self._update_alert()

    def close(self):
        with self._lock:
            if self._tail is not None:
                os.fsync(self._tail[1].fileno())
            self._seal()
        self._lockfile.close()


# --------------------------------------------------------------------------------------------
# Input: stdin / files (optionally followed across rotation), read without ever waiting on the DB
# --------------------------------------------------------------------------------------------


def file_key(st):
    """Identity of a rotated file for the import journal: device, inode, size, mtime."""
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{int(st.st_mtime)}"


def load_journal(path):
    if not path or not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def save_journal(path, keys, keep=1000):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(keys[-keep:], handle)
    os.replace(tmp, path)


class Reader(threading.Thread):
    """Read raw lines from ``sources`` and hand batches to ``dispatch`` (never blocks on the DB)."""

    CHUNK = 1 << 16
    STOP_GRACE = 1.0  # seconds to take what the writer already wrote after SIGTERM

    def __init__(self, shipper, sources, follow=False, skip=()):
        super().__init__(name="reader", daemon=True)
        self.shipper = shipper
        self.sources = sources
        self.follow = follow
        self.skip = set(skip)
        self.completed = []
        self.stop_reading = threading.Event()
        self.finished = threading.Event()
        self.error = None

    def run(self):
        try:
            for source in self.sources:
                if self.stop_reading.is_set():
                    break
                if source == "-":
                    self._read_fd(sys.stdin.fileno())
                elif self.follow:
                    self._follow(source)
                else:
                    with open(source, "rb") as handle:
                        key = file_key(os.fstat(handle.fileno()))
                        if key in self.skip:
                            log.info("%s already imported (%s): skipped", source, key)
                            continue
                        self._read_fd(handle.fileno())
                        if not self.stop_reading.is_set():
                            self.completed.append(key)
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc
            log.error("reader stopped: %s", exc)
        finally:
            self.shipper.cut(final=True)
            self.finished.set()

    def _read_fd(self, fd):
        """Read until EOF; on stop, take what is already readable and return."""
        rest = b""
        stop_by = None
        while True:
            if stop_by is None and self.stop_reading.is_set():
                stop_by = time.monotonic() + self.STOP_GRACE
            if stop_by is not None and time.monotonic() >= stop_by:
                break
            ready, _, _ = select.select([fd], [], [], 0 if stop_by else 0.2)
            if not ready:
                if stop_by:
                    break
                continue
            chunk = os.read(fd, self.CHUNK)
            if not chunk:
                break
            rest = self._feed(rest, chunk)
        if rest:
            self.shipper.add_lines([rest])

    def _feed(self, rest, chunk):
        lines = (rest + chunk).split(b"\n") if rest else chunk.split(b"\n")
        rest = lines.pop()
        if len(rest) > self.shipper.max_line_bytes:
            lines.append(rest)
            rest = b""
        if lines:
            self.shipper.add_lines(lines)
        return rest

    def _follow(self, path):
        """tail -F: read ``path``, reopen it when it is rotated (new inode) or truncated."""
        handle = None
        rest = b""
        while not self.stop_reading.is_set():
            if handle is None:
                try:
                    handle = open(path, "rb")  # noqa: SIM115
                except FileNotFoundError:
                    time.sleep(0.2)
                    continue
            chunk = handle.read(self.CHUNK)
            if chunk:
                rest = self._feed(rest, chunk)
                continue
            try:
                st = os.stat(path)
            except FileNotFoundError:
                st = None
            own = os.fstat(handle.fileno())
            if st is None or st.st_ino != own.st_ino or st.st_size < handle.tell():
                chunk = handle.read()
                if chunk:
                    rest = self._feed(rest, chunk)
                if rest:
                    self.shipper.add_lines([rest])
                    rest = b""
                handle.close()
                handle = None
                continue
            time.sleep(0.2)
        if handle is not None:
            rest = self._feed(rest, handle.read())
            handle.close()
        if rest:
            self.shipper.add_lines([rest])


# --------------------------------------------------------------------------------------------
# Shipper
# --------------------------------------------------------------------------------------------

DEFAULTS = {
    "uri": "mongodb://127.0.0.1:27017/",
    "database": "weblogs",
    "collection": "access",
    "dead_letter_collection": "access_deadletter",
    "log_format": "combined",
    "source": None,
    "source_from_line": False,
    "imported_journal": None,
    "batch_size": 1000,
    "flush_interval": 1.0,
    "queue_batches": 16,
    "spool_dir": "/var/spool/webfarm-shipper",
    "spool_max_bytes": 1 << 30,
    "spool_alert_ratio": 0.8,
    "alert_command": None,
    "on_spool_full": "drop",
    "drain_timeout": 10.0,
    "max_line_bytes": 1 << 16,
    "status_file": None,
    "server_timeout_ms": 2000,
    "retry_max_seconds": 5.0,
}


class Shipper:
    def __init__(self, settings):
        self.s = settings
        self.fmt = LogFormat(settings["log_format"])
        self.batch_size = int(settings["batch_size"])
        self.max_line_bytes = int(settings["max_line_bytes"])
        self.source = settings["source"] or socket.gethostname()
        self.queue = queue.Queue(maxsize=int(settings["queue_batches"]))
        self.spool = Spool(
            settings["spool_dir"],
            settings["spool_max_bytes"],
            settings["spool_alert_ratio"],
            alert_command=settings["alert_command"],
        )
        self._lock = threading.Lock()
        self._pending = []
        self._pending_since = None
        self.stats = dict.fromkeys(
            ("read", "sent", "dead", "spooled", "replayed", "dropped", "retries"), 0
        )
        self._client = None
        self._coll = None
        self._dead_coll = None
        self._reader = None
        self._stop_deadline = None

    # -- reader side -------------------------------------------------------------------------
    def add_lines(self, lines):
        with self._lock:
            if not self._pending:
                self._pending_since = time.monotonic()
            self._pending.extend(lines)
            self.stats["read"] += len(lines)
            while len(self._pending) >= self.batch_size:
                batch = self._pending[: self.batch_size]
                del self._pending[: self.batch_size]
                self._dispatch(batch)
            if not self._pending:
                self._pending_since = None

    def cut(self, final=False, max_age=None):
        """Hand the partial batch on (at EOF, or when it is older than ``max_age``)."""
        with self._lock:
            if not self._pending:
                return
            if not final and (time.monotonic() - self._pending_since) < max_age:
                return
            batch, self._pending, self._pending_since = self._pending, [], None
            self._dispatch(batch)

    def _dispatch(self, batch):
        """Queue the batch, or spool it (keeping order) when the queue is full or spool busy."""
        if not self.spool.has_data():
            try:
                self.queue.put_nowait(batch)
                return
            except queue.Full:
                pass
        while True:
            try:
                self.spool.append(batch)
                self.stats["spooled"] += len(batch)
                return
            except SpoolFull:
                if self.s["on_spool_full"] == "block":
                    self._lock.release()
                    try:
                        time.sleep(0.1)
                    finally:
                        self._lock.acquire()
                    continue
                self.stats["dropped"] += len(batch)
                log.error(
                    "spool full (%d bytes): dropped %d lines (total dropped %d)",
                    self.spool.bytes,
                    len(batch),
                    self.stats["dropped"],
                )
                return

    # -- sender side -------------------------------------------------------------------------
    def _connect(self):
        import pymongo

        timeout = int(self.s["server_timeout_ms"])
        self._client = pymongo.MongoClient(
            self.s["uri"],
            serverSelectionTimeoutMS=timeout,
            connectTimeoutMS=timeout,
            socketTimeoutMS=max(timeout * 5, 10000),
            appname="webfarm-shipper",
        )
        db = self._client[self.s["database"]]
        self._coll = db[self.s["collection"]]
        self._dead_coll = db[self.s["dead_letter_collection"]]

    def _decode(self, raw_lines):
        return [raw.decode("utf-8", "backslashreplace").rstrip("\r") for raw in raw_lines]

    def prepare(self, raw_lines):
        docs, dead = parse_lines(
            self.fmt, self._decode(raw_lines), self.source, self.s["source_from_line"]
        )
        return {"raw": raw_lines, "docs": docs, "dead": dead}

    def _insert(self, coll, docs):
        from pymongo.errors import BulkWriteError

        if not docs:
            return
        try:
            coll.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            # Documents keep their _id across retries: a duplicate key means "already stored".
            errors = [e for e in exc.details.get("writeErrors", []) if e.get("code") != 11000]
            if errors:
                raise

    def send(self, item):
        """Write one prepared batch; raises PyMongoError when the server did not take it."""
        if self._coll is None:
            self._connect()
        self._insert(self._coll, item["docs"])
        self._insert(self._dead_coll, item["dead"])

    def _deadline(self):
        """None while input runs; once it is over, the moment to stop trying to drain."""
        if self._stop_deadline is None and self._reader.finished.is_set():
            self._stop_deadline = time.monotonic() + float(self.s["drain_timeout"])
        return self._stop_deadline

    def _send_retrying(self, item):
        """Send until it works; False when the drain deadline passes first."""
        from pymongo.errors import PyMongoError

        delay = 0.1
        while True:
            try:
                self.send(item)
                self.stats["sent"] += len(item["docs"])
                self.stats["dead"] += len(item["dead"])
                return True
            except PyMongoError as exc:
                self.stats["retries"] += 1
                if self.stats["retries"] == 1 or self.stats["retries"] % 50 == 0:
                    log.warning("MongoDB write failed (%s); retrying, input is spooled", exc)
            deadline = self._deadline()
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, float(self.s["retry_max_seconds"]))

    def run(self, reader):
        """Sender loop; returns when input is over and everything is sent or spooled."""
        self._reader = reader
        interval = float(self.s["flush_interval"])
        while True:
            try:
                raw = self.queue.get(timeout=min(interval, 0.2))
            except queue.Empty:
                raw = None
            if raw is not None:
                item = self.prepare(raw)
                if not self._send_retrying(item):
                    self._persist_unsent(item)
                    return False
                continue
            if self.spool.has_data():
                if not self._replay_head():
                    return False
                continue
            if reader.finished.is_set():
                return True
            self.cut(max_age=interval)

    def _replay_head(self):
        seq, raw_lines = self.spool.head()
        for start in range(0, len(raw_lines), self.batch_size):
            item = self.prepare(raw_lines[start : start + self.batch_size])
            if not self._send_retrying(item):
                return False  # the segment stays on disk and is replayed next time
        self.stats["replayed"] += len(raw_lines)
        self.spool.remove(seq)
        return True

    def _persist_unsent(self, item):
        """The server stayed down past the drain timeout: unsent lines go to the spool front."""
        lines = list(item["raw"])
        while True:
            try:
                lines.extend(self.queue.get_nowait())
            except queue.Empty:
                break
        self.spool.prepend(lines)
        self.stats["spooled"] += len(lines)
        log.warning("server unreachable at exit: %d lines kept in %s", len(lines), self.spool.dir)

    def write_status(self):
        path = self.s["status_file"]
        if not path:
            return
        status = dict(self.stats)
        status.update(
            spool_bytes=self.spool.bytes,
            spool_max_bytes=self.spool.max_bytes,
            spool_segments=len(self.spool),
            alert=self.spool.alert,
            queued_batches=self.queue.qsize(),
            time=time.time(),
            pid=os.getpid(),
        )
        tmp = f"{path}.tmp"
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(tmp, "w", encoding="utf-8") as handle:
                json.dump(status, handle)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot write status file %s: %s", path, exc)

    def close(self):
        self.write_status()
        self.spool.close()
        if self._client is not None:
            self._client.close()


def load_settings(argv=None):
    parser = argparse.ArgumentParser(
        description="Ship Apache access log lines (stdin or files) into MongoDB."
    )
    parser.add_argument("--config", help="JSON file with settings (keys as the long options)")
    parser.add_argument("--file", action="append", dest="files", help="read this file (repeat)")
    parser.add_argument("--follow", action="store_true", help="follow --file across rotation")
    for key, value in DEFAULTS.items():
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, bool):
            parser.add_argument(flag, dest=key, action="store_const", const=True, default=None)
        else:
            kind = type(value) if value is not None else str
            parser.add_argument(flag, dest=key, type=kind, default=None)
    parser.add_argument("--log-file", help="log here instead of stderr")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    settings = dict(DEFAULTS)
    if args.config:
        with open(args.config, encoding="utf-8") as handle:
            loaded = json.load(handle)
        unknown = set(loaded) - set(DEFAULTS) - {"files", "follow", "log_file", "log_level"}
        if unknown:
            parser.error(f"unknown settings in {args.config}: {', '.join(sorted(unknown))}")
        settings.update(loaded)
    for key in DEFAULTS:
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    settings["files"] = args.files or settings.get("files") or ["-"]
    settings["follow"] = args.follow or settings.get("follow", False)
    settings["log_file"] = args.log_file or settings.get("log_file")
    settings["log_level"] = settings.get("log_level") or args.log_level
    if settings["on_spool_full"] not in ("drop", "block"):
        parser.error("on_spool_full must be drop or block")
    if isinstance(settings["alert_command"], str):
        settings["alert_command"] = shlex.split(settings["alert_command"])
    if settings["alert_command"] is not None and not (
        isinstance(settings["alert_command"], list)
        and settings["alert_command"]
        and all(isinstance(arg, str) for arg in settings["alert_command"])
    ):
        parser.error("alert_command must be a non-empty list of strings")
    return settings


def main(argv=None):
    settings = load_settings(argv)
    handler = (
        logging.FileHandler(settings["log_file"])
        if settings["log_file"]
        else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(
        logging.Formatter("%(asctime)s webfarm_shipper[%(process)d] %(levelname)s %(message)s")
    )
    log.addHandler(handler)
    log.setLevel(settings["log_level"].upper())
    try:
        shipper = Shipper(settings)
    except (FormatError, RuntimeError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 2
    journal_path = settings["imported_journal"]
    try:
        journal = load_journal(journal_path)
    except (OSError, ValueError) as exc:
        log.error("cannot read the import journal %s: %s", journal_path, exc)
        return 2
    reader = Reader(shipper, settings["files"], follow=settings["follow"], skip=journal)

    def _stop(signum, _frame):
        log.info("signal %d: flushing", signum)
        reader.stop_reading.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    reader.start()
    outcome = {}
    sender = threading.Thread(
        target=lambda: outcome.setdefault("ok", shipper.run(reader)), name="sender", daemon=True
    )
    sender.start()
    while sender.is_alive():
        shipper.write_status()
        sender.join(1.0)
    shipper.close()
    if journal_path and reader.completed and not shipper.stats["dropped"] and not reader.error:
        # Sent or spooled (replayed by the next run): either way the file is safely imported.
        save_journal(journal_path, journal + reader.completed)
    log.info("done: %s", json.dumps(shipper.stats, sort_keys=True))
    if reader.error is not None:
        return 1
    return 0 if outcome.get("ok") else 3


if __name__ == "__main__":
    sys.exit(main())
