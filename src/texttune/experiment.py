"""``texttune run``: one experiment from config to a complete run directory.

The phases have names and run in order: ``prepare_data`` → ``build`` → ``tokenize`` → ``fit`` →
``final_evaluation`` → ``save`` → ``report``. Everything a result needs to be trusted lands in the
run directory (see README, "The run directory").
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import yaml

from texttune.config import ExperimentBase, config_to_dict, load_config
from texttune.data.dataset import TextDataset
from texttune.data.tokenize import Encoded, encode_cached, frame_fingerprint
from texttune.errors import TexttuneError
from texttune.io import atomic_write_json, atomic_write_text

log = logging.getLogger("texttune")


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    model: Any = None
    tokenizer: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


def quiet_libraries() -> None:
    """Keep transformers' load reports and progress bars out of texttune's output."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")


# --------------------------------------------------------------------------- run directory


def create_run_dir(config: ExperimentBase) -> Path:
    """A new ``<output_dir>/<date>-<time>-<name>`` directory; an existing one is never reused."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    safe_name = "".join(c if c.isalnum() or c in "-_." else "-" for c in config.name)
    base = Path(config.output_dir) / f"{stamp}-{safe_name}"
    try:
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        for i in range(1000):
            candidate = base if i == 0 else base.with_name(f"{base.name}-{i}")
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                continue
    except OSError as err:
        raise TexttuneError(
            f"{config.output_dir}: cannot create the run directory ({err.strerror or err}); "
            "set output_dir to a writable folder"
        ) from None
    raise TexttuneError(f"{base}: too many runs with the same name in the same second")


def start_run(config) -> Path:
    """A new run directory with the start of its record (config, environment)."""
    run_dir = create_run_dir(config)
    write_record_start(run_dir, config)
    return run_dir


@contextmanager
def discarded_on_failure(run_dir: Path, keep: bool = False):
    """Set-up of a run: if it fails (bad data, bad model), no half-made run directory is left behind."""
    try:
        yield
    except BaseException:
        if not keep:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def write_record_start(run_dir: Path, config: ExperimentBase) -> None:
    from texttune.record import environment

    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config_to_dict(config), sort_keys=False))
    env = environment()
    env["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    env["cpu_threads"] = torch.get_num_threads()
    env["command"] = " ".join(sys.argv)
    env["started"] = datetime.now().isoformat(timespec="seconds")
    atomic_write_json(run_dir / "environment.json", env)


# --------------------------------------------------------------------------- phases


def prepare_data(config: ExperimentBase, run_dir: Path) -> TextDataset:
    from texttune.data.load import prepare_data as load_and_check

    ds, report, dropped = load_and_check(config.data)
    if not ds.has_labels:
        raise TexttuneError(f"dataset '{ds.name}' has no labels: texttune run trains classifiers")
    report.write_json(run_dir / "data_checks.json")
    caveats = report.caveats()
    if caveats:  # before training, so the user can stop and fix the data; also beside every leaderboard score
        log.warning("data checks: %d finding%s change what the scores on this data mean (policy warn; all "
                    "findings in %s):", len(caveats), "s" * (len(caveats) > 1), run_dir / "data_checks.json")
        for line in caveats:
            log.warning("  %s", line)
    splits = {}
    for name in ds.split_names():
        df = ds.splits[name]
        counts = df["label"].value_counts()
        splits[name] = {
            "rows": len(df), "provenance": ds.provenance.get(name, ""), "file": ds.files.get(name, ""),
            "fingerprint": frame_fingerprint(df), "dropped": dropped.get(name, {}).get("total", 0),
            "classes": {label: int(counts.get(i, 0)) for i, label in enumerate(ds.label_names or [])},
        }
    atomic_write_json(run_dir / "data.json", {
        "name": ds.name, "task": ds.task, "labels": ds.label_names, "notes": ds.notes, "caveats": caveats,
        "splits": splits,
        "fingerprint": frame_fingerprint_all(splits),
    })
    for split in ("train", "validation"):
        if split not in ds.splits or len(ds.splits[split]) == 0:
            raise TexttuneError(f"dataset '{ds.name}' has no {split} rows left after the data checks")
    return ds


def frame_fingerprint_all(splits: dict[str, dict[str, Any]]) -> str:
    import hashlib

    joined = "|".join(f"{k}:{v['fingerprint']}" for k, v in sorted(splits.items()))
    return hashlib.sha256(joined.encode()).hexdigest()[:20]


def build(config: ExperimentBase, ds: TextDataset):
    from texttune.models.registry import build_model
    from texttune.strategies import apply_strategy

    torch.manual_seed(config.seed)  # the head's initialisation depends on the seed only
    if config.init_from is not None:
        from texttune.models.transfer import build_from_run

        model, tokenizer = build_from_run(config.init_from, ds.label_names, config.model.max_length)
    else:
        model, tokenizer = build_model(config.model, ds.label_names, train_texts=ds.splits["train"]["text"])
    model = apply_strategy(model, config.strategy)
    if not any(p.requires_grad for p in model.head.parameters()):
        raise TexttuneError(f"strategy '{config.strategy.name}' froze the head: nothing would learn the labels")
    return model, tokenizer


def tokenize(ds: TextDataset, tokenizer, max_length: int) -> tuple[dict[str, Encoded], dict[str, Any]]:
    encoded, stats = {}, {}
    for split in ds.split_names():
        tic = time.perf_counter()
        encoded[split], cached = encode_cached(ds.splits[split], tokenizer, max_length)
        stats[split] = {"seconds": round(time.perf_counter() - tic, 3), "cached": cached,
                        "tokens": int(encoded[split].offsets[-1]),
                        "truncated": int((encoded[split].lengths >= max_length).sum())}
    return encoded, stats


def param_counts(model) -> dict[str, Any]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total, "trainable_pct": round(100.0 * trainable / max(total, 1), 4)}


def final_evaluation(trainer, encoded: dict[str, Encoded], ds: TextDataset, calibrate: bool) -> dict[str, Any]:
    """Validation (and its fitted temperature), then test, both on the restored best model."""
    from texttune.evaluation.calibration import fit_temperature
    from texttune.evaluation.evaluate import calibrated_from_logits, evaluate

    args = dict(label_names=ds.label_names, pad_id=trainer.pad_id, batch_size=trainer.cfg.eval_batch_size,
                accelerator=trainer.accelerator)
    out: dict[str, Any] = {}
    validation, logits = evaluate(trainer.model, encoded["validation"], keep_worst=10, collect_logits=calibrate, **args)
    validation["worst"] = _worst_with_text(validation["worst"], ds.splits["validation"])
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


def _worst_with_text(worst: list[dict[str, Any]], frame) -> list[dict[str, Any]]:
    out = []
    for item in worst:
        row = frame.loc[item["id"]]
        entry = {"row": int(item["id"]), "text": row["text"], "label": item["label_name"],
                 "predicted": item["predicted_name"], "confidence": item["confidence"]}
        if "text_pair" in frame.columns:
            entry["text_pair"] = row["text_pair"]
        out.append(entry)
    return out


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def save(model, tokenizer, run_dir: Path, temperature: float | None) -> float:
    """The model in Hugging Face format (safetensors + tokenizer + id2label; only the trained tensors
    when the frozen ones come back from a base, see models/saving.py); returns its size in MB."""
    from texttune.models.saving import save_classifier

    target = run_dir / "model"
    tmp = run_dir / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    # Not "temperature": transformers reads that name as a text-generation setting.
    model.config.texttune_temperature = temperature
    save_classifier(model, tokenizer, tmp)
    # A model/ already there is from a finish that crashed before metrics.json: this one replaces it.
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return round(sum(f.stat().st_size for f in target.rglob("*") if f.is_file()) / 2**20, 3)


def save_model_folder(model, tokenizer, run_dir: Path) -> Path:
    """``run_dir/model``: a Hugging Face folder (model + tokenizer), written aside and moved in whole."""
    tmp = run_dir / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, run_dir / "model")
    return run_dir / "model"


def report(run_dir: Path) -> None:
    from texttune.reports.html import render_report
    from texttune.reports.plots import plot_confusion_matrix, plot_learning_curves
    from texttune.reports.html import load_run

    run = load_run(run_dir)
    plot_learning_curves(run.records, run_dir / "learning_curves.png")
    split = "test" if "test" in run.metrics else "validation"
    labels = list(run.metrics[split]["per_class"])
    plot_confusion_matrix(run.metrics[split]["confusion_matrix"], labels, run_dir / "confusion_matrix.png")
    render_report(run_dir)


# --------------------------------------------------------------------------- the whole run


def run_experiment(
    config: ExperimentBase | None = None,
    *,
    resume: Path | None = None,
    callbacks: list[Any] | None = None,
) -> RunResult:
    """Train and evaluate one experiment; ``resume`` continues an interrupted run directory."""
    quiet_libraries()
    started = time.perf_counter()
    if resume is not None:
        run_dir, config = _open_for_resume(Path(resume))
    else:
        assert config is not None
        run_dir = start_run(config)
    log.info("%s run directory: %s", "resuming the" if resume is not None else "new", run_dir)
    try:
        return _train_and_record(config, run_dir, resume is not None, callbacks, started)
    except KeyboardInterrupt as interrupt:
        interrupt.run_dir = run_dir  # the CLI says how to continue (or that nothing was kept)
        raise


def _train_and_record(config: ExperimentBase, run_dir: Path, resuming: bool, callbacks: list[Any] | None,
                      started: float) -> RunResult:
    from texttune.models.saving import saves_trained_only
    from texttune.training.callbacks import ProgressCallback
    from texttune.training.loop import Trainer

    resume = run_dir if resuming else None
    with discarded_on_failure(run_dir, keep=resume is not None):  # a resumed run keeps its directory
        ds = prepare_data(config, run_dir)
        if resume is not None:
            _check_labels_match(run_dir, ds)
        atomic_write_json(run_dir / "labels.json", ds.label_names)
        model, tokenizer = build(config, ds)
        encoded, token_stats = tokenize(ds, tokenizer, config.model.max_length)
        trainer = Trainer(
            model, encoded["train"], encoded.get("validation"), config.train, run_dir=run_dir,
            pad_id=tokenizer.pad_token_id or 0, label_names=ds.label_names, seed=config.seed,
            head_lr=config.strategy.head_lr,
            callbacks=callbacks if callbacks is not None else [ProgressCallback()],
        )
    state = trainer.fit(resume=resume is not None)
    metrics = final_evaluation(trainer, encoded, ds, config.train.calibrate)
    test_logits = metrics.pop("_test_logits", None)
    if test_logits is not None:  # per-example outcomes: confidence intervals and paired tests (compare)
        atomic_write_json(run_dir / "test_predictions.json", {
            "rows": encoded["test"].rows.tolist(), "labels": encoded["test"].labels.tolist(),
            "predicted": test_logits.argmax(dim=-1).tolist()})
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    size_mb = save(unwrapped, tokenizer, run_dir, metrics.get("temperature"))
    metrics.update({
        "best": {"step": state.best_step, "metric": config.train.metric, "value": state.best_value},
        "steps": state.global_step, "epochs": round(state.epoch + state.batch_in_epoch / trainer.batches_per_epoch, 4),
        "stopped_early": state.stopped_early,
        "params": param_counts(unwrapped),
        "train_time_s": round(state.train_time_s, 3),
        "train_samples_per_s": round(state.samples_seen / max(state.train_time_s, 1e-9), 3),
        "wall_time_s": round(time.perf_counter() - started, 3),
        "peak_memory_mb": peak_memory_mb(),
        "checkpoint_size_mb": size_mb,
        "checkpoint": "trained tensors + base reference" if saves_trained_only(unwrapped) else "whole model",
        "tokenization": token_stats,
        "temperature": metrics.get("temperature"),
    })
    atomic_write_json(run_dir / "metrics.json", metrics)
    report(run_dir)
    if not config.train.keep_checkpoints:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return RunResult(run_dir, metrics, unwrapped, tokenizer)


def _open_for_resume(run_dir: Path) -> tuple[Path, ExperimentBase]:
    if not (run_dir / "config.yaml").is_file():
        raise TexttuneError(f"{run_dir}: not a texttune run directory (no config.yaml)")
    if (run_dir / "metrics.json").is_file():
        raise TexttuneError(f"{run_dir}: this run has finished (metrics.json exists); nothing to resume")
    from texttune.training.checkpoint import recover_training_state

    if recover_training_state(run_dir / "checkpoints" / "last") is None:
        raise TexttuneError(f"{run_dir}: no checkpoint to resume from (checkpoints/last is missing)")
    return run_dir, load_config(run_dir / "config.yaml")


def _check_labels_match(run_dir: Path, ds: TextDataset) -> None:
    import json

    path = run_dir / "labels.json"
    if not path.is_file():
        return
    saved = json.loads(path.read_text(encoding="utf-8"))
    if saved != ds.label_names:
        raise TexttuneError(
            f"{run_dir}: the checkpoint was trained with {len(saved)} labels {saved}, but the data now "
            f"has {len(ds.label_names or [])} labels {ds.label_names}; resume needs the same label set"
        )
