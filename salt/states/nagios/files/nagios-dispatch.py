#!/usr/bin/python3 -IS
"""Forced command of the Nagios check user: run one allow-listed check, nothing else.

Deployed by Salt (nagios/client) and named in the check key's ``command="..."`` option and the
sshd drop-in's ``ForceCommand``; imports nothing from Salt. sshd puts what the client asked for
in ``SSH_ORIGINAL_COMMAND``. That string is split into words (shell-like quoting, no
expansion: no variables, globs, redirections, substitutions or command lists), and the words
must match one entry of the check table (JSON, root-owned, written from pillar):

    {"checks_dir": "...", "timeout": 20,
     "limits": {"cpu": 10, "nproc": 64, "as_mb": 512, "nofile": 64, "fsize_kb": 0},
     "checks": [{"plugin": "check_load", "argv": ["-r", "-w", "4,3,2", "-c", "8,6,4"]},
                {"plugin": "check_dummy", "args": ["[0-3]", "[A-Za-z0-9 _.-]*"]}]}

``argv``: the exact arguments; ``args``: one regular expression per argument (full match).
``check_procs`` never gets a ``-v`` argument unless its entry says ``"verbose": true``.
A match is run directly (no shell) from ``checks_dir`` with an empty environment, in its own
process group, with the table's rlimits and a wall-clock timeout; the group is killed when
the plugin ends or times out, so nothing outlives the check. Anything else is refused
(exit 3, UNKNOWN) and logged to syslog (auth).
"""

import json
import os
import re
import resource
import signal
import sys

NAME = "webfarm-nagios-dispatch"
UNKNOWN = 3
MAX_REQUEST = 4096
VERBOSE = re.compile(r"-v+|--verbose(=.*)?")


class Refused(Exception):
    """The request is not an allowed check."""


def split(request):
    """Words of ``request`` with sh-like quoting ('...', "...", backslash) and no expansion.

    Refuses every character a shell would give a meaning to outside quotes, so a request
    never means more than its words.
    """
    if len(request) > MAX_REQUEST:
        raise Refused("request too long")
    if "\0" in request or "\n" in request or "\r" in request:
        raise Refused("control character in request")
    words, word, in_word, i = [], [], False, 0
    while i < len(request):
        c = request[i]
        if c in " \t":
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
        elif c == "'":
            end = request.find("'", i + 1)
            if end < 0:
                raise Refused("unterminated quote")
            word.append(request[i + 1 : end])
            in_word, i = True, end
        elif c == '"':
            i += 1
            while i < len(request) and request[i] != '"':
                if request[i] in "$`":
                    raise Refused(f"{request[i]!r} in request")
                if request[i] == "\\" and i + 1 < len(request) and request[i + 1] in '"\\':
                    i += 1
                word.append(request[i])
                i += 1
            if i >= len(request):
                raise Refused("unterminated quote")
            in_word = True
        elif c == "\\":
            if i + 1 >= len(request):
                raise Refused("trailing backslash")
            word.append(request[i + 1])
            in_word, i = True, i + 1
        elif c in "|&;<>()$`*?[]{}~#!":
            raise Refused(f"{c!r} in request")
        else:
            word.append(c)
            in_word = True
        i += 1
    if in_word:
        words.append("".join(word))
    return words


def match(table, words):
    """The table entry ``words`` (plugin + arguments) matches; raises :class:`Refused`."""
    if not words:
        raise Refused("empty request")
    plugin, args = words[0], words[1:]
    entries = [e for e in table.get("checks", []) if e.get("plugin") == plugin]
    if not entries:
        raise Refused(f"plugin {plugin!r} is not allowed")
    for entry in entries:
        if plugin == "check_procs" and not entry.get("verbose"):
            if any(VERBOSE.fullmatch(a) for a in args):
                continue
        if "argv" in entry:
            if list(entry["argv"]) == args:
                return entry
        elif len(entry.get("args", [])) == len(args):
            if all(re.fullmatch(p, a) for p, a in zip(entry["args"], args, strict=True)):
                return entry
    raise Refused(f"arguments of {plugin} do not match any configured check")


def plugin_path(table, plugin):
    if "/" in plugin or plugin.startswith("."):
        raise Refused("plugin must be a plain name")
    path = os.path.join(table["checks_dir"], plugin)
    if not os.access(path, os.X_OK):
        raise Refused(f"plugin {plugin!r} is not linked in {table['checks_dir']}")
    return path


def set_limits(limits):
    pairs = [
        (resource.RLIMIT_CPU, limits.get("cpu")),
        (resource.RLIMIT_NPROC, limits.get("nproc")),
        (resource.RLIMIT_NOFILE, limits.get("nofile")),
        (resource.RLIMIT_CORE, 0),
    ]
    if limits.get("as_mb") is not None:
        pairs.append((resource.RLIMIT_AS, int(limits["as_mb"]) * 1024 * 1024))
    if limits.get("fsize_kb") is not None:
        pairs.append((resource.RLIMIT_FSIZE, int(limits["fsize_kb"]) * 1024))
    for which, value in pairs:
        if value is not None:
            resource.setrlimit(which, (int(value), int(value)))


def run(table, path, words):
    """Fork, limit, exec the plugin; wait at most ``timeout`` s; kill its process group."""
    timeout = float(table.get("timeout", 20))
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.setpgid(0, 0)
            os.chdir("/")
            os.umask(0o077)
            set_limits(table.get("limits") or {})
            os.closerange(3, 1024)
            os.execve(path, [words[0], *words[1:]], {})
        except BaseException as exc:  # noqa: BLE001 - report and leave the child, whatever it is
            os.write(2, f"{NAME}: cannot run {words[0]}: {exc}\n".encode())
        os._exit(UNKNOWN)
    timed_out = []

    def on_alarm(signum, frame):
        timed_out.append(True)
        killpg(pid)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    signal.setitimer(signal.ITIMER_REAL, 0)
    killpg(pid)  # whatever the plugin left in its group ends with it
    if timed_out:
        print(f"UNKNOWN - {words[0]} timed out after {timeout:g} s (killed)")
        log(f"timeout: {words[0]} killed after {timeout:g} s")
        return UNKNOWN
    if os.WIFSIGNALED(status):
        print(f"UNKNOWN - {words[0]} killed by signal {os.WTERMSIG(status)}")
        return UNKNOWN
    return os.WEXITSTATUS(status)


def killpg(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def log(message):
    try:
        import syslog

        syslog.openlog(NAME, syslog.LOG_PID, syslog.LOG_AUTH)
        client = os.environ.get("SSH_CLIENT", "?").split(" ")[0]
        syslog.syslog(syslog.LOG_WARNING, f"{message} (user {os.getuid()}, from {client})")
    except OSError:
        pass


def main(argv):
    if len(argv) != 2:
        sys.stderr.write(f"usage: {NAME} <check table>\n")
        return UNKNOWN
    request = os.environ.get("SSH_ORIGINAL_COMMAND")
    try:
        with open(argv[1], encoding="utf-8") as handle:
            table = json.load(handle)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"{NAME}: cannot read the check table: {exc}\n")
        return UNKNOWN
    try:
        if not request:
            raise Refused("no command: interactive login refused")
        words = split(request)
        match(table, words)
        path = plugin_path(table, words[0])
    except Refused as exc:
        shown = (request or "")[:200].encode("unicode_escape").decode()
        log(f"refused {shown!r}: {exc}")
        sys.stderr.write(f"{NAME}: refused: {exc}\n")
        print(f"UNKNOWN - refused by {NAME}: {exc}")
        return UNKNOWN
    sys.stdout.flush()
    return run(table, path, words)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
