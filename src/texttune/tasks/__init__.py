"""One module per command: its root config (with a ``kind``), its task and its phases.

``classify`` (``texttune run``), ``mlm`` (``texttune pretrain``) and ``sft`` (``texttune sft``) are
kinds of run: each registers a ``runs.Task`` that ``runs.run_task`` drives. ``compare`` runs a matrix
of classification runs; ``tune`` searches hyper-parameters, each trial a classification run.
Importing this package registers every kind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from texttune.config import ConfigError, merge_sources
from texttune.tasks import classify, compare, mlm, sft, tune

# Every kind of config file and the loader that validates it.
LOADERS = {
    "classify": lambda path: classify.load_config(path),
    "mlm": lambda path: mlm.load_pretrain_config(path, []),
    "sft": lambda path: sft.load_sft_config(path, []),
    "compare": lambda path: compare.load_checked_spec(Path(path)),
    "tune": lambda path: tune.load_spec(Path(path)),
}


def kind_of(path: str | Path) -> str:
    """The ``kind`` a config file declares (in it or in a file it extends); classify when none does."""
    merged, _ = merge_sources(path)
    kind = merged.get("kind", "classify")
    if kind not in LOADERS:
        raise ConfigError(f"{path}: kind: unknown kind {kind!r}; expected one of {', '.join(LOADERS)}")
    return kind


def load_any(path: str | Path) -> Any:
    """A config file of any kind, validated by its own loader."""
    return LOADERS[kind_of(path)](path)
