"""The closed-form phase of a classification run: a classic baseline (``models/classic.py``) is fitted
by scikit-learn instead of the loop, then evaluated, recorded and saved like any other model.

The run lifecycle is the same (``runs.run_task``: data checks, ``data.json``, ``metrics.json``,
``test_predictions.json``, the model folder, the report); only "fit" differs, so a baseline's row in a
leaderboard is produced and read exactly as a network's. Validation is not used for fitting (C comes
from cross-validation on train); it fits the temperature, as for every run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from texttune import runs
from texttune.errors import TexttuneError
from texttune.io import atomic_write_json, atomic_write_text


def _columns(frame) -> tuple[list[str], list[str] | None]:
    pairs = frame["text_pair"].astype(str).tolist() if "text_pair" in frame.columns else None
    return frame["text"].astype(str).tolist(), pairs


def _logits(model, frame) -> torch.Tensor:
    texts, pairs = _columns(frame)
    return torch.from_numpy(model.logits(texts, pairs))


def build_closed_form(model_cfg, label_names: list[str]):
    """The unfitted closed-form model of a classic family (scikit-learn is imported only now). A family
    with its own model class (setfit, ``models/setfit.py``) registers a builder in MODEL_BUILDERS."""
    from texttune.models.registry import MODEL_BUILDERS

    if model_cfg.name in MODEL_BUILDERS:
        model, _ = MODEL_BUILDERS.get(model_cfg.name)(model_cfg, label_names)
        return model
    from texttune.models.classic_model import ClassicModel

    return ClassicModel(model_cfg, label_names)


def fit_classic(config, prepared: runs.Prepared, run_dir: Path, say) -> dict[str, Any]:
    """Fit, evaluate (validation: temperature; test), save; returns the run's metrics."""
    from texttune.evaluation.calibration import fit_temperature
    from texttune.evaluation.evaluate import metrics_of_logits, worst_with_text

    if runs.num_processes() > 1:
        raise TexttuneError(f"model.name {config.model.name}: a classic baseline fits in one process; "
                            "run it without torchrun / --num-processes")
    model, ds = prepared.model, prepared.extras["ds"]
    train = ds.splits["train"]
    texts, pairs = _columns(train)
    say(model.describe_fit(len(texts)))
    tic = time.perf_counter()
    model.fit(texts, train["label"].to_numpy(), pairs, seed=config.seed)
    fit_time = time.perf_counter() - tic
    names = ds.label_names
    out: dict[str, Any] = {}
    frame = ds.splits["validation"]
    logits = _logits(model, frame)
    labels = frame["label"].to_numpy()
    temperature = fit_temperature(logits, torch.tensor(labels)) if config.train.calibrate else None
    validation = metrics_of_logits(logits, labels, names, frame.index.to_numpy(), keep_worst=10,
                                   temperature=temperature)
    validation["worst"] = worst_with_text(validation["worst"], frame)
    out["validation"] = validation
    if "test" in ds.splits and len(ds.splits["test"]):
        frame = ds.splits["test"]
        logits = _logits(model, frame)
        test = metrics_of_logits(logits, frame["label"].to_numpy(), names, frame.index.to_numpy(),
                                 temperature=temperature)
        test.pop("worst", None)
        out["test"] = test
        atomic_write_json(run_dir / runs.TEST_PREDICTIONS, {
            "rows": frame.index.to_numpy().tolist(), "labels": frame["label"].tolist(),
            "predicted": logits.argmax(dim=-1).tolist()})
    out["temperature"] = temperature
    model.temperature = temperature
    target = runs.save_model_folder(run_dir, model.save)
    coefficients = model.parameter_count()
    out.update({
        "fit": model.info, "checkpoint_size_mb": runs.folder_size_mb(target), "checkpoint": "whole model",
        "params": {"trainable": coefficients, "total": coefficients, "trainable_pct": 100.0},
        "best": None, "steps": 0, "epochs": None, "stopped_early": False, "stop_reason": None,
        "world_size": 1, "global_batch_size": None,
        "train_time_s": round(fit_time, 3),
        "train_samples_per_s": round(len(texts) / max(fit_time, 1e-9), 3),
    })
    # One evaluation record, as the loop writes them: the report and leaderboard curves read it.
    record = {"type": "eval", "split": "validation", "step": 0, "epoch": None,
              **{k: v for k, v in validation.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}}
    atomic_write_text(run_dir / runs.METRICS_LOG, json.dumps(record) + "\n")
    return out
