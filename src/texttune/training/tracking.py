"""Experiment tracking: a copy of the run's record for TensorBoard and MLflow (``train.report_to``).

The run directory stays the source of truth; a tracker gets a copy of it as the run goes:

- at the start, the resolved config flattened to ``section.key`` (``train.lr``): MLflow params;
  TensorBoard hparams, plus the YAML as text;
- each record the loop writes to metrics.jsonl, as scalars at its step: ``train/loss``, ``train/lr``,
  ``train/grad_norm``, ``train/samples_per_s``, ... and ``validation/<metric>`` for each evaluation;
- at the end, the numbers of metrics.json as ``final/<path>`` (``final/test/accuracy``; lists such as the
  confusion matrix are left out) and, for MLflow, the report, plots, config and metrics as artifacts.

Only the main process tracks: ``runs.run_task`` builds the callback there alone. A library that is
missing is an error before any work (``require_trackers``). A tracker that fails while the run goes on
(an unwritable folder, a server gone away) is warned about once and dropped; the run finishes, since
everything the tracker would have received is in the run directory anyway.

Where: TensorBoard writes RUN_DIR/tensorboard, or ``train.tracking_dir``/<run name>. MLflow logs to
``MLFLOW_TRACKING_URI`` when set, else to sqlite ``<output_dir>/mlflow.db`` with artifacts in
``<output_dir>/mlartifacts`` (MLflow 3 refuses its file store, ./mlruns, unless told to allow it); the run
is named after the run directory, in the experiment ``MLFLOW_EXPERIMENT_NAME`` or ``texttune``. Where a
run was tracked is recorded in RUN_DIR/tracking.json, so that ``--resume`` continues the same tracked run.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import yaml

from texttune.config import config_to_dict
from texttune.errors import TexttuneError
from texttune.io import atomic_write_json
from texttune.training.callbacks import Callback

log = logging.getLogger("texttune")

INSTALL = "pip install 'texttune[tracking]'"
MLFLOW_STORE = "mlflow.db"  # beside the run directories, in the output folder
MLFLOW_ARTIFACTS = "mlartifacts"
MLFLOW_EXPERIMENT = "texttune"
_NOT_SCALARS = {"type", "split", "step"}


def require_trackers(names: list[str]) -> None:
    """A ``TexttuneError`` naming ``train.report_to`` and the extra when a tracker's library is missing."""
    for name in names:
        for module, package in _needs(name):
            try:
                importlib.import_module(module)
            except ImportError:
                raise TexttuneError(f"train.report_to: {name} needs the package {package}: {INSTALL}") from None


def _needs(name: str) -> list[tuple[str, str]]:
    """(module, package) pairs the tracker ``name`` imports."""
    if name == "tensorboard":
        return [("tensorboard", "tensorboard")]  # torch.utils.tensorboard's writer needs it
    needs = [("mlflow", "mlflow-skinny")]
    if not os.environ.get("MLFLOW_TRACKING_URI"):  # the local sqlite store: not in mlflow-skinny
        needs += [("sqlalchemy", "sqlalchemy"), ("alembic", "alembic")]
    return needs


def mlflow_tracking_uri(run_dir: Path) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a sqlite store in the output folder beside the run directories."""
    return os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///" + (run_dir.parent / MLFLOW_STORE).resolve().as_posix()


def flatten(data: dict[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """``{"train": {"lr": 1e-3}}`` → ``{"train.lr": 1e-3}``; an empty mapping stays a value."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}{sep}", sep))
        else:
            out[f"{prefix}{key}"] = value
    return out


def final_scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of metrics.json as ``final/<path>``: ``final/test/accuracy``, ``final/params/trainable``."""
    return {_key(f"final/{key}"): value for key, value in flatten(metrics, sep="/").items() if _is_number(value)}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _key(name: str) -> str:
    """A name both trackers take: MLflow allows word characters, ``-``, ``.``, space, ``:`` and ``/``
    (a label such as ``sci&tech`` in a per-class metric would be refused)."""
    return re.sub(r"[^\w\-. :/]", "_", name)


def _text(value: Any) -> str:
    """A config value as text, as config.yaml spells it (``true``, ``null``, ``[0.9, 0.999]``)."""
    return value if isinstance(value, str) else json.dumps(value)


# --------------------------------------------------------------------------- the callback


class Tracking(Callback):
    """Sends the run's record to each tracker in ``config.train.report_to`` (build it on the main
    process only). ``record`` is RUN_DIR/tracking.json: where each tracker logs, read back on resume."""

    def __init__(self, config, run_dir: Path, *, record: Path, tensorboard_dir: Path) -> None:
        self.config, self.record = config, Path(record)
        self.previous = previous = _read_record(self.record)
        makers = {"tensorboard": lambda seen: _TensorBoard(config, Path(run_dir), Path(tensorboard_dir), seen),
                  "mlflow": lambda seen: _MLflow(config, Path(run_dir), seen)}
        self.trackers = [makers[name](previous.get(name)) for name in config.train.report_to]
        self.step = 0

    def on_train_begin(self, trainer: Any) -> None:
        self.step = trainer.state.global_step
        resumed_at = self.step if trainer.resumed else None
        params = flatten(config_to_dict(self.config))
        text = yaml.safe_dump(config_to_dict(self.config), sort_keys=False, allow_unicode=True)
        self._each("start", resumed_at, params, text)
        if self.trackers:
            where = {tracker.name: tracker.where() for tracker in self.trackers}
            atomic_write_json(self.record, {**self.previous, **where})
            for tracker in self.trackers:
                log.info("tracking: %s", tracker.describe())

    def on_log(self, trainer: Any, record: dict[str, Any]) -> None:
        self._log(record, "train")

    def on_evaluate(self, trainer: Any, record: dict[str, Any]) -> None:
        self._log({k: v for k, v in record.items() if k != "epoch"}, record.get("split", "validation"))

    def on_train_end(self, trainer: Any) -> None:
        self.step = trainer.state.global_step
        self._each("flush")

    def log_final(self, metrics: dict[str, Any], files: list[Path]) -> None:
        """The numbers of metrics.json, and ``files`` (those that exist) as artifacts where a tracker keeps them."""
        self._each("log_final", final_scalars(metrics), self.step, [f for f in files if f.is_file()])

    def end(self, status: str) -> None:
        """``status``: FINISHED, FAILED or KILLED."""
        self._each("end", status)
        self.trackers = []

    def _log(self, record: dict[str, Any], prefix: str) -> None:
        self.step = record["step"]
        values = {_key(f"{prefix}/{k}"): v for k, v in record.items() if k not in _NOT_SCALARS and _is_number(v)}
        self._each("log", values, record["step"])

    def _each(self, method: str, *args: Any) -> None:
        for tracker in list(self.trackers):
            try:
                getattr(tracker, method)(*args)
            except Exception as err:  # noqa: BLE001 -- a copy failing must not cost the run
                self.trackers.remove(tracker)
                log.warning("train.report_to: %s failed (%s: %s); the run goes on without it (its whole "
                            "record is in the run directory)", tracker.name, type(err).__name__, err)
                if method != "end":
                    with suppress(Exception):  # already warned about
                        tracker.end("FAILED")


def _read_record(path: Path) -> dict[str, Any]:
    """tracking.json of an interrupted run; {} for a new run (or a record made unreadable by hand: the
    trackers then start new tracked runs)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


@contextmanager
def ended_with_run(tracking: Tracking | None) -> Iterator[None]:
    """The tracked run ends as the block does: FINISHED, KILLED (Ctrl-C) or FAILED."""
    if tracking is None:
        yield
        return
    try:
        yield
    except KeyboardInterrupt:
        tracking.end("KILLED")
        raise
    except BaseException:
        tracking.end("FAILED")
        raise
    tracking.end("FINISHED")


# --------------------------------------------------------------------------- the trackers


@contextmanager
def _locked(path: Path | None) -> Iterator[None]:
    """``path`` held as an exclusive lock (nothing if None). Two comparison cells in parallel creating a
    new mlflow.db at once made one of them fail in alembic's migration ("expected to match one row")."""
    if path is None:
        yield
        return
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _TensorBoard:
    """Through Accelerate's ``TensorBoardTracker`` (a ``SummaryWriter`` that flushes at every log) for
    the scalars. The config is written here instead: the tracker's ``store_init_configuration`` calls
    ``add_hparams``, which writes into a new timestamp-named sub-run (TensorBoard then shows the hparams
    apart from the scalars) and leaves an hparams.yml beside it, where config.yaml is the record already."""

    name = "tensorboard"

    def __init__(self, config, run_dir: Path, default_dir: Path, previous: dict[str, Any] | None) -> None:
        if previous is not None:
            folder = Path(previous["dir"])
        elif config.train.tracking_dir is not None:
            folder = Path(config.train.tracking_dir) / run_dir.name
        else:
            folder = default_dir
        self.folder, self.continued = folder.resolve(), previous is not None

    def where(self) -> dict[str, Any]:
        return {"dir": str(self.folder)}

    def describe(self) -> str:
        return f"tensorboard --logdir {self.folder}"

    def start(self, resumed_at: int | None, params: dict[str, Any], config_text: str) -> None:
        from accelerate.tracking import TensorBoardTracker

        # A resumed run logs again the steps after its checkpoint: purge_step hides what the interrupted
        # run had logged of them. The tracker writes to logging_dir/run_name: this run's folder.
        kwargs = {"purge_step": resumed_at + 1} if resumed_at is not None else {}
        self.tracker = TensorBoardTracker(self.folder.name, self.folder.parent, **kwargs)
        self.tracker.start()
        if self.continued:
            return  # the config was written when the run started
        from torch.utils.tensorboard.summary import hparams

        writer = self.tracker.writer
        writer.add_text("config", textwrap.indent(config_text, "    "), global_step=0)  # markdown code
        hparam_values = {k: v if isinstance(v, (str, int, float, bool)) else _text(v) for k, v in params.items()}
        _, session_start, _ = hparams(hparam_values, {})
        writer.file_writer.add_summary(session_start)
        writer.flush()

    def log(self, values: dict[str, float], step: int) -> None:
        self.tracker.log(values, step=step)

    def log_final(self, values: dict[str, float], step: int, files: list[Path]) -> None:
        self.tracker.log(values, step=step)  # images stay in the run directory and report.html

    def flush(self) -> None:
        self.tracker.writer.flush()

    def end(self, status: str) -> None:
        if status == "FINISHED":  # the HParams dashboard's status column
            from torch.utils.tensorboard.summary import hparams

            self.tracker.writer.file_writer.add_summary(hparams({}, {})[2])
        self.tracker.finish()


class _MLflow:
    """Through ``MlflowClient`` rather than Accelerate's ``MLflowTracker``: that one drives MLflow's
    process-wide fluent API (``mlflow.start_run`` sets the global active run, ``log_metrics`` writes to
    it, the tracking URI is global state), so it would take over a caller's own active run or URI and
    cannot keep two runs apart in one process (comparison cells, a notebook). The client holds its URI
    and run id and leaves global state alone."""

    name = "mlflow"

    def __init__(self, config, run_dir: Path, previous: dict[str, Any] | None) -> None:
        self.previous, self.run_dir = previous, run_dir
        self.local = previous is None and not os.environ.get("MLFLOW_TRACKING_URI")
        self.lock = run_dir.parent / f"{MLFLOW_STORE}.lock" if self.local else None
        self.uri = previous["tracking_uri"] if previous is not None else mlflow_tracking_uri(run_dir)
        self.tags = {"mlflow.source.name": "texttune", "texttune.run_dir": str(run_dir.resolve()),
                     "texttune.kind": str(getattr(config, "kind", ""))}
        self.logged_through = -1  # steps up to this one were logged before an interruption

    def where(self) -> dict[str, Any]:
        return {"tracking_uri": self.uri, "experiment_id": self.experiment_id, "run_id": self.run_id}

    def describe(self) -> str:
        return f"mlflow run {self.run_id} at {self.uri}"

    def start(self, resumed_at: int | None, params: dict[str, Any], config_text: str) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        if self.previous is not None:  # --resume: the same MLflow run, status RUNNING again
            self.client = MlflowClient(tracking_uri=self.uri)
            self.experiment_id, self.run_id = self.previous["experiment_id"], self.previous["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            self.logged_through = self._last_step()
            return
        with _locked(self.lock):  # the client creates a new store's tables
            self.client = MlflowClient(tracking_uri=self.uri)
            self.experiment_id = self._experiment()
        run = self.client.create_run(self.experiment_id, run_name=self.run_dir.name, tags=self.tags)
        self.run_id = run.info.run_id
        items = [Param(key, _text(value)[:MAX_PARAM_VAL_LENGTH]) for key, value in params.items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + MAX_PARAMS_TAGS_PER_BATCH])

    def _experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or MLFLOW_EXPERIMENT
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        # A sqlite store's default artifact root is ./mlruns in the working directory: keep them together.
        location = (self.run_dir.parent / MLFLOW_ARTIFACTS).resolve().as_uri() if self.local else None
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except MlflowException:  # created meanwhile by another process logging to the same server
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def _last_step(self) -> int:
        run = self.client.get_run(self.run_id)
        return max((m.step for key in run.data.metrics for m in self.client.get_metric_history(self.run_id, key)),
                   default=-1)

    def log(self, values: dict[str, float], step: int) -> None:
        # A resumed run logs again the records after its checkpoint; MLflow cannot drop the interrupted
        # run's copies (the resumed loop repeats them exactly), so they are not sent twice.
        if step > self.logged_through:
            self._send(values, step)

    def log_final(self, values: dict[str, float], step: int, files: list[Path]) -> None:
        self._send(values, step)
        for path in files:
            self.client.log_artifact(self.run_id, str(path))

    def _send(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric
        from mlflow.utils.validation import MAX_METRICS_PER_BATCH

        stamp = int(time.time() * 1000)
        metrics = [Metric(key, float(value), stamp, step) for key, value in values.items()]
        for i in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + MAX_METRICS_PER_BATCH])

    def flush(self) -> None:
        """Every log is sent as it comes."""

    def end(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)
