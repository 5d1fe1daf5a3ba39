"""Shared fixtures. Tests run offline on CPU: the Hub is switched off for the whole session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Set before any test imports huggingface_hub/transformers, so nothing can reach the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TEXTTUNE_DATA_DIR", REPO.parent / "shared" / "data"))
os.environ.setdefault("TEXTTUNE_DATA_DIR", str(SHARED_DATA))


@pytest.fixture
def shared_data() -> Path:
    """The prepared real datasets (../shared/data); tests that need them skip when it is absent."""
    if not (SHARED_DATA / "trec" / "train.parquet").is_file():
        pytest.skip(f"prepared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def run_cli(capsys):
    """Run the CLI in-process: returns (exit_code, stdout, stderr)."""
    from texttune.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run
