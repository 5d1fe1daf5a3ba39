"""What a result is recorded with: library versions, git commit, device."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

from texttune import __version__

LIBRARIES = ("torch", "transformers", "tokenizers", "accelerate", "peft", "pydantic", "pyarrow", "scikit-learn")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def git_commit(path: Path | None = None) -> str | None:
    """The commit of the source tree texttune runs from (with '+dirty' when it has changes)."""
    where = path or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def environment() -> dict[str, str]:
    info = {"texttune": __version__, "python": platform.python_version()}
    info.update({name: _version(name) for name in LIBRARIES})
    info["platform"] = platform.platform()
    info["git_commit"] = git_commit() or "unknown"
    return info
