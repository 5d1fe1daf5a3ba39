"""The run directory and the one lifecycle every kind of run goes through.

A run directory (``<output_dir>/<date>-<time>-<name>/``, never reused) is named and read here only:
the file names below are its layout, ``find_runs`` / ``describe_run`` / ``read_run_config`` read any
kind of run, and ``run_task`` is the lifecycle of every command that trains -- classification,
masked-LM pre-training, instruction tuning, and each cell of a comparison:

    start (or open for --resume) → prepare (data, model; inside a discard-on-failure guard)
    → before_fit → fit (the shared loop) → finish (evaluate, save) → the common metrics → metrics.json
    → report → clean up the checkpoints

A task supplies the steps in between (``Task``); this module owns the order, the record and the
clean-up, so every kind can be resumed, writes the same record files and gets a report.

Under N processes (``torchrun --nproc_per_node N -m texttune.cli run ...``) every process goes
through the lifecycle; the main process alone creates and writes the run directory and tells the
others its path, and the rest only read it (``is_main_process``).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import torch
import yaml

from texttune.version import __version__
from texttune.config import config_to_dict, read_yaml
from texttune.errors import TexttuneError
from texttune.io import apply_umask, atomic_write_json, atomic_write_text
from texttune.registry import Registry
from texttune.training.checkpoint import LAST, has_training_state, recover_training_state

log = logging.getLogger("texttune")

# --------------------------------------------------------------------------- the layout

CONFIG = "config.yaml"  # the resolved config, with its ``kind``
ENVIRONMENT = "environment.json"  # versions, git commit, device, command, start time
DATA = "data.json"  # splits, how each was formed, fingerprints, caveats
DATA_CHECKS = "data_checks.json"
LABELS = "labels.json"
METRICS_LOG = "metrics.jsonl"  # one record per log step and per evaluation
METRICS = "metrics.json"  # the final metrics: its presence means "finished"
METRICS_BEFORE = "metrics_before.json"  # the model evaluated before training (pre-training, SFT)
TEST_PREDICTIONS = "test_predictions.json"
MODEL = "model"  # the Hugging Face folder
CHECKPOINTS = "checkpoints"
REPORT = "report.html"
LEARNING_CURVES = "learning_curves.png"
CONFUSION_MATRIX = "confusion_matrix.png"
RELIABILITY = "reliability.png"
TRACKING = "tracking.json"  # where train.report_to's trackers log this run (written only with trackers)
TENSORBOARD = "tensorboard"  # TensorBoard's event files, unless train.tracking_dir moves them
# What a tracker that keeps files (MLflow) receives at the end, those of them a run has. Never
# environment.json: a folder with it and config.yaml reads as a run directory (find_runs).
TRACKED_FILES = (CONFIG, METRICS, REPORT, LEARNING_CURVES, CONFUSION_MATRIX, RELIABILITY)

KIND_DEFAULT = "classify"  # runs recorded before configs carried a kind were classification runs


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    model: Any = None
    tokenizer: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- the environment


def quiet_libraries() -> None:
    """Keep transformers' load reports and progress bars out of texttune's output."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")


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
    """What a result is recorded with: library versions, git commit, platform."""
    info = {"texttune": __version__, "python": platform.python_version()}
    info.update({name: _version(name) for name in LIBRARIES})
    info["platform"] = platform.platform()
    info["git_commit"] = git_commit() or "unknown"
    return info


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def param_counts(model) -> dict[str, Any]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total, "trainable_pct": round(100.0 * trainable / max(total, 1), 4)}


# What makes a folder a model folder: a Hugging Face config, or a closed-form model's record
# (models/classic.py CLASSIC_FILE: the classic baselines and SetFit).
MODEL_MARKERS = ("config.json", "classic.json")


def model_dir_of(path: str | Path) -> Path:
    """A run directory's ``model/`` folder, or a model folder itself."""
    path = Path(path)
    for marker in MODEL_MARKERS:
        if (path / MODEL / marker).is_file():
            return path / MODEL
    for marker in MODEL_MARKERS:
        if (path / marker).is_file():
            return path
    if not path.exists():
        raise TexttuneError(f"{path}: no such run directory")
    raise TexttuneError(f"{path}: no trained model here (expected {path / MODEL / 'config.json'})")


def save_model_folder(run_dir: Path, write) -> Path:
    """``run_dir/model``: ``write(folder)`` fills a temporary folder, which then replaces ``model/``
    whole (one left by a finish that crashed before metrics.json included): never a half-written model."""
    target, tmp = run_dir / MODEL, run_dir / f".{MODEL}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    apply_umask(tmp)  # save_pretrained's safetensors files come out 0600
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return target


def folder_size_mb(folder: Path) -> float:
    return round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20, 3)


# --------------------------------------------------------------------------- processes


def _processes():
    """Accelerate's view of the processes (one, or those torchrun started; set up once)."""
    from accelerate import PartialState

    from texttune.training.loop import cpu_only

    return PartialState(cpu=cpu_only())


def num_processes() -> int:
    """How many processes this run has (torchrun's, or 1)."""
    return _processes().num_processes


def is_main_process() -> bool:
    """Whether this process writes run directories (always true in a 1-process run)."""
    return _processes().is_main_process


def _shared(make):
    """``make()`` on the main process; its result on every process (a run directory's path)."""
    processes = _processes()
    if processes.num_processes == 1:
        return make()
    from accelerate.utils import broadcast_object_list

    made = [make() if processes.is_main_process else None]
    return broadcast_object_list(made, from_process=0)[0]


# --------------------------------------------------------------------------- creating and opening


def create_run_dir(config) -> Path:
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


def write_record_start(run_dir: Path, config) -> None:
    atomic_write_text(run_dir / CONFIG, yaml.safe_dump(config_to_dict(config), sort_keys=False))
    env = environment()
    env["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    env["cpu_threads"] = torch.get_num_threads()
    env["command"] = " ".join(sys.argv)
    env["started"] = datetime.now().isoformat(timespec="seconds")
    atomic_write_json(run_dir / ENVIRONMENT, env)


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """A run's resolved config as recorded (a mapping; ``kind`` filled in for runs recorded before it)."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise TexttuneError(f"{run_dir}: not a texttune run directory (no {CONFIG})")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise TexttuneError(f"{path}: not a run config (a mapping of keys)")
    return {"kind": recorded_kind(data), **data}


def recorded_kind(config: dict[str, Any]) -> str:
    """A recorded config's kind; records made before configs carried one are told apart by their
    sections (pre-training has a corpus, instruction tuning a model path and no strategy)."""
    if "kind" in config:
        return str(config["kind"])
    if "corpus" in config or config.get("objective") == "mlm":
        return "mlm"
    if "lora" in config and "strategy" not in config:
        return "sft"
    return KIND_DEFAULT


def read_json(run_dir: Path, name: str) -> Any:
    """One JSON file of a run directory; a damaged one is an error naming it."""
    path = Path(run_dir) / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TexttuneError(f"{path}: not found") from None
    except (OSError, ValueError) as err:
        raise TexttuneError(f"{path}: unreadable ({err})") from None


def read_records(run_dir: Path) -> list[dict[str, Any]]:
    """The run's metrics.jsonl (a torn last line, from a crash while appending, is left out)."""
    path = Path(run_dir) / METRICS_LOG
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def is_finished(run_dir: Path) -> bool:
    return (Path(run_dir) / METRICS).is_file()


def is_resumable(run_dir: Path) -> bool:
    return not is_finished(run_dir) and has_training_state(Path(run_dir) / CHECKPOINTS / LAST)


def open_for_resume(run_dir: Path, task: Task):
    """The run directory and its validated config, after checking it is ``task``'s and can resume."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        raise TexttuneError(f"{run_dir}: not a texttune run directory (no {CONFIG})")
    recorded = read_run_config(run_dir)
    if recorded["kind"] != task.kind:
        raise TexttuneError(f"{run_dir}: a '{recorded['kind']}' run; continue it with texttune "
                            f"{COMMANDS.get(recorded['kind'], recorded['kind'])} --resume {run_dir}")
    if is_finished(run_dir):
        raise TexttuneError(f"{run_dir}: this run has finished ({METRICS} exists); nothing to resume")
    if recover_training_state(run_dir / CHECKPOINTS / LAST) is None:
        raise TexttuneError(f"{run_dir}: no checkpoint to resume from ({CHECKPOINTS}/{LAST} is missing)")
    return run_dir, task.load_config(run_dir / CONFIG, [])


# The command that continues each kind of run (for messages).
COMMANDS = {"classify": "run", "mlm": "pretrain", "sft": "sft"}

# Every kind of run, registered by its module in tasks/ (``register_task``).
TASKS: Registry[Any] = Registry("task")


def register_task(task: Task) -> Task:
    TASKS.add(task.kind, task)
    return task


# --------------------------------------------------------------------------- reading any run


def find_runs(folder: Path) -> list[Path]:
    """Run directories under ``folder`` (any depth: comparison cells too), oldest first by name."""
    if not folder.is_dir():
        raise TexttuneError(f"{folder}: no such folder")
    return sorted((p.parent for p in folder.rglob(ENVIRONMENT) if (p.parent / CONFIG).is_file()),
                  key=lambda p: p.name)


def headline(kind: str, metrics: dict[str, Any]) -> tuple[str, str, float | None]:
    """The split, metric and value a run of ``kind`` is summarised by in lists and leaderboards."""
    if kind == "mlm":
        return "held_out", "accuracy", (metrics.get("held_out") or {}).get("accuracy")
    if kind == "sft":
        return "validation", "loss", (metrics.get("validation") or {}).get("loss")
    split = "test" if "test" in metrics else "validation"
    return split, "accuracy", (metrics.get(split) or {}).get("accuracy")


def run_date(run: Path) -> str | None:
    """When a run started, ``2026-11-22 21:05:01``: from its directory name, else environment.json."""
    stamp = re.match(r"(\d{4})(\d\d)(\d\d)-(\d\d)(\d\d)(\d\d)-", Path(run).name)
    if stamp:
        year, month, day, hour, minute, second = stamp.groups()
        return f"{year}-{month}-{day} {hour}:{minute}:{second}"
    try:
        started = json.loads((Path(run) / ENVIRONMENT).read_text(encoding="utf-8")).get("started")
    except (OSError, ValueError, AttributeError):
        return None
    return str(started).replace("T", " ") if started else None


def describe_run(run: Path) -> dict[str, Any]:
    """One line of ``texttune runs list``, for a run of any kind."""
    config = read_run_config(run)
    data, model = config.get("data") or {}, config.get("model") or {}
    kind = config["kind"]
    row: dict[str, Any] = {
        "run": str(run), "date": run_date(run), "kind": kind, "name": config.get("name"),
        "dataset": data.get("dataset") or (config.get("corpus") or {}).get("dataset") or data.get("source")
        or "(files)",
        "model": model.get("name") or model.get("path") or model.get("init") or "—",
        "strategy": (config.get("strategy") or {}).get("name") or ("lora" if config.get("lora") else "—"),
        "status": "unfinished",
    }
    if model.get("name") == "pretrained" and model.get("path"):
        row["model_path"] = model["path"]  # which pretrained encoder: minilm, a folder, a Hub id
    if is_finished(run):
        metrics = read_json(run, METRICS)
        split, metric, value = headline(kind, metrics)
        row.update(status="finished", split=split, metric=metric, score=value,
                   trainable_pct=(metrics.get("params") or {}).get("trainable_pct"),
                   wall_time_s=metrics.get("wall_time_s"))
        if metric == "accuracy":
            row["accuracy"] = value
    elif is_resumable(run):
        row["status"] = "resumable"
    return row


# What `texttune runs list --sort` orders by: each a key of describe_run's rows ("metric": the score).
SORT_COLUMNS = ("date", "name", "kind", "dataset", "model", "strategy", "metric", "status")


def sort_runs(rows: list[dict[str, Any]], column: str) -> list[dict[str, Any]]:
    """``rows`` ordered by ``column`` (one of ``SORT_COLUMNS``): the best score first for ``metric`` (by
    its direction: accuracy up, loss down), the rest ascending; rows without a value last."""
    from texttune.evaluation.metrics import METRIC_DIRECTIONS

    def key(row: dict[str, Any]) -> tuple[bool, Any]:
        if column == "metric":
            score = row.get("score")
            if score is None:
                return True, 0.0
            return False, -score if METRIC_DIRECTIONS.get(row.get("metric"), "max") == "max" else score
        value = row.get(column)
        return value is None, str(value) if value is not None else ""

    return sorted(rows, key=key)  # stable: equal keys keep the folder's order


def setting_of(run: Path) -> str:
    """What makes runs seeds (or k-fold folds) of one setting: the resolved config without its seed,
    data.cv.fold, name and output folder, as a short hash (``runs compare`` pools runs with equal
    settings, never by name alone)."""
    import hashlib

    config = read_run_config(run)
    for key in ("seed", "name", "output_dir"):
        config.pop(key, None)
    if isinstance((config.get("data") or {}).get("cv"), dict):  # the folds of data.cv are runs of one setting
        config["data"]["cv"].pop("fold", None)
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:8]


# --------------------------------------------------------------------------- the lifecycle


@dataclass
class Prepared:
    """What a task's ``prepare`` hands to the loop: the model, its data and its objective."""

    model: Any
    tokenizer: Any
    train: Any  # Encoded
    validation: Any  # Encoded | None
    objective: Any  # training.task.LoopTask
    pad_id: int = 0
    head_lr: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class Task(Protocol):
    """One kind of run (``tasks/``): its root config and the steps ``run_task`` calls in order."""

    kind: str

    def load_config(self, path: Path | None, overrides: list[str]) -> Any: ...
    def prepare(self, config, run_dir: Path, resuming: bool) -> Prepared: ...
    def before_fit(self, config, prepared: Prepared, trainer) -> dict[str, Any] | None: ...
    def finish(self, config, prepared: Prepared, trainer, run_dir: Path) -> dict[str, Any]: ...
    def report(self, run_dir: Path) -> None: ...


def run_task(task: Task, config=None, *, resume: Path | None = None, callbacks: list[Any] | None = None
             ) -> RunResult:
    """Train, evaluate and record one run of ``task`` (``resume``: continue an interrupted one)."""
    quiet_libraries()
    started = time.perf_counter()
    processes = _processes()
    if processes.num_processes > 1 and not getattr(task, "data_parallel", False):
        raise TexttuneError(f"texttune {COMMANDS.get(task.kind, task.kind)} runs in one process only; "
                            "data-parallel runs (torchrun) are supported for texttune run")
    if resume is not None:
        with processes.main_process_first():  # the main one may recover a checkpoint a crash left aside
            run_dir, config = open_for_resume(Path(resume), task)
    else:
        run_dir = _shared(lambda: start_run(config))
    if processes.num_processes > 1:
        log.info("process %d of %d", processes.process_index, processes.num_processes)
    if processes.is_main_process:
        log.info("%s run directory: %s", "resuming the" if resume is not None else "new", run_dir)
    try:
        return _fit_and_record(task, config, run_dir, resume is not None, callbacks, started)
    except KeyboardInterrupt as interrupt:
        interrupt.run_dir = run_dir  # the CLI says how to continue (or that nothing was kept)
        raise


def _fit_and_record(task: Task, config, run_dir: Path, resuming: bool, callbacks: list[Any] | None,
                    started: float) -> RunResult:
    from texttune.training.callbacks import ProgressCallback
    from texttune.training.loop import Trainer
    from texttune.training.tracking import Tracking, ended_with_run, require_trackers

    processes = _processes()
    main = processes.is_main_process
    if callbacks is None:
        callbacks = [ProgressCallback()] if main else []
    tracking = None
    # A resumed run keeps its directory; only the main process owns it.
    with discarded_on_failure(run_dir, keep=resuming or not main):
        require_trackers(config.train.report_to)  # on every process: a missing library stops them all here
        if main and config.train.report_to:
            tracking = Tracking(config, run_dir, record=run_dir / TRACKING, tensorboard_dir=run_dir / TENSORBOARD)
        with processes.main_process_first():  # the others then read the tokenization cache it wrote
            prepared = task.prepare(config, run_dir, resuming)
        # No objective: a model fitted in closed form by its task (the classic baselines), not by the loop.
        trainer = None if prepared.objective is None else Trainer(
            prepared.model, prepared.train, prepared.validation, config.train, objective=prepared.objective,
            checkpoint_dir=run_dir / CHECKPOINTS, metrics_path=run_dir / METRICS_LOG if main else None,
            pad_id=prepared.pad_id, seed=config.seed, head_lr=prepared.head_lr,
            callbacks=[*callbacks, tracking] if tracking is not None else callbacks,
        )
    with ended_with_run(tracking):  # the tracked run ends as this one does: finished, failed or killed
        if trainer is None:
            metrics, model = task.fit_closed_form(config, prepared, run_dir), prepared.model
            metrics.update({"wall_time_s": round(time.perf_counter() - started, 3), "peak_memory_mb": peak_memory_mb()})
        else:
            metrics, model = _fit_and_measure(task, config, prepared, trainer, run_dir, resuming, started)
        if main:
            atomic_write_json(run_dir / METRICS, metrics)
            task.report(run_dir)
            if tracking is not None:  # after the report: its page and plots are artifacts
                tracking.log_final(metrics, [run_dir / name for name in TRACKED_FILES])
            if not config.train.keep_checkpoints:
                shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)
    processes.wait_for_everyone()  # no process returns before the run directory is complete
    return RunResult(run_dir, metrics, model, prepared.tokenizer, prepared.extras)


def _fit_and_measure(task: Task, config, prepared: Prepared, trainer, run_dir: Path, resuming: bool,
                     started: float) -> tuple[dict[str, Any], Any]:
    """Train, then the final metrics: the task's evaluation and what every kind of run records."""
    _before_fit(task, config, prepared, trainer, run_dir, resuming)
    state = trainer.fit(resume=resuming)
    model = trainer.accelerator.unwrap_model(trainer.model)
    params = param_counts(model)  # before finish(): merging LoRA into the weights unfreezes nothing
    metrics = task.finish(config, prepared, trainer, run_dir)
    metrics.update({
        "best": {"step": state.best_step, "metric": config.train.metric, "value": state.best_value},
        "steps": state.global_step,
        "epochs": round(state.epoch + state.batch_in_epoch / trainer.batches_per_epoch, 4),
        "stopped_early": state.stopped_early,
        "stop_reason": state.stop_reason,  # early_stopping, pruned (texttune tune), or None
        "world_size": trainer.world_size,
        "global_batch_size": trainer.global_batch_size,  # per optimizer step: × gradient_accumulation_steps
        "effective_batch": trainer.effective_batch(),  # means per step; batch sizes vary with train.batch_tokens
        "params": params,
        "train_time_s": round(state.train_time_s, 3),
        "train_samples_per_s": round(state.samples_seen / max(state.train_time_s, 1e-9), 3),
        "seconds_per_step": round(state.train_time_s / max(state.global_step, 1), 3),
        "wall_time_s": round(time.perf_counter() - started, 3),
        "peak_memory_mb": peak_memory_mb(),
    })
    return metrics, model


def _before_fit(task: Task, config, prepared: Prepared, trainer, run_dir: Path, resuming: bool) -> None:
    """The model's scores before training, measured once: a resumed run reads them back."""
    path = run_dir / METRICS_BEFORE
    if resuming:
        prepared.extras["before"] = read_json(run_dir, METRICS_BEFORE) if path.is_file() else None
        return
    before = task.before_fit(config, prepared, trainer)
    prepared.extras["before"] = before
    if before is not None and is_main_process():
        atomic_write_json(path, before)
