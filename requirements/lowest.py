"""Print a pip constraints file pinning every direct dependency of texttune (the required ones and
the ``dev`` extra) to the lowest release ``pyproject.toml`` allows, for ``make test-oldest``.

Only the direct dependencies are held at their floor (what uv calls ``lowest-direct``): their own
dependencies resolve as pip chooses, as they would for a user who has the oldest releases we claim.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

FLOOR = re.compile(r"^\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*(?:[^;]*?)>=\s*([0-9][^,;\s]*)")


def floors(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    pins = []
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        match = FLOOR.match(requirement)
        if match is None:
            sys.exit(f"{pyproject}: {requirement!r} has no lower bound (>=): give it one")
        pins.append(f"{match[1]}=={match[2]}")
    return pins


if __name__ == "__main__":
    print("\n".join(floors(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml"))))
