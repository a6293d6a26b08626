"""Per-minion pillar through Salt's ``file_tree`` ext_pillar (a lab's paths, ports, sockets).

``hosts/<minion>/<key>/<subkey>`` files hold the values: a ``str`` as it is, anything else as
JSON text (file_tree hands every value to the minion as a string).
"""

import json
import shutil
from pathlib import Path


class PillarOverrides:
    """Writes the ``file_tree`` root: ``set(minion_id, {...})`` replaces that minion's pillar."""

    def __init__(self, root):
        self.root = Path(root)
        (self.root / "hosts").mkdir(parents=True, exist_ok=True)

    def ext_pillar(self):
        """The master's ``ext_pillar`` entry that reads this tree."""
        return {"file_tree": {"root_dir": str(self.root)}}

    def set(self, minion_id, data):
        host = self.root / "hosts" / minion_id
        shutil.rmtree(host, ignore_errors=True)
        self._write(host, data)

    def clear(self, minion_id):
        shutil.rmtree(self.root / "hosts" / minion_id, ignore_errors=True)

    def _write(self, path, data):
        if isinstance(data, dict):
            path.mkdir(parents=True, exist_ok=True)
            for key, value in data.items():
                self._write(path / str(key), value)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(data if isinstance(data, str) else json.dumps(data))
