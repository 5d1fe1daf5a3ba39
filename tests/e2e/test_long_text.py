"""Long documents end to end (model.long_text, issue 19): the label evidence of each toy document
sits past ``model.max_length`` tokens, so only windows can see it."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TOY_ROWS

import texttune
from texttune.config import DataConfig
from texttune.models.long_text import LongTextConfig
from texttune.predict import evaluate_saved
from texttune.tasks.classify import load_config, run_experiment

FILLER = " ".join(["the story goes on and on about nothing much"] * 5)  # 45 words: more than max_length 32
POS, NEG = f"{FILLER} what a wonderful film , i loved it", f"{FILLER} i hated every minute of it"


@pytest.fixture(scope="module", autouse=True)
def _isolated(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TEXTTUNE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def long_docs(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "long.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("text", "label"), *((f"{FILLER} {text}", label) for text, label in TOY_ROWS)])
    return path


def settings(model_dir: Path, data: Path, out: Path, **extra) -> list[str]:
    items = {"model.path": model_dir, "model.pooling": "mean", "model.head.dropout": 0, "model.max_length": 32,
             "output_dir": out, "data.train_file": data, "data.validation_file": data, "data.test_file": data,
             "train.per_device_batch_size": 8, "train.lr": 1e-2, "train.warmup_ratio": 0, "train.num_threads": 1,
             "train.max_steps": 30, "train.eval_every_steps": 10, **extra}
    return [f"{key}={value}" for key, value in items.items()]


@pytest.fixture(scope="module")
def windowed(tiny_model_dir, long_docs, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    windows = {"model.long_text.mode": "windows", "model.long_text.stride": 8}
    return run_experiment(load_config(None, settings(tiny_model_dir, long_docs, out, **windows)), callbacks=[])


def test_windows_train_and_evaluate_per_document(windowed):
    metrics = windowed.metrics
    assert metrics["test"]["accuracy"] == 1.0 and metrics["validation"]["accuracy"] == 1.0
    assert metrics["tokenization"]["train"]["windows"] > len(TOY_ROWS)  # every document is several windows
    predictions = json.loads((windowed.run_dir / "test_predictions.json").read_text(encoding="utf-8"))
    assert len(predictions["rows"]) == len(predictions["predicted"]) == len(TOY_ROWS)  # one row per document
    assert sum(metrics["test"]["confusion_matrix"][0]) + sum(metrics["test"]["confusion_matrix"][1]) == len(TOY_ROWS)


def test_a_loaded_model_reads_long_texts_in_windows(windowed):
    predictor = texttune.load(windowed.run_dir, device="cpu")
    config = json.loads((windowed.run_dir / "model" / "config.json").read_text(encoding="utf-8"))
    assert config["texttune_long_text"] == {"mode": "windows", "stride": 8, "pool": "mean", "max_windows": None}
    assert [p["label"] for p in predictor.predict([POS, NEG])] == ["pos", "neg"]
    windows = predictor.logits([POS, NEG])
    predictor.long_text = None  # the same model, truncating: both texts are their first 32 tokens, the filler
    truncated = predictor.logits([POS, NEG])
    torch.testing.assert_close(truncated[0], truncated[1])
    assert not torch.allclose(windows, truncated) and not torch.allclose(windows[0], windows[1])
    predictor.long_text = LongTextConfig(mode="windows", stride=8, pool="max", max_windows=1)
    torch.testing.assert_close(predictor.logits([POS, NEG]), truncated)  # one window: the first, truncation's


def test_texttune_evaluate_scores_documents_in_windows(windowed, long_docs):
    metrics = evaluate_saved(windowed.run_dir, DataConfig(train_file=long_docs))
    assert metrics["accuracy"] == 1.0 and metrics["num_examples"] == len(TOY_ROWS)


def test_truncation_stays_the_default(tiny_model_dir, long_docs, tmp_path):
    result = run_experiment(load_config(None, settings(tiny_model_dir, long_docs, tmp_path, **{"train.max_steps": 2})),
                            callbacks=[])
    config = json.loads((result.run_dir / "model" / "config.json").read_text(encoding="utf-8"))
    assert "texttune_long_text" not in config and "windows" not in result.metrics["tokenization"]["train"]
    assert texttune.load(result.run_dir, device="cpu").long_text is None


def test_a_from_scratch_model_trains_on_windows(long_docs, tmp_path):
    items = [f"{k}={v}" for k, v in {
        "model.name": "cnn", "model.embedding_dim": 16, "model.num_filters": 8, "model.max_length": 24,
        "model.long_text.mode": "windows", "model.long_text.stride": 4, "model.long_text.pool": "max",
        "output_dir": tmp_path, "data.train_file": long_docs, "data.validation_file": long_docs,
        "data.test_file": long_docs, "train.max_steps": 4, "train.batch_tokens": 256, "train.num_threads": 1,
    }.items()]
    result = run_experiment(load_config(None, items), callbacks=[])
    predictions = json.loads((result.run_dir / "test_predictions.json").read_text(encoding="utf-8"))
    assert len(predictions["rows"]) == len(TOY_ROWS)
    assert texttune.load(result.run_dir, device="cpu").long_text.pool == "max"


@pytest.mark.skipif(os.environ.get("TEXTTUNE_SKIP_MULTIPROCESS") == "1", reason="no process launches asked")
def test_two_processes_share_documents_not_windows(long_docs, tmp_path):
    pytest.importorskip("torch.distributed.run", reason="torch without its distributed launcher")
    script = Path(sys.executable).parent / "texttune"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200"}
    items = ["model.name=bag_of_ngrams", "model.embedding_dim=8", "model.max_length=16",
             "model.long_text.mode=windows", "model.long_text.stride=4", f"data.train_file={long_docs}",
             f"data.validation_file={long_docs}", f"data.test_file={long_docs}", "train.max_steps=3",
             f"output_dir={tmp_path / 'runs'}", "train.num_threads=1", "train.per_device_batch_size=2"]
    proc = subprocess.run([str(script), "run", "--num-processes", "2", *(a for i in items for a in ("--set", i))],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["world_size"] == 2 and metrics["global_batch_size"] == 4
    predictions = json.loads((run_dir / "test_predictions.json").read_text(encoding="utf-8"))
    assert sorted(predictions["rows"]) == list(range(len(TOY_ROWS)))  # each document once, not per window
