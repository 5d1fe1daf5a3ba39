"""Side work of the loop (the metrics file, progress display, log lines): kept out of the loop itself."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from texttune.io import atomic_write_text


class Callback:
    """Hooks the loop calls; each receives the trainer so it can read its state (``trainer.state``,
    ``trainer.metrics_path``, ...). Every hook is optional."""

    def on_train_begin(self, trainer: Any) -> None: ...
    def on_batch_begin(self, trainer: Any, indices: np.ndarray) -> None:
        """Before the examples ``indices`` of the training data are batched (every micro-batch)."""
    def on_step_end(self, trainer: Any) -> None: ...
    def on_log(self, trainer: Any, record: dict[str, Any]) -> None: ...
    def on_evaluate_begin(self, trainer: Any) -> None:
        """Before an evaluation (and the checkpoint after it): its time is not training time."""
    def on_evaluate(self, trainer: Any, record: dict[str, Any]) -> None: ...
    def on_evaluate_end(self, trainer: Any) -> None:
        """After an evaluation and its checkpoint."""
    def on_train_end(self, trainer: Any) -> None: ...


class MetricsFile(Callback):
    """``trainer.metrics_path`` (metrics.jsonl): one JSON line per log step and per evaluation. On
    resume, the records written after the checkpoint (and a torn last line, from a crash mid-write)
    are dropped first -- the resumed run writes them again -- in one atomic rewrite, so a crash then
    loses no record."""

    def on_train_begin(self, trainer: Any) -> None:
        path = trainer.metrics_path
        if trainer.resumed and path.is_file():
            step = trainer.state.global_step
            kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                    if (line_step := _record_step(line)) is not None and line_step <= step]
            atomic_write_text(path, "".join(line + "\n" for line in kept))

    def on_log(self, trainer: Any, record: dict[str, Any]) -> None:
        _append(trainer.metrics_path, record)

    def on_evaluate(self, trainer: Any, record: dict[str, Any]) -> None:
        _append(trainer.metrics_path, record)


def _append(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def _record_step(line: str) -> int | None:
    """The step of a metrics.jsonl line; None for a line that is not a whole record."""
    try:
        step = json.loads(line).get("step", 0)
    except (ValueError, AttributeError):
        return None
    return step if isinstance(step, int) else None


class ProgressCallback(Callback):
    """A progress bar (loss, lr, samples/s, ETA) on a terminal; plain log lines otherwise."""

    def __init__(self, console: Console | None = None, force_plain: bool | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False)
        self.plain = force_plain if force_plain is not None else not sys.stderr.isatty()
        self.progress: Progress | None = None
        self.task = None
        self.start = time.perf_counter()

    def on_train_begin(self, trainer: Any) -> None:
        self.start = time.perf_counter()
        if self.plain:
            self.console.print(f"training: {trainer.total_steps} steps, {len(trainer.train_data):,} examples")
            return
        self.progress = Progress(
            TextColumn("[bold]train[/bold]"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=self.console, transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=trainer.total_steps,
                                           completed=trainer.state.global_step, info="")

    def on_step_end(self, trainer: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=trainer.state.global_step)

    def on_log(self, trainer: Any, record: dict[str, Any]) -> None:
        info = (f"loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
                f"{record['samples_per_s']:.1f} samples/s")
        if self.progress is not None:
            self.progress.update(self.task, info=info)
        else:
            eta = self._eta(trainer)
            self.console.print(f"step {record['step']}/{trainer.total_steps}  epoch {record['epoch']:.2f}  "
                               f"{info}  eta {eta}")

    def on_evaluate(self, trainer: Any, record: dict[str, Any]) -> None:
        shown = [key for key in ("loss", "accuracy", "f1_macro", "perplexity", trainer.cfg.metric) if key in record]
        line = f"eval step {record['step']}: " + "  ".join(f"{key} {record[key]:.4f}" for key in dict.fromkeys(shown))
        (self.progress.console if self.progress is not None else self.console).print(line)

    def on_train_end(self, trainer: Any) -> None:
        if self.progress is not None:
            self.progress.stop()

    def _eta(self, trainer: Any) -> str:
        done = max(trainer.state.global_step - trainer.start_step, 1)
        left = trainer.total_steps - trainer.state.global_step
        seconds = (time.perf_counter() - self.start) / done * left
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
