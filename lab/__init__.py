"""The lab: the services that demo/, bench/ and tests/ run (plain Python, no pytest).

Importing ``lab`` puts ``salt/_utils`` on ``sys.path``, so lab modules and whoever uses them
``import webfarm_<cap>`` as the execution modules do under Salt's loader. This is the one
place that does it outside pytest (whose ``pythonpath`` in pyproject.toml does it for the
tests); bench scripts, run by path, add only the repository itself.
"""

import sys
from pathlib import Path

UTILS = str(Path(__file__).resolve().parents[1] / "salt" / "_utils")
if UTILS not in sys.path:
    sys.path.insert(0, UTILS)
