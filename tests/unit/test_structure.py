"""The package's shape, checked on its source: no import cycle (function-level imports included: an
import inside a function is still an arrow), and no run-directory file name spelled out outside
``runs.py``, its one owner."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import texttune.runs as runs

PACKAGE = Path(runs.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """texttune modules that ``path`` imports anywhere in it (``from a import b``: a.b when b is a module)."""
    out = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", getattr(block.test, "attr", None)) == "TYPE_CHECKING"
                   for n in ast.walk(block)}  # imports for annotations only: never run
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name.split(".")[0] == "texttune")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "texttune":
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                out.add(submodule if submodule in known else node.module)
    return {name for name in out if name in known} - {module_name(path)}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_not_even_through_imports_inside_functions():
    known = modules()
    graph = {name: imports_of(path, known) for name, path in known.items()}
    found = cycles(graph)
    detail = "\n".join(
        " <-> ".join(c) + "\n    " + "; ".join(f"{a} -> {b}" for a in c for b in sorted(graph[a]) if b in c)
        for c in found)
    assert not found, f"import cycles:\n{detail}"


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# File names (with an extension) and the checkpoints folder; "model" is too common a word to search for.
RUN_FILES = [value for name, value in vars(runs).items() if name.isupper() and isinstance(value, str)
             and (re.fullmatch(r"[a-z_]+\.[a-z]+", value) or value == "checkpoints")]


def test_run_directory_file_names_are_spelled_out_in_runs_py_only():
    assert {"config.yaml", "metrics.json", "metrics.jsonl", "checkpoints", "report.html"} <= set(RUN_FILES)
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "runs.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#")[0]
            for name in RUN_FILES:
                if re.search(rf"""["']{re.escape(name)}["']""", code):
                    offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {name!r}")
    assert not offenders, "run-directory file names outside runs.py:\n" + "\n".join(offenders)
