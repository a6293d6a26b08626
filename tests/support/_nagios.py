"""Reading a Nagios ``status.dat`` (used by the nagios tests and the demo; not a plugin)."""

import re
from pathlib import Path


def parse_status(path):
    """servicestatus blocks of a Nagios status.dat as dicts."""
    blocks = re.findall(r"servicestatus \{\n(.*?)\n\s*\}", Path(path).read_text(), re.S)
    out = []
    for block in blocks:
        fields = dict(line.strip().split("=", 1) for line in block.splitlines() if "=" in line)
        out.append(fields)
    return out
