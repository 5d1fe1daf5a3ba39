"""``texttune run``: text classification -- its root config, its loop objective and its phases.

``run_task`` (runs.py) calls them in order: ``prepare`` (data and checks → model and strategy →
tokens) → the shared loop → ``finish`` (validation with its fitted temperature, then test, on the
best checkpoint; the model saved) → ``report``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, ValidationError, create_model
from torch import nn

import texttune.models  # noqa: F401  (registers every encoder: the model union is built from them)
import texttune.strategies  # noqa: F401  (registers every strategy)
from texttune import runs
from texttune.config import (ConfigError, DataConfig, Section, TrainConfig, format_validation_error, merge_below,
                             merge_sources, union_of)
from texttune.data.dataset import TextDataset
from texttune.data.tokenize import Encoded, collate, encode_cached, frame_fingerprint
from texttune.errors import TexttuneError
from texttune.io import atomic_write_json
from texttune.models.classic import is_classic
from texttune.models.long_text import LongTextConfig, document_logits, record_windows, windows_of
from texttune.models.registry import MODEL_CONFIGS
from texttune.strategies import STRATEGY_CONFIGS

log = logging.getLogger("texttune")

# --------------------------------------------------------------------------- the root config


class ExperimentBase(Section):
    """Fields every experiment has; model/strategy unions are added by ``experiment_class``."""

    kind: Literal["classify"] = Field("classify", description="What this config runs: a classifier.")
    name: str = Field("experiment", description="Run name, used in the run directory name.")
    seed: int = Field(42, description="Seed of model initialisation and data order.")
    output_dir: Path = Field(Path("runs"), description="Parent folder of run directories.")
    init_from: Path | None = Field(
        None,
        description="A previous run directory to start from (transfer): its encoder, tokenizer and pooling; the "
        "head too when the label sets match, else a new head. model.max_length still applies; the rest of "
        "model is ignored.",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)


# The member a union section uses when the config does not name one.
UNION_DEFAULTS = {"model": "pretrained", "strategy": "full"}


@functools.cache
def experiment_class() -> type[ExperimentBase]:
    """The root config model, with ``model``/``strategy`` unions over the registered classes."""
    fields: dict[str, Any] = {}
    for section, registry in (("model", MODEL_CONFIGS), ("strategy", STRATEGY_CONFIGS)):
        union = union_of(registry, UNION_DEFAULTS[section])
        if union is not None:
            fields[section] = union
    return create_model("ExperimentConfig", __base__=ExperimentBase, **fields)


def with_model_defaults(data: dict[str, Any], origins: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The training defaults of the config's model family (``train_defaults`` of its config class:
    a CNN trains at lr 2e-3, MiniLM at 5e-5) under every key the sources set, with their origin."""
    model = data.get("model")
    name = model.get("name", UNION_DEFAULTS["model"]) if isinstance(model, dict) else UNION_DEFAULTS["model"]
    if not isinstance(name, str) or name not in MODEL_CONFIGS.configs():
        return data, origins  # an unknown model: validation names it
    defaults = getattr(MODEL_CONFIGS.config_class(name), "train_defaults", {})
    if not defaults:
        return data, origins
    return merge_below(data, {"train": dict(defaults)}, origins, f"default for model {name}")


def validate_config(data: dict[str, Any], origins: dict[str, str] | None = None) -> ExperimentBase:
    cls = experiment_class()
    data, origins = with_model_defaults(dict(data), dict(origins or {}))
    for section, default in UNION_DEFAULTS.items():
        # `--set model.path=x` means "the default model, with this path".
        if isinstance(data.get(section), dict) and "name" not in data[section]:
            data[section] = {"name": default, **data[section]}
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, cls, origins)) from None


def resolve_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
) -> tuple[ExperimentBase, dict[str, str]]:
    """The validated config and where each dotted key's value came from (``config show``): defaults ←
    the model family's training defaults ← ``base`` ← file (with its ``extends``) ← ``--set``."""
    merged, origins = merge_sources(path, overrides, base)
    merged, origins = with_model_defaults(merged, origins)
    return validate_config(merged, origins), origins


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
) -> ExperimentBase:
    """Resolve defaults ← model family defaults ← ``base`` ← file (with its ``extends``) ← ``--set``
    overrides, then validate."""
    return resolve_config(path, overrides, base)[0]


# --------------------------------------------------------------------------- the loop's objective


def class_weight_tensor(cfg: TrainConfig, labels: np.ndarray, num_labels: int) -> torch.Tensor | None:
    if cfg.class_weights is None:
        return None
    if cfg.class_weights == "auto":
        counts = np.bincount(labels, minlength=num_labels).astype(np.float64)
        weights = len(labels) / (num_labels * np.maximum(counts, 1.0))  # inverse frequency, mean ≈ 1
        return torch.tensor(weights, dtype=torch.float32)
    if len(cfg.class_weights) != num_labels:
        raise TexttuneError(f"train.class_weights has {len(cfg.class_weights)} values for {num_labels} labels")
    return torch.tensor(cfg.class_weights, dtype=torch.float32)


class ClassificationObjective:
    """The loop's view of classification: padded batches, (weighted, smoothed) cross-entropy, and the
    classification metrics of ``evaluation.evaluate``."""

    def __init__(self, label_names: list[str], weights: torch.Tensor | None = None,
                 label_smoothing: float = 0.0, eval_batch_tokens: int | None = None,
                 window_pool: str = "mean") -> None:
        self.label_names = label_names
        self.window_pool = window_pool  # model.long_text.pool: a document's loss is on its pooled windows
        self.eval_batch_tokens = eval_batch_tokens  # train.eval_batch_tokens: batches by padded tokens
        self.loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=label_smoothing)

    def collate(self, data: Encoded, indices: np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
        return collate(data, indices, pad_id)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], accelerator) -> torch.Tensor:
        labels = batch.pop("labels")
        with accelerator.autocast():
            logits = document_logits(model, batch, self.window_pool)  # (B, C): one row per document
        if self.loss_fn.weight is not None and self.loss_fn.weight.device != logits.device:
            self.loss_fn.to(logits.device)
        return self.loss_fn(logits.float(), labels)

    def evaluate(self, model: nn.Module, data: Encoded, pad_id: int, batch_size: int, accelerator) -> dict[str, Any]:
        from texttune.evaluation.evaluate import evaluate

        metrics, _ = evaluate(model, data, self.label_names, pad_id, batch_size, accelerator,
                              batch_tokens=self.eval_batch_tokens, window_pool=self.window_pool)
        return metrics


def pos_weight_tensor(cfg: TrainConfig, targets: np.ndarray) -> torch.Tensor | None:
    """Multi-label ``train.class_weights`` as BCE's ``pos_weight``: auto is negatives / positives per
    label in train (a label in 1 row of 10 weighs its positives 9×); a list gives them directly."""
    if cfg.class_weights is None:
        return None
    num_labels = targets.shape[1]
    if cfg.class_weights == "auto":
        positives = targets.sum(axis=0).astype(np.float64)
        weights = (len(targets) - positives) / np.maximum(positives, 1.0)
        return torch.tensor(np.maximum(weights, 1e-3), dtype=torch.float32)  # a label in every row: ~0, not 0
    if len(cfg.class_weights) != num_labels:
        raise TexttuneError(f"train.class_weights has {len(cfg.class_weights)} values for {num_labels} labels")
    return torch.tensor(cfg.class_weights, dtype=torch.float32)


class MultiLabelObjective(ClassificationObjective):
    """Multi-label classification: one sigmoid per label, binary cross-entropy on the (B, C) 0/1
    targets (``pos_weight`` from ``train.class_weights``), metrics of ``evaluation.multilabel`` at 0.5.
    Label smoothing does not apply (it is a softmax notion)."""

    def __init__(self, label_names: list[str], pos_weight: torch.Tensor | None = None,
                 eval_batch_tokens: int | None = None) -> None:
        self.label_names = label_names
        self.eval_batch_tokens = eval_batch_tokens
        self.loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], accelerator) -> torch.Tensor:
        targets = batch.pop("labels")  # (B, C) float 0/1
        with accelerator.autocast():
            logits = model(**batch).logits  # (B, C)
        if self.loss_fn.pos_weight is not None and self.loss_fn.pos_weight.device != logits.device:
            self.loss_fn.to(logits.device)
        return self.loss_fn(logits.float(), targets.float())

    def evaluate(self, model: nn.Module, data: Encoded, pad_id: int, batch_size: int, accelerator) -> dict[str, Any]:
        from texttune.evaluation.multilabel import collect_scores, multilabel_metrics

        scores = collect_scores(model, data, pad_id, batch_size, accelerator, self.eval_batch_tokens)
        metrics = multilabel_metrics(data.labels, scores, self.label_names)
        metrics.pop("per_class")  # the per-eval record stays one line of scores
        return metrics


def objective_for(config: ExperimentBase, ds: TextDataset, train: Encoded) -> ClassificationObjective:
    """The loop's objective: softmax cross-entropy, or sigmoid BCE for ``data.multi_label``."""
    if ds.multi_label:
        return MultiLabelObjective(ds.label_names, pos_weight_tensor(config.train, train.labels),
                                   config.train.eval_batch_tokens)
    weights = class_weight_tensor(config.train, train.labels, len(ds.label_names))
    return ClassificationObjective(ds.label_names, weights, config.train.label_smoothing,
                                   config.train.eval_batch_tokens, _pool_of(windows_of(config.model)))


# --------------------------------------------------------------------------- phases


def say(message: str) -> None:
    """What the run is doing before training starts: loading a model and checking the data take seconds
    each. Through texttune's log, which the CLI prints; under N processes the main one speaks."""
    if runs.is_main_process():
        log.info(message)


def prepare_data(config: ExperimentBase, run_dir: Path) -> TextDataset:
    from texttune.data.load import cv_record, prepare_data as load_and_check

    ds, report, dropped = load_and_check(config.data, announce=say)
    if not ds.has_labels:
        raise TexttuneError(f"dataset '{ds.name}' has no labels: texttune run trains classifiers")
    if runs.is_main_process():  # the others only read the data (N processes: see runs.py)
        _write_data_record(ds, report, dropped, run_dir, cv_record(config.data))
    for split in ("train", "validation"):
        if split not in ds.splits or len(ds.splits[split]) == 0:
            raise TexttuneError(f"dataset '{ds.name}' has no {split} rows left after the data checks")
    return ds


def _write_data_record(ds: TextDataset, report, dropped: dict[str, Any], run_dir: Path,
                       cv: dict[str, Any] | None = None) -> None:
    """data_checks.json, data.json (with the fold, under data.cv), and the caveats shown before training."""
    report.write_json(run_dir / runs.DATA_CHECKS)
    caveats = report.caveats()
    if caveats:  # before training, so the user can stop and fix the data; also beside every leaderboard score
        log.warning("data checks: %d finding%s change what the scores on this data mean (policy warn; all "
                    "findings in %s):", len(caveats), "s" * (len(caveats) > 1), run_dir / runs.DATA_CHECKS)
        for line in caveats:
            log.warning("  %s", line)
    splits = {}
    for name in ds.split_names():
        df = ds.splits[name]
        counts = df["label"].value_counts()
        if ds.multi_label:  # rows holding each label
            counts = pd.Series([i for labels in df["label_set"] for i in labels], dtype="int64").value_counts()
        splits[name] = {
            "rows": len(df), "provenance": ds.provenance.get(name, ""), "file": ds.files.get(name, ""),
            "fingerprint": frame_fingerprint(df), "dropped": dropped.get(name, {}).get("total", 0),
            "classes": {label: int(counts.get(i, 0)) for i, label in enumerate(ds.label_names or [])},
        }
    atomic_write_json(run_dir / runs.DATA, {
        "name": ds.name, "task": ds.task, "multi_label": ds.multi_label, "labels": ds.label_names, "notes": ds.notes, "caveats": caveats,
        "splits": splits, "fingerprint": frame_fingerprint_all(splits), **({"cv": cv} if cv else {}),
    })


def frame_fingerprint_all(splits: dict[str, dict[str, Any]]) -> str:
    joined = "|".join(f"{k}:{v['fingerprint']}" for k, v in sorted(splits.items()))
    return hashlib.sha256(joined.encode()).hexdigest()[:20]


def build(config: ExperimentBase, ds: TextDataset):
    from texttune.models.registry import build_model
    from texttune.strategies import apply_strategy

    torch.manual_seed(config.seed)  # the head's initialisation depends on the seed only
    say(_building(config, len(ds.splits["train"])))
    if config.init_from is not None:
        from texttune.models.transfer import build_from_run

        model, tokenizer = build_from_run(config.init_from, runs.model_dir_of(config.init_from), ds.label_names,
                                          config.model.max_length)
    else:
        model, tokenizer = build_model(config.model, ds.label_names, train_texts=ds.splits["train"]["text"])
    record_windows(model.config, windows_of(config.model))  # a loaded model reads long texts as trained
    model = apply_strategy(model, config.strategy)
    if not any(p.requires_grad for p in model.head.parameters()):
        raise TexttuneError(f"strategy '{config.strategy.name}' froze the head: nothing would learn the labels")
    return model, tokenizer


def _building(config: ExperimentBase, train_rows: int) -> str:
    model = config.model
    if config.init_from is not None:
        what = f"loading model from {config.init_from}"
    elif model.name == "pretrained":
        what = f"loading model {model.path}"
    else:  # from scratch (any family: only some build a vocabulary or read GloVe)
        vocab = f", vocabulary from {train_rows:,} training texts" if getattr(model, "tokenizer", None) == "word" else ""
        what = f"building model {model.name}{vocab}{', GloVe vectors' if getattr(model, 'glove', False) else ''}"
    strategy = f" (strategy {config.strategy.name})" if config.strategy.name != "full" else ""
    return f"{what}{strategy} ..."


def tokenize(ds: TextDataset, tokenizer, max_length: int,
             long_text: LongTextConfig | None = None) -> tuple[dict[str, Encoded], dict[str, Any]]:
    """Every split's token ids; with ``long_text`` (windows) each text in overlapping windows."""
    import time

    rows = sum(len(ds.splits[split]) for split in ds.split_names())
    windows = f", windows of stride {long_text.stride}" if long_text is not None else ""
    say(f"tokenizing {rows:,} texts (max_length {max_length}{windows}) ...")
    window_args = {"stride": long_text.stride, "max_windows": long_text.max_windows} if long_text else {}
    encoded, stats = {}, {}
    for split in ds.split_names():
        tic = time.perf_counter()
        encoded[split], cached = encode_cached(ds.splits[split], tokenizer, max_length, num_labels=ds.num_labels,
                                               **window_args)
        stats[split] = {"seconds": round(time.perf_counter() - tic, 3), "cached": cached,
                        "tokens": int(encoded[split].offsets[-1]),
                        "truncated": int((encoded[split].lengths >= max_length).sum())}
        if long_text is not None:  # "truncated" then counts documents longer than one window
            stats[split]["windows"] = int(encoded[split].windows[-1])
    return encoded, stats


def final_evaluation(trainer, encoded: dict[str, Encoded], ds: TextDataset, calibrate: bool,
                     window_pool: str = "mean") -> dict[str, Any]:
    """Validation (and its fitted temperature), then test, both on the restored best model; per
    document (``window_pool`` pools a windowed document's logits)."""
    from texttune.evaluation.calibration import fit_temperature
    from texttune.evaluation.evaluate import calibrated_from_logits, evaluate, worst_with_text

    args = dict(label_names=ds.label_names, pad_id=trainer.pad_id, batch_size=trainer.cfg.eval_batch_size,
                batch_tokens=trainer.cfg.eval_batch_tokens, accelerator=trainer.accelerator,
                window_pool=window_pool)
    out: dict[str, Any] = {}
    validation, logits = evaluate(trainer.model, encoded["validation"], keep_worst=10, collect_logits=calibrate, **args)
    validation["worst"] = worst_with_text(validation["worst"], ds.splits["validation"])
    temperature = None
    if calibrate and logits is not None:
        labels = encoded["validation"].labels
        temperature = fit_temperature(logits, torch.tensor(labels))
        validation["calibrated"] = calibrated_from_logits(logits, labels, ds.label_names, temperature)
    out["validation"] = validation
    if "test" in encoded and len(encoded["test"]):
        test, logits = evaluate(trainer.model, encoded["test"], temperature=temperature, collect_logits=True, **args)
        test.pop("worst", None)
        out["test"] = test
        out["_test_logits"] = logits
    out["temperature"] = temperature
    return out


def save(model, tokenizer, run_dir: Path, temperature: float | None,
         thresholds: dict[str, float] | None = None) -> float:
    """The model in Hugging Face format (safetensors + tokenizer + id2label; only the trained tensors
    when the frozen ones come back from a base, see models/saving.py); returns its size in MB.
    A multi-label model carries ``problem_type`` (so a stock *ForSequenceClassification export trains
    with BCE) and its fitted per-label thresholds (predict applies them)."""
    from texttune.models.saving import save_classifier

    # Not "temperature": transformers reads that name as a text-generation setting.
    model.config.texttune_temperature = temperature
    if thresholds is not None:
        model.config.problem_type = "multi_label_classification"
        model.config.texttune_thresholds = thresholds
    target = runs.save_model_folder(run_dir, lambda folder: save_classifier(model, tokenizer, folder))
    return runs.folder_size_mb(target)


def report(run_dir: Path) -> None:
    from texttune.reports.html import load_run, render_report
    from texttune.reports.plots import plot_confusion_matrix, plot_learning_curves

    run = load_run(run_dir)
    plot_learning_curves(run.records, run_dir / runs.LEARNING_CURVES)
    split = "test" if "test" in run.metrics else "validation"
    labels = list(run.metrics[split]["per_class"])
    if "confusion_matrix" in run.metrics[split]:  # multi-label runs have none (one yes/no per label)
        plot_confusion_matrix(run.metrics[split]["confusion_matrix"], labels, run_dir / runs.CONFUSION_MATRIX)
    render_report(run_dir)


def check_classic(config: ExperimentBase) -> None:
    """What a closed-form baseline cannot take: a strategy (nothing is fine-tuned) or a source run."""
    if config.strategy.name != "full":
        raise TexttuneError(f"strategy.name {config.strategy.name}: model.name {config.model.name} is a classic "
                            "baseline fitted in closed form; strategies apply to neural models only")
    if config.init_from is not None:
        raise TexttuneError(f"init_from: model.name {config.model.name} is a classic baseline fitted from "
                            "scratch; it cannot start from a previous run")
    if config.data.multi_label:
        raise TexttuneError(f"data.multi_label: model.name {config.model.name} is a single-label classic baseline; "
                            "train a neural model (e.g. model.name=cnn or pretrained) for label sets")


def _pool_of(long_text: LongTextConfig | None) -> str:
    return long_text.pool if long_text is not None else "mean"


def _check_labels_match(run_dir: Path, ds: TextDataset) -> None:
    path = run_dir / runs.LABELS
    if not path.is_file():
        return
    saved = runs.read_json(run_dir, runs.LABELS)
    if saved != ds.label_names:
        raise TexttuneError(
            f"{run_dir}: the checkpoint was trained with {len(saved)} labels {saved}, but the data now "
            f"has {len(ds.label_names or [])} labels {ds.label_names}; resume needs the same label set"
        )


# --------------------------------------------------------------------------- the task


class Classify:
    """Classification as a ``runs.Task``."""

    kind = "classify"
    command = "run"
    data_parallel = True  # runs under torchrun with N processes (runs.run_task)

    def load_config(self, path: Path | None, overrides: list[str]) -> ExperimentBase:
        return load_config(path, overrides)

    def prepare(self, config: ExperimentBase, run_dir: Path, resuming: bool) -> runs.Prepared:
        ds = prepare_data(config, run_dir)
        if resuming:
            _check_labels_match(run_dir, ds)
        if runs.is_main_process():
            atomic_write_json(run_dir / runs.LABELS, ds.label_names)
        if is_classic(config.model):  # fitted in closed form by fit_closed_form: no tokens, no loop
            check_classic(config)
            from texttune.tasks.classic import build_closed_form

            model = build_closed_form(config.model, ds.label_names)
            return runs.Prepared(model, None, None, None, None, extras={"ds": ds, "tokenization": None})
        model, tokenizer = build(config, ds)
        long_text = windows_of(config.model)
        if long_text is not None and ds.multi_label:
            raise TexttuneError("model.long_text.mode windows: multi-label data (data.multi_label) is not "
                                "supported with windows yet; use model.long_text.mode truncate")
        encoded, token_stats = tokenize(ds, tokenizer, config.model.max_length, long_text)
        objective = objective_for(config, ds, encoded["train"])
        return runs.Prepared(model, tokenizer, encoded["train"], encoded.get("validation"), objective,
                             pad_id=tokenizer.pad_token_id or 0, head_lr=config.strategy.head_lr,
                             extras={"ds": ds, "encoded": encoded, "tokenization": token_stats})

    def before_fit(self, config, prepared: runs.Prepared, trainer) -> None:
        return None

    def fit_closed_form(self, config: ExperimentBase, prepared: runs.Prepared, run_dir: Path) -> dict[str, Any]:
        """A classic baseline: scikit-learn fits it, then it is evaluated and saved like any model."""
        from texttune.tasks.classic import fit_classic

        metrics = fit_classic(config, prepared, run_dir, say)
        prepared.extras.pop("ds")  # the result keeps no data
        return metrics

    def finish(self, config: ExperimentBase, prepared: runs.Prepared, trainer, run_dir: Path) -> dict[str, Any]:
        from texttune.models.saving import saves_trained_only

        ds, encoded = prepared.extras["ds"], prepared.extras["encoded"]
        if ds.multi_label:
            return self._finish_multilabel(prepared, trainer, run_dir)
        metrics = final_evaluation(trainer, encoded, ds, config.train.calibrate,
                                   _pool_of(windows_of(config.model)))
        test_logits = metrics.pop("_test_logits", None)
        model = trainer.accelerator.unwrap_model(trainer.model)
        if trainer.accelerator.is_main_process:
            if test_logits is not None:  # per-example outcomes: confidence intervals and paired tests (compare)
                atomic_write_json(run_dir / runs.TEST_PREDICTIONS, {
                    "rows": encoded["test"].rows.tolist(), "labels": encoded["test"].labels.tolist(),
                    "predicted": test_logits.argmax(dim=-1).tolist()})
            metrics["checkpoint_size_mb"] = save(model, prepared.tokenizer, run_dir, metrics.get("temperature"))
        metrics["checkpoint"] = "trained tensors + base reference" if saves_trained_only(model) else "whole model"
        metrics["tokenization"] = prepared.extras["tokenization"]
        prepared.extras.pop("ds"), prepared.extras.pop("encoded")  # the result keeps no data
        return metrics

    def _finish_multilabel(self, prepared: runs.Prepared, trainer, run_dir: Path) -> dict[str, Any]:
        from texttune.models.saving import saves_trained_only

        ds, encoded = prepared.extras.pop("ds"), prepared.extras.pop("encoded")  # the result keeps no data
        metrics, test_scores = final_evaluation_multilabel(trainer, encoded, ds)
        model = trainer.accelerator.unwrap_model(trainer.model)
        if trainer.accelerator.is_main_process:
            if test_scores is not None:
                write_multilabel_predictions(run_dir, encoded["test"], test_scores, ds.label_names,
                                             metrics["validation"]["thresholds"])
            metrics["checkpoint_size_mb"] = save(model, prepared.tokenizer, run_dir, None,
                                                 metrics["validation"]["thresholds"])
        metrics["checkpoint"] = "trained tensors + base reference" if saves_trained_only(model) else "whole model"
        metrics["tokenization"] = prepared.extras["tokenization"]
        return metrics

    def report(self, run_dir: Path) -> None:
        report(run_dir)


def final_evaluation_multilabel(trainer, encoded: dict[str, Encoded], ds: TextDataset):
    """Validation scores → per-label thresholds (max F1 each), then validation and test metrics at 0.5
    and at those thresholds, on the restored best model. Temperature scaling is skipped: the fitted
    thresholds are the calibration a multi-label decision needs. (-> metrics, test scores or None)"""
    from texttune.evaluation.multilabel import collect_scores, fit_thresholds, multilabel_metrics

    args = dict(pad_id=trainer.pad_id, batch_size=trainer.cfg.eval_batch_size, accelerator=trainer.accelerator,
                batch_tokens=trainer.cfg.eval_batch_tokens)
    scores = collect_scores(trainer.model, encoded["validation"], **args)
    thresholds = fit_thresholds(encoded["validation"].labels, scores)
    out: dict[str, Any] = {"temperature": None, "validation": multilabel_metrics(
        encoded["validation"].labels, scores, ds.label_names, thresholds)}
    test_scores = None
    if "test" in encoded and len(encoded["test"]):
        test_scores = collect_scores(trainer.model, encoded["test"], **args)
        out["test"] = multilabel_metrics(encoded["test"].labels, test_scores, ds.label_names, thresholds)
    out["thresholds"] = out["validation"]["thresholds"]
    return out, test_scores


def write_multilabel_predictions(run_dir: Path, test: Encoded, scores: np.ndarray, label_names: list[str],
                                 thresholds: dict[str, float]) -> None:
    """test_predictions.json of a multi-label run: per row its label set, the predicted set at the
    fitted thresholds and the scores; ``correct`` (exact set match) is what paired tests compare."""
    from texttune.evaluation.multilabel import predicted_sets

    cut = np.asarray([thresholds[name] for name in label_names])
    labels = [np.flatnonzero(row > 0.5).tolist() for row in test.labels]
    predicted = predicted_sets(scores, cut)
    atomic_write_json(run_dir / runs.TEST_PREDICTIONS, {
        "multi_label": True, "label_names": label_names, "rows": test.rows.tolist(), "labels": labels,
        "predicted": predicted, "scores": np.round(scores, 6).tolist(),
        "correct": [a == b for a, b in zip(labels, predicted)]})


CLASSIFY = runs.register_task(Classify())


def run_experiment(config: ExperimentBase | None = None, *, resume: Path | None = None,
                   callbacks: list[Any] | None = None) -> runs.RunResult:
    """Train and evaluate one experiment; ``resume`` continues an interrupted run directory."""
    return runs.run_task(CLASSIFY, config, resume=resume, callbacks=callbacks)
