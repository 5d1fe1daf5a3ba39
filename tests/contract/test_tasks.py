"""Contract tests of every kind of run, discovered from the task registry (``runs.TASKS``), as the
strategy contract tests are discovered from the strategy registry: each kind goes through
``runs.run_task`` and must write the common record files and a report, resume after an interruption
to the same final metrics as an uninterrupted run, and survive a ``kill -9`` of a real second process
after a checkpoint. A kind registered without a tiny config below fails here: add one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import texttune.tasks  # noqa: F401  (registers every kind)
from conftest import LM_TEXTS, TOY_ROWS
from texttune import runs
from texttune.errors import TexttuneError
from texttune.training.callbacks import Callback

# Every kind writes these; a kind adds its own (classification: data checks, labels, test predictions).
COMMON = {runs.CONFIG, runs.ENVIRONMENT, runs.DATA, runs.METRICS_LOG, runs.METRICS, runs.MODEL,
          runs.LEARNING_CURVES, runs.REPORT}
OWN = {
    "classify": {runs.DATA_CHECKS, runs.LABELS, runs.TEST_PREDICTIONS, runs.CONFUSION_MATRIX, runs.RELIABILITY},
    "mlm": set(),
    "sft": {runs.METRICS_BEFORE},
}
STEPS, EVERY = 6, 2  # checkpoints at steps 2, 4, 6
# What each kind's report.html headlines.
REPORT_SHOWS = {"classify": "test accuracy", "mlm": "held-out (after) perplexity", "sft": "validation (after) loss"}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("task-data")
    toy = folder / "toy.csv"
    toy.write_text("text,label\n" + "".join(f'"{t}",{label}\n' for t, label in TOY_ROWS), encoding="utf-8")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(LM_TEXTS[:120]), encoding="utf-8")
    pairs = folder / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": LM_TEXTS[i], "completion": LM_TEXTS[i + 1]}) + "\n"
                             for i in range(0, 40, 2)), encoding="utf-8")
    return {"toy": toy, "corpus": corpus, "pairs": pairs}


def tiny_overrides(kind: str, files: dict[str, Path], tiny_model_dir: Path, tiny_lm: Path) -> list[str]:
    """--set items of a few-second run of ``kind`` (a checkpoint every EVERY steps)."""
    train = [f"train.max_steps={STEPS}", f"train.eval_every_steps={EVERY}", "train.num_threads=1",
             "train.log_every_steps=1", "train.per_device_batch_size=4"]
    tiny = {
        "classify": [f"model.path={tiny_model_dir}", "model.pooling=mean", f"data.train_file={files['toy']}",
                     f"data.validation_file={files['toy']}", f"data.test_file={files['toy']}", "train.lr=1e-2"],
        "mlm": ["corpus.dataset=null", f"corpus.files=[{files['corpus']}]", "corpus.held_out=[]",
                "tokenizer.vocab_size=70", "tokenizer.min_frequency=1", "model.hidden_size=32", "model.num_layers=1",
                "model.num_heads=2", "model.intermediate_size=64", "mlm.block_size=16", "train.lr=2e-3"],
        "sft": [f"model.path={tiny_lm}", "data.dataset=null", f"data.train_file={files['pairs']}",
                "data.validation_size=0.2", "train.lr=3e-3"],
    }
    assert kind in tiny, f"the task kind '{kind}' has no tiny config in tests/contract/test_tasks.py"
    return tiny[kind] + train


KINDS = runs.TASKS.names()


@pytest.fixture
def config_of(files, tiny_model_dir, tiny_lm, tmp_path):
    def make(kind: str, output: Path | None = None):
        items = tiny_overrides(kind, files, tiny_model_dir, tiny_lm) + [f"output_dir={output or tmp_path}"]
        return runs.TASKS.get(kind).load_config(None, items)

    return make


class Interrupt(Callback):
    def __init__(self, at_step: int) -> None:
        self.at_step, self.run_dir = at_step, None

    def on_train_begin(self, trainer) -> None:
        self.run_dir = trainer.checkpoint_dir.parent

    def on_step_end(self, trainer) -> None:
        if trainer.state.global_step == self.at_step:
            raise KeyboardInterrupt


def scores(metrics: dict) -> dict:
    """The numbers a run is judged by (timing and memory differ from run to run)."""
    volatile = {"train_time_s", "train_samples_per_s", "seconds_per_step", "wall_time_s", "peak_memory_mb",
                "tokenization", "elapsed_s", "samples_per_s"}
    if isinstance(metrics, dict):
        return {k: scores(v) for k, v in metrics.items() if k not in volatile}
    return metrics


def assert_same(a, b, where: str = "metrics") -> None:
    """Equal records: the same keys and values, floats to 1e-5 (the same run resumed)."""
    a, b = scores(a), scores(b)
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{where}: {a} != {b}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-7), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_writes_the_common_record_and_a_report(kind, config_of):
    result = runs.run_task(runs.TASKS.get(kind), config_of(kind), callbacks=[])
    names = {p.name for p in result.run_dir.iterdir()}
    assert COMMON | OWN[kind] <= names, sorted(COMMON | OWN[kind] - names)
    assert runs.CHECKPOINTS not in names  # cleaned up after a finished run
    assert runs.read_run_config(result.run_dir)["kind"] == kind
    metrics = runs.read_json(result.run_dir, runs.METRICS)
    assert metrics["steps"] == STEPS and metrics["params"]["trainable"] > 0
    report = (result.run_dir / runs.REPORT).read_text(encoding="utf-8")
    assert "<html" in report.lower() and REPORT_SHOWS[kind] in report  # a report fitting the kind
    if kind != "classify":
        assert "Confusion matrix" not in report and "holds neither" not in report
    described = runs.describe_run(result.run_dir)
    assert described["kind"] == kind and described["status"] == "finished" and described["score"] is not None


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_resumes_to_the_metrics_of_an_uninterrupted_run(kind, config_of, tmp_path):
    task = runs.TASKS.get(kind)
    whole = runs.run_task(task, config_of(kind, tmp_path / "whole"), callbacks=[])
    interrupt = Interrupt(at_step=EVERY + 1)  # after the checkpoint of step 2
    with pytest.raises(KeyboardInterrupt):
        runs.run_task(task, config_of(kind, tmp_path / "cut"), callbacks=[interrupt])
    assert runs.is_resumable(interrupt.run_dir)
    resumed = runs.run_task(task, resume=interrupt.run_dir, callbacks=[])
    assert_same(runs.read_json(resumed.run_dir, runs.METRICS), runs.read_json(whole.run_dir, runs.METRICS))
    train = lambda d: [(r["step"], round(r["loss"], 6)) for r in runs.read_records(d) if r["type"] == "train"]  # noqa: E731
    assert train(resumed.run_dir) == train(whole.run_dir)


KILLED = r"""
import os, sys
import texttune.tasks  # registers every kind
from texttune import runs
from texttune.training.callbacks import Callback

class Kill(Callback):
    def on_evaluate_end(self, trainer):
        if trainer.state.global_step == int(sys.argv[2]):
            os.kill(os.getpid(), 9)  # no clean-up of any kind, as a power cut

task = runs.TASKS.get(sys.argv[1])
runs.run_task(task, task.load_config(None, sys.argv[4:] + [f"output_dir={sys.argv[3]}"]), callbacks=[Kill()])
"""


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_survives_kill_9_after_a_checkpoint(kind, files, tiny_model_dir, tiny_lm, config_of, run_cli,
                                                        tmp_path):
    """A real second process killed after a checkpoint, resumed the way a user does: texttune
    <command> --resume RUN_DIR."""
    items = tiny_overrides(kind, files, tiny_model_dir, tiny_lm)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", KILLED, kind, str(EVERY * 2), str(tmp_path / "killed"), *items],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "killed").iterdir()
    assert runs.is_resumable(run_dir) and not runs.is_finished(run_dir)
    code, out, err = run_cli(runs.COMMANDS[kind], "--resume", run_dir)
    assert code == 0 and "Traceback" not in out + err, err
    whole = runs.run_task(runs.TASKS.get(kind), config_of(kind, tmp_path / "whole"), callbacks=[])
    assert_same(runs.read_json(run_dir, runs.METRICS), runs.read_json(whole.run_dir, runs.METRICS))


def test_a_run_resumed_with_the_wrong_command_says_which_one(config_of, tmp_path):
    interrupt = Interrupt(at_step=EVERY + 1)
    with pytest.raises(KeyboardInterrupt):
        runs.run_task(runs.TASKS.get("mlm"), config_of("mlm"), callbacks=[interrupt])
    with pytest.raises(TexttuneError,
                       match=f"a 'mlm' run; continue it with texttune pretrain --resume {interrupt.run_dir}"):
        runs.run_task(runs.TASKS.get("classify"), resume=interrupt.run_dir)


def test_runs_list_and_compare_on_a_folder_of_every_kind(config_of, run_cli, tmp_path, monkeypatch):
    """A folder holding a run of every kind (the default output folder of all of them): listed with
    its kind and headline score; compared, the classification runs are ranked and the others named."""
    folder = tmp_path / "mixed"
    done = {kind: runs.run_task(runs.TASKS.get(kind), config_of(kind, folder), callbacks=[]).run_dir
            for kind in KINDS}
    monkeypatch.setenv("COLUMNS", "300")  # the table whole, one run a line
    code, out, err = run_cli("runs", "list", folder)
    assert code == 0 and "Traceback" not in out + err, err
    squashed = "".join(out.split())
    for kind in KINDS:
        assert done[kind].name in squashed and kind in squashed
    # The headline of each kind: held-out accuracy (mlm), validation loss (sft), test accuracy (classify).
    assert "held-out0." in squashed and "valloss" in squashed and "test0." in squashed
    code, out, err = run_cli("runs", "compare", *sorted(folder.iterdir()))
    assert code == 0, err
    assert "experiment" in out  # the classification run's cell
    assert "left out 1 'mlm' run(s)" in out and "left out 1 'sft' run(s)" in out


def test_runs_compare_pools_seeds_of_one_setting_and_never_merges_by_name(config_of, run_cli, tmp_path):
    folder = tmp_path / "cells"
    base = config_of("classify", folder)
    made = [runs.run_task(runs.TASKS.get("classify"), base.model_copy(update=update), callbacks=[]).run_dir
            for update in ({"seed": 1}, {"seed": 2}, {"seed": 1, "train": base.train.model_copy(update={"lr": 1e-3})})]
    from texttune.tasks.compare import compare_runs

    board = compare_runs(made)
    cells = sorted((row["cell"], row["n"]) for row in board["rows"])
    assert len(cells) == 2 and sorted(n for _, n in cells) == [1, 2]  # same name, two settings
    assert all(cell.startswith("experiment [") for cell, _ in cells)
