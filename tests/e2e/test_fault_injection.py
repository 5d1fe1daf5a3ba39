"""A crash (``os._exit``) at every write and rename of a run's checkpoints and of its final record,
then ``texttune run --resume``: the run either ends exactly as the uninterrupted run did, or is
refused with one clear message -- and a run whose record was complete is never lost.

One subprocess (the script below) runs the uninterrupted run, recording every write and rename it
makes while checkpointing and finishing, then forks one child per injection point that crashes the
moment that step starts; the children are forked from the warm process so that each costs a
fraction of a second, not an interpreter start. The resumes run here, through the real CLI.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from texttune.tasks.classify import load_config
from texttune.tasks.classify import run_experiment
from texttune.training.callbacks import Callback

CRASHED = 1  # the children's exit code at an injected crash; 0 means the step was never reached

# The child: spies on the steps of save_training_state (and the best-model save beside it) and of the
# final record; context is "checkpoint N" inside the N-th Trainer._save_checkpoint, "final" after fit.
SCRIPT = r"""
import json, os, shutil, sys, traceback
from collections import Counter
from pathlib import Path

import texttune.tasks.classify as experiment
import texttune.io as tio
import texttune.models.saving as saving
import texttune.training.checkpoint as checkpoint
from texttune.tasks.classify import load_config
from texttune.training.loop import Trainer

spec = json.loads(Path(sys.argv[1]).read_text())
events, seen, state = [], Counter(), {"context": None, "checkpoints": 0, "depth": 0, "crash_at": None}

def spy(owner, name, describe):
    real = getattr(owner, name)
    def step(*args, **kwargs):
        if state["context"] is None or state["depth"]:  # not a step of a checkpoint or of the record
            return real(*args, **kwargs)
        what = f"{state['context']}: {describe(*args)}"
        seen[what] += 1
        point = what if seen[what] == 1 else f"{what} #{seen[what]}"
        events.append(point)
        if point == state["crash_at"]:
            os._exit(1)
        state["depth"] += 1
        try:
            return real(*args, **kwargs)
        finally:
            state["depth"] -= 1
    setattr(owner, name, step)

def name(path):  # the run directory's name has a time stamp: it is "{run}" in the points
    path = Path(path)
    parent = "{run}" if path.parent.name.endswith("-" + spec["run_name"]) else path.parent.name
    return f"{parent}/{path.name}"

spy(os, "replace", lambda src, dst, *a: f"os.replace {name(src)} -> {name(dst)}")
spy(shutil, "rmtree", lambda path, *a: f"shutil.rmtree {name(path)}")
spy(tio, "atomic_write_bytes", lambda path, *a: f"atomic write {name(path)}")
spy(checkpoint, "save_file", lambda tensors, path, *a: f"save_file {name(path)}")
spy(checkpoint, "save_model", lambda model, path, *a: f"save_model {name(path)}")
spy(saving, "save_classifier", lambda model, tokenizer, folder: f"save_classifier {name(folder)}")
spy(experiment, "report", lambda run_dir: "report")

real_checkpoint, real_fit = Trainer._save_checkpoint, Trainer.fit
def save_checkpoint(self, improved):
    state["checkpoints"] += 1
    state["context"] = f"checkpoint {state['checkpoints']}"
    try:
        return real_checkpoint(self, improved)
    finally:
        state["context"] = None
def fit(self, resume=False):
    result = real_fit(self, resume)
    state["context"] = "final"
    return result
Trainer._save_checkpoint, Trainer.fit = save_checkpoint, fit

def run(output_dir):
    events.clear(); seen.clear()
    state.update(context=None, checkpoints=0)
    config = load_config(None, [*spec["overrides"], f"output_dir={output_dir}"])  # the last one wins
    return experiment.run_experiment(config, callbacks=[]).run_dir

results = {"reference": str(run(Path(spec["root"]) / "reference")), "events": list(events), "crashed": {}}
for i, point in enumerate(spec["points"]):
    output_dir = Path(spec["root"]) / f"crash-{i}"
    pid = os.fork()
    if pid == 0:
        state["crash_at"] = point
        try:
            run(output_dir)
        except BaseException:
            traceback.print_exc()
            os._exit(2)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    run_dirs = sorted(output_dir.glob("*")) if output_dir.is_dir() else []
    results["crashed"][point] = {"exit": os.waitstatus_to_exitcode(status),
                                 "run_dir": str(run_dirs[0]) if len(run_dirs) == 1 else None}
Path(spec["results"]).write_text(json.dumps(results))
"""

RESUMES = "resumes"  # the resumed run ends exactly as the uninterrupted one
NO_CHECKPOINT = "no checkpoint to resume from"  # nothing complete was saved yet: nothing to resume
FINISHED = "this run has finished"  # the record is complete; only the report or the clean-up was cut

# Steps 2 and 4 are evaluated and checkpointed; the log loss falls, so each saves the best model too.
# A crash at a step means just before it: the writes up to and including complete.json build the new
# state aside (unsealed until complete.json is there), the swap moves it in.
WRITES = [
    "save_model best/.model.safetensors.tmp",
    "os.replace best/.model.safetensors.tmp -> best/model.safetensors",
    "shutil.rmtree checkpoints/.last.tmp",
    "save_model .last.tmp/.model.safetensors.tmp",
    "os.replace .last.tmp/.model.safetensors.tmp -> .last.tmp/model.safetensors",
    "save_file .last.tmp/optimizer.safetensors",
    "atomic write .last.tmp/optimizer.json",
    "save_file .last.tmp/rng.safetensors",
    "atomic write .last.tmp/rng.json",
    "atomic write .last.tmp/trainer_state.json",
    "atomic write .last.tmp/complete.json",
]
SWAP = [
    "shutil.rmtree checkpoints/.last.old",
    "os.replace checkpoints/last -> checkpoints/.last.old",  # not at the first checkpoint: no last yet
    "os.replace checkpoints/.last.tmp -> checkpoints/last",
    "shutil.rmtree checkpoints/.last.old #2",
]
FINAL_STEPS = [
    ("atomic write {run}/test_predictions.json", RESUMES),
    ("shutil.rmtree {run}/.model.tmp", RESUMES),
    ("save_classifier {run}/.model.tmp", RESUMES),
    ("shutil.rmtree {run}/model", RESUMES),
    ("os.replace {run}/.model.tmp -> {run}/model", RESUMES),
    ("atomic write {run}/metrics.json", RESUMES),
    ("report", FINISHED),
    ("shutil.rmtree {run}/checkpoints", FINISHED),
]
RUN_NAME = "faults"
POINTS = (
    # Before the first seal nothing complete exists; once .last.tmp is sealed, resume moves it in.
    [(f"checkpoint 1: {step}", NO_CHECKPOINT) for step in WRITES]
    + [(f"checkpoint 1: {step}", RESUMES) for step in SWAP if "last -> " not in step]
    + [(f"checkpoint 2: {step}", RESUMES) for step in WRITES + SWAP]
    + [(f"final: {step}", outcome) for step, outcome in FINAL_STEPS]
)


def overrides(data: Path, output_dir: Path) -> list[str]:
    """A tiny from-scratch CNN on the eight toy sentences: 4 steps, evaluated and checkpointed at 2 and 4."""
    return [
        "model.name=cnn", "model.embedding_dim=8", "model.num_filters=4", "model.dropout=0",
        f"name={RUN_NAME}",
        f"data.train_file={data}", f"data.validation_file={data}", f"data.test_file={data}",
        "train.per_device_batch_size=4", "train.max_steps=4", "train.eval_every_steps=2", "train.lr=1e-2",
        "train.warmup_ratio=0", "train.num_threads=1", "train.log_every_steps=1", "train.metric=log_loss",
        f"output_dir={output_dir}",
    ]


@pytest.fixture(scope="module")
def crashes(tmp_path_factory, toy):
    """Run the script once: the reference run, the steps it made, and one crashed run per point."""
    root = tmp_path_factory.mktemp("faults")
    spec = {"root": str(root), "overrides": overrides(toy, root), "run_name": RUN_NAME,
            "results": str(root / "results.json"), "points": [point for point, _ in POINTS]}
    (root / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(root / "spec.json")], env=env, cwd=root,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads((root / "results.json").read_text())


def test_every_write_and_rename_is_an_injection_point(crashes):
    """The points listed here are exactly the steps the run made: a new write cannot go untested."""
    assert sorted(crashes["events"]) == sorted(point for point, _ in POINTS)


def weights(run_dir: Path) -> dict:
    return load_file(str(run_dir / "model" / "model.safetensors"))


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def artifacts(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))


def timeless(records: list[dict]) -> list[dict]:
    """Records without their timings, which differ from run to run."""
    return [{k: v for k, v in r.items() if k not in ("samples_per_s", "elapsed_s")} for r in records]


def assert_same_run(run_dir: Path, reference: Path) -> None:
    a, b = (json.loads((d / "metrics.json").read_text(encoding="utf-8")) for d in (reference, run_dir))
    for split in ("validation", "test"):
        for key in ("accuracy", "log_loss", "f1_macro"):
            assert b[split][key] == a[split][key], (split, key)
    assert (b["best"], b["steps"]) == (a["best"], a["steps"])
    ta, tb = weights(reference), weights(run_dir)
    assert ta.keys() == tb.keys() and all((ta[k] == tb[k]).all() for k in ta), "the weights differ"
    assert timeless(records(run_dir)) == timeless(records(reference))


@pytest.mark.parametrize("point, outcome", POINTS, ids=[point for point, _ in POINTS])
def test_a_crash_then_resume_ends_as_the_uninterrupted_run_or_is_refused(crashes, point, outcome, run_cli):
    crashed = crashes["crashed"][point]
    assert crashed["exit"] == CRASHED, f"the run did not crash at {point!r} (exit {crashed['exit']})"
    run_dir, reference = Path(crashed["run_dir"]), Path(crashes["reference"])
    code, out, err = run_cli("run", "--resume", run_dir)
    assert "Traceback" not in out + err
    if outcome == RESUMES:
        assert code == 0, err
        assert_same_run(run_dir, reference)
        assert artifacts(run_dir) == artifacts(reference)
        return
    assert code == 2 and err.startswith("error") and outcome in err, (code, err)
    assert str(run_dir) in "".join(err.split())
    if outcome == FINISHED:  # the record was complete when the crash came: the run is whole
        assert_same_run(run_dir, reference)


class Interrupt(Callback):
    """Ctrl-C after a given optimizer step."""

    def __init__(self, at_step: int) -> None:
        self.at_step, self.run_dir = at_step, None

    def on_train_begin(self, trainer) -> None:
        self.run_dir = trainer.checkpoint_dir.parent  # the loop writes checkpoints into the run directory

    def on_step_end(self, trainer) -> None:
        if trainer.state.global_step == self.at_step:
            raise KeyboardInterrupt


def test_a_torn_last_line_of_metrics_jsonl_is_dropped_on_resume(crashes, toy, tmp_path, run_cli):
    """A crash while appending a record leaves half a line; resume drops it and writes the record again."""
    interrupt = Interrupt(at_step=3)  # the last checkpoint is step 2's
    with pytest.raises(KeyboardInterrupt):
        run_experiment(load_config(None, overrides(toy, tmp_path)), callbacks=[interrupt])
    with (interrupt.run_dir / "metrics.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"type": "train", "step": 4, "lo')
    code, out, err = run_cli("run", "--resume", interrupt.run_dir)
    assert code == 0 and "Traceback" not in out + err, err
    assert_same_run(interrupt.run_dir, Path(crashes["reference"]))
