"""Message of the day: a fortune (or a pinned message) drawn inside a paper scroll.

Pillar ``motd``:

.. code-block:: yaml

    motd:
      text: "Maintenance window Sunday 02:00 UTC"   # pin a message instead of fortune
      width: 65
"""

import logging
import os
import shutil
import subprocess

from salt.exceptions import CommandExecutionError, SaltInvocationError

import webfarm_files
import webfarm_motd

log = logging.getLogger(__name__)

__virtualname__ = "motd"

FORTUNE_PATHS = ("/usr/games/fortune", "/usr/bin/fortune")


def __virtual__():
    return __virtualname__


def _fortune():
    binary = shutil.which("fortune") or next((p for p in FORTUNE_PATHS if os.path.exists(p)), None)
    if binary is None:
        raise CommandExecutionError("fortune is not installed: install the fortune-mod package")
    proc = subprocess.run([binary, "-s"], capture_output=True, text=True, timeout=10, check=False)
    if proc.returncode != 0:
        raise CommandExecutionError(f"fortune failed: {proc.stderr.strip()}")
    return proc.stdout


def _width(width):
    try:
        width = int(width)
    except (TypeError, ValueError):
        raise SaltInvocationError(f"width must be an integer, got {width!r}") from None
    if width < webfarm_motd.MIN_WIDTH:
        raise SaltInvocationError(f"width must be at least {webfarm_motd.MIN_WIDTH}")
    return width


def scroll(text=None, width=None):
    """
    Return ``text`` drawn inside the paper scroll.

    text
        What to draw. Default: pillar ``motd:text`` when set, else the output of ``fortune``.
    width
        Width of the text column in characters (default: pillar ``motd:width`` or 65).

    CLI Example:

    .. code-block:: bash

        salt '*' motd.scroll
        salt '*' motd.scroll text='Deploy freeze until Monday' width=40
    """
    settings = __pillar__.get("motd", {}) or {}
    width = _width(
        width if width is not None else settings.get("width", webfarm_motd.DEFAULT_WIDTH)
    )
    if text is None:
        text = settings.get("text") or _fortune()
    return webfarm_motd.scroll(str(text), width)


def _read(path):
    return webfarm_files.read_text(path) if path else None


def _head(base):
    head = _read(base) or ""
    return head if not head or head.endswith("\n") else head + "\n"


def current(target="/etc/motd", base="/etc/motd_base", pinned="/etc/motd_pinned", width=None):
    """
    Tell whether ``target`` is the contents of ``base`` followed by one scroll of ``width``
    showing the pinned message (when ``pinned`` exists) or any fortune.

    CLI Example:

    .. code-block:: bash

        salt '*' motd.current
    """
    settings = __pillar__.get("motd", {}) or {}
    width = _width(
        width if width is not None else settings.get("width", webfarm_motd.DEFAULT_WIDTH)
    )
    content, head = _read(target), _head(base)
    if content is None or not content.startswith(head):
        return False
    rest = content[len(head) :]
    text = (_read(pinned) or "").strip()
    if text:
        return rest == webfarm_motd.scroll(text, width)
    return webfarm_motd.is_scroll(rest, width)


def update(target="/etc/motd", base="/etc/motd_base", pinned="/etc/motd_pinned", width=None):
    """
    Regenerate ``target`` as the contents of ``base`` followed by a scroll, mode 0644.

    The scroll shows the contents of ``pinned`` when that file exists (the ``motd`` SLS writes
    pillar ``motd:text`` there so the hourly cron job, which runs without the master, keeps a
    pinned message), else a fortune. The file is replaced atomically.

    CLI Example:

    .. code-block:: bash

        salt '*' motd.update
        salt-call --local motd.update target=/etc/motd base=/etc/motd_base
    """
    text = (_read(pinned) or "").strip() or None
    content = _head(base) + scroll(text=text, width=width)
    webfarm_files.write_atomic(target, content, 0o644)
    return {"target": target, "lines": content.count("\n"), "pinned": text is not None}
