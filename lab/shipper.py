"""The access-log shipper program (``salt/states/accesslog/files/webfarm_shipper.py``), as the
lab runs it: its path, its command line, and the program imported as a module."""

import sys
from pathlib import Path

from lab.modload import load_file

REPO = Path(__file__).resolve().parents[1]
SHIPPER = REPO / "salt" / "states" / "accesslog" / "files" / "webfarm_shipper.py"


def shipper_command(uri, database, spool_dir, *extra):
    """The argv that runs the shipper with this Python into ``database`` at ``uri``, spooling
    under ``spool_dir``; ``extra`` (more options, ``--file PATH``...) goes after."""
    return [
        sys.executable,
        str(SHIPPER),
        "--uri",
        uri,
        "--database",
        database,
        "--spool-dir",
        str(spool_dir),
        *extra,
    ]


def load_shipper(name="webfarm_shipper"):
    """The shipper program imported as a fresh module named ``name`` (its parser, its spool)."""
    return load_file(name, SHIPPER)
