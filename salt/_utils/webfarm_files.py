"""Reading and atomically replacing small files, for the execution modules."""

import os
import tempfile

from salt.exceptions import CommandExecutionError


def read_text(path):
    """The file's text (undecodable bytes replaced), or None when it does not exist."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CommandExecutionError(f"cannot read {path}: {exc}") from exc


def write_atomic(path, text, mode=0o644, check=None):
    """Replace ``path`` with ``text`` in one rename, creating its directory.

    ``check(tmp_path)``, when given, sees the complete new file before it replaces the old
    one; whatever it raises propagates and leaves ``path`` untouched. No temp file is left.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, mode)
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise CommandExecutionError(f"cannot write {path}: {exc}") from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
