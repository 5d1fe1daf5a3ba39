"""Safe file reading and writing: bounded YAML, atomic replacement and never-overwrite paths."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from texttune.errors import ConfigError

# Bounds of what texttune reads as YAML (configs, comparison specs, --set values). A config is a few
# KiB; these stop pathological input (alias "billion laughs", deep nesting) before it costs time or
# memory: PyYAML shares an aliased node, so the expansion only happens later, when the data is merged,
# validated or printed -- it is measured here on the composed node graph, before anything is built.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_NODES = 100_000  # scalars + collections after expanding every alias
MAX_YAML_DEPTH = 50


class YAMLSyntaxError(ConfigError):
    """Text that is not YAML at all (``--set`` then takes it as a plain string); bounds stay errors."""


def load_yaml(text: str, where: str) -> Any:
    """Parse one YAML document with PyYAML's safe loader, refusing duplicate keys and input past the
    bounds above. Every error is a ``ConfigError`` naming ``where`` (a file, ``--set ...``) and the line."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{where}: {len(text):,} characters of YAML; a config holds at most {MAX_YAML_BYTES:,}")
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # refuses control characters here, before any parsing
        node = loader.get_single_node()
        if node is None:
            return None
        _check_yaml_node(node, where)
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise YAMLSyntaxError(f"{where}:{line} invalid YAML: {problem}") from None
    except RecursionError:  # PyYAML composes recursively: nesting deeper than Python's stack
        raise ConfigError(f"{where}: YAML nested more than {MAX_YAML_DEPTH} levels deep") from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_yaml_node(root: yaml.Node, where: str) -> None:
    sizes: dict[int, int] = {}  # id(node) -> nodes it expands to; aliases share nodes, so memoise

    def size(node: yaml.Node, depth: int) -> int:
        if depth > MAX_YAML_DEPTH:
            raise ConfigError(f"{where}: line {node.start_mark.line + 1}: YAML nested more than "
                              f"{MAX_YAML_DEPTH} levels deep")
        if id(node) in sizes:
            return sizes[id(node)]
        sizes[id(node)] = 1  # a recursive alias (&a [*a]) counts once instead of looping
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if key.value in seen:
                        raise ConfigError(f"{where}: line {key.start_mark.line + 1}: key '{key.value}' appears "
                                          f"twice in one mapping (first on line {seen[key.value]})")
                    seen[key.value] = key.start_mark.line + 1
                total += size(key, depth + 1) + size(value, depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item, depth + 1) for item in node.value)
        if total > MAX_YAML_NODES:
            raise ConfigError(f"{where}: line {node.start_mark.line + 1}: YAML expands to more than "
                              f"{MAX_YAML_NODES:,} values (aliases referring to aliases?)")
        sizes[id(node)] = total
        return total

    size(root, 0)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    A reader never sees a half-written file, and a crash leaves the old file intact.
    """
    return atomic_write_bytes(path, text.encode("utf-8"))


def current_umask() -> int:
    """The process's umask. Linux shows it in /proc/self/status; ``os.umask`` can only read it by setting
    it, and a file another thread creates in between would get mode 0666."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _default_mode() -> int:
    return 0o666 & ~current_umask()


def apply_umask(path: str | Path) -> Path:
    """Give a file, or a folder and everything in it, the mode a plain ``open``/``mkdir`` gives (0644 and
    0755 under umask 022). Writers that go through ``mkstemp``/``mkdtemp`` leave 0600/0700 -- safetensors
    0.8 writes every ``.safetensors`` file that way -- and a shared model would be unreadable to others."""
    path = Path(path)
    umask = current_umask()
    for item in [path, *(path.rglob("*") if path.is_dir() else ())]:
        if not item.is_symlink():
            os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~umask)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` atomically (temporary file in the same folder, fsync, ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, _default_mode())  # mkstemp's 0600 would outlive the rename
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def unique_path(path: str | Path) -> Path:
    """``path`` if it does not exist, else ``name-1.ext``, ``name-2.ext``, ...: nothing is overwritten."""
    path = Path(path)
    if not path.exists():
        return path
    for i in range(1, 10_000):
        candidate = path.with_name(f"{path.stem}-{i}{path.suffix}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(path)
