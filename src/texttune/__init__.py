"""texttune: train, adapt and compare text classifiers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from texttune.version import __version__  # noqa: F401


def load(path: str | Path, device: str | None = None, backend: str | None = None) -> Any:
    """Load a trained run (``RUN_DIR`` or ``RUN_DIR/model``) or an export: ``texttune.load(d).predict(["..."])``;
    ``backend``: torch, onnx, or None (onnx for an ONNX export folder, torch otherwise)."""
    from texttune.predict import load as _load

    return _load(path, device, backend)


def run(config: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), **kwargs: Any) -> Any:
    """Train and evaluate one experiment from a config file (+ ``--set``-style overrides)."""
    from texttune.tasks.classify import load_config
    from texttune.tasks.classify import run_experiment

    return run_experiment(load_config(config, list(overrides)), **kwargs)


def detect_language(texts: list[str] | str, top_k: int = 1) -> list[list[dict[str, Any]]]:
    """Languages of texts, offline: ``texttune.detect_language(["Bonjour"])`` → ``[[{"lang": "fr", ...}]]``."""
    from texttune.language import detect_language as _detect

    return _detect(texts, top_k)


def compare(spec: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Run (or resume) a comparison spec; returns (comparison directory, leaderboard dict)."""
    from texttune.tasks.compare import run_comparison

    return run_comparison(spec, overrides=overrides)
