"""``texttune tune`` end to end on a tiny from-scratch Transformer and the toy sentences: three trials,
one pruned by a threshold pruner (a learning rate that diverges), the SQLite study read back with
Optuna, ``--resume`` adding a trial without redoing finished ones, best.yaml run by ``texttune run``,
the final comparison's leaderboard, and bad specs with one clear message.

The enqueued points make the search deterministic: trial 1 (lr 1000) blows the validation loss past
the pruner's upper bound at its first evaluation (step 2 of 4); trials 0 and 2 train to the end."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml
from conftest import TOY_ROWS
from test_run import assert_error, write_csv

optuna = pytest.importorskip("optuna", reason="texttune tune needs the [tune] extra (optuna)")

BASE = {"name": "toy", "model": {"name": "transformer", "d_model": 16, "nhead": 2, "num_layers": 1,
                                 "dim_feedforward": 32, "max_length": 32},
        "train": {"per_device_batch_size": 4, "max_steps": 4, "eval_every_steps": 2, "lr": 1e-2, "num_threads": 1,
                  "calibrate": False, "log_every_steps": 2}}
LRS = [0.01, 1000.0, 0.02]


def write_spec(folder: Path, data: Path, **extra) -> Path:
    base = {**BASE, "output_dir": str(folder / "out"),
            "data": {"train_file": str(data), "validation_file": str(data), "test_file": str(data)}}
    (folder / "base.yaml").write_text(yaml.safe_dump(base, sort_keys=False), encoding="utf-8")
    spec = {"kind": "tune", "name": "tiny", "base": "base.yaml", "metric": "loss", "trials": 3,
            "sampler": {"name": "random", "seed": 0}, "pruner": {"name": "threshold", "upper": 10.0},
            "search": {"train.lr": {"type": "float", "low": 1.0e-3, "high": 1.0e3, "log": True}},
            "enqueue": [{"train.lr": lr} for lr in LRS], "seeds": [1, 2], "study": "studies/tiny.db", **extra}
    path = folder / "tune.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def cli(*args) -> tuple[int, str, str]:
    """The CLI in-process, for module-scoped fixtures (no capsys there)."""
    from texttune.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def trials_of(study_file: Path):
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{study_file}")
    return study.get_trials(deepcopy=True)


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "toy.csv", TOY_ROWS)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, toy):
    """A study of 3 trials with its final comparison, then --resume to 4 trials without the final."""
    folder = tmp_path_factory.mktemp("tune")
    spec = write_spec(folder, toy)
    first = cli("tune", spec)
    assert first[0] == 0, first[2]
    root = folder / "out" / "tune-tiny"
    before = trials_of(folder / "studies" / "tiny.db")
    runs_before = sorted(p.name for p in root.glob("trials/*/*"))
    resumed = cli("tune", "--resume", root, "--trials", 4, "--no-final")
    assert resumed[0] == 0, resumed[2]
    return {"folder": folder, "spec": spec, "root": root, "first": first, "resumed": resumed, "before": before,
            "runs_before": runs_before, "after": trials_of(folder / "studies" / "tiny.db")}


def test_three_trials_one_pruned_in_a_sqlite_study_optuna_reads(tuned):
    study_file = tuned["folder"] / "studies" / "tiny.db"  # the spec's `study:`, relative to the spec
    assert study_file.read_bytes()[:16] == b"SQLite format 3\x00"
    trials = tuned["before"]
    assert [t.number for t in trials] == [0, 1, 2]
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED", "COMPLETE"]
    assert [t.params["train.lr"] for t in trials] == LRS
    pruned = trials[1]
    assert list(pruned.intermediate_values) == [2] and pruned.intermediate_values[2] > 10.0
    assert all(list(t.intermediate_values) == [2, 4] for t in (trials[0], trials[2]))


def test_every_trial_is_an_ordinary_run_recording_whether_it_was_pruned(tuned):
    root = tuned["root"]
    for trial in tuned["before"]:
        (run,) = list((root / "trials" / f"trial-{trial.number:03d}").iterdir())
        assert trial.user_attrs["run_dir"] == str(run)
        metrics = json.loads((run / "metrics.json").read_text())
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["train"]["lr"] == trial.params["train.lr"] and config["name"] == f"trial-{trial.number:03d}"
        assert (run / "model" / "config.json").is_file()
        if trial.state.name == "PRUNED":
            assert metrics["stop_reason"] == "pruned" and metrics["stopped_early"] and metrics["steps"] == 2
        else:
            assert metrics["stop_reason"] is None and metrics["steps"] == 4
            assert trial.value == pytest.approx(metrics["validation"]["loss"])


def test_the_summary_names_each_trial_the_best_and_where_things_are(tuned):
    _, out, err = tuned["first"]
    assert "Traceback" not in out + err
    trials = tuned["before"]
    best = min((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert f"best: trial {best.number}, validation loss {best.value:.4f}" in out
    assert out.count("complete") >= 2 and "pruned at step 2" in out
    root = tuned["root"]
    for where in (root / "best.yaml", root / f"final-trial-{best.number:03d}" / "leaderboard.md", root / "trials.csv"):
        assert str(where) in out.replace("\n", "")
    table = (root / "trials.csv").read_text().splitlines()
    assert table[0] == "number,state,value,train.lr,note,run" and len(table) == 1 + 4  # rewritten on resume


def test_best_yaml_is_the_base_plus_the_best_params_and_runs(tuned, run_cli, tmp_path):
    root = tuned["root"]
    best = min((t for t in tuned["before"] if t.state.name == "COMPLETE"), key=lambda t: t.value)
    text = (root / "best.yaml").read_text()
    assert text.startswith("# texttune tune: the best of 2 completed trials of study 'tiny'")
    assert f"# trial-{best.number:03d}: validation loss {best.value:.6g}" in text
    config = yaml.safe_load(text)
    assert config["train"] == {**BASE["train"], "lr": best.params["train.lr"]} and config["model"] == BASE["model"]
    code, out, err = run_cli("config", "validate", root / "best.yaml", tuned["spec"])
    assert code == 0, err
    assert "(classify)" in out and "(tune)" in out
    code, out, err = run_cli("run", root / "best.yaml", "--set", f"output_dir={tmp_path}", "--set", "train.max_steps=2")
    assert code == 0, err
    (run,) = list(tmp_path.iterdir())
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["lr"] == best.params["train.lr"]


def test_the_final_comparison_ranks_the_best_against_the_base_over_the_seeds(tuned):
    best = min((t for t in tuned["before"] if t.state.name == "COMPLETE"), key=lambda t: t.value)
    final = tuned["root"] / f"final-trial-{best.number:03d}"
    board = json.loads((final / "leaderboard.json").read_text())
    assert {row["cell"] for row in board["rows"]} == {"best", "base"}
    for row in board["rows"]:
        assert row["n"] == 2 and row["seeds"] == [1, 2]
        configs = [yaml.safe_load((final / run / "config.yaml").read_text()) for run in row["runs"]]
        lr = best.params["train.lr"] if row["cell"] == "best" else BASE["train"]["lr"]
        assert {c["train"]["lr"] for c in configs} == {lr} and {c["seed"] for c in configs} == {1, 2}
    assert (final / "comparison.html").is_file() and "| best |" in tuned["first"][1]


def test_resume_adds_trials_to_the_same_study_without_redoing_finished_ones(tuned):
    before, after = tuned["before"], tuned["after"]
    assert [t.number for t in after] == [0, 1, 2, 3]
    for old, new in zip(before, after):
        assert (new.state, new.value, new.params, new.datetime_complete) == \
            (old.state, old.value, old.params, old.datetime_complete)
    assert after[3].state.name in ("COMPLETE", "PRUNED") and after[3].user_attrs["run_dir"]
    runs_now = sorted(p.name for p in tuned["root"].glob("trials/*/*"))
    assert len(runs_now) == 4 and set(tuned["runs_before"]) < set(runs_now)  # one new run, the old ones kept
    _, out, _ = tuned["resumed"]
    assert "3 of 4 trials finished" in out and "| best |" not in out  # --no-final: no comparison


def test_a_new_study_never_reuses_a_tune_folder(tuned, run_cli):
    assert_error(run_cli("tune", tuned["spec"]), "a study is already here", "texttune tune --resume")


@pytest.mark.parametrize("change, args, parts", [
    ({"search": {"train.lrr": {"type": "float", "low": 0.001, "high": 0.1}}}, [],
     ["train.lrr: unknown field (did you mean 'lr'?)", "(search.train.lrr)"]),
    ({"search": {"train.lr": {"type": "float", "low": 0.1, "high": 0.001}}}, [],
     ["search.train.lr.high: must be above low (0.1), got 0.001"]),
    ({"search": {"train.lr": {"type": "flaot", "low": 0.001, "high": 0.1}}}, [],
     ["search.train.lr.type: unknown type 'flaot' (did you mean 'float'?)"]),
    ({"search": {"model.head.type": {"type": "categorical", "choices": ["linear", "mlpp"]}}}, [],
     ["model.head.type:", "'mlpp'", "(search.model.head.type)"]),
    ({"trails": 3}, [], ["trails: unknown field (did you mean 'trials'?)"]),
    ({"pruner": "medain"}, [], ["pruner: unknown name 'medain' (did you mean 'median'?)"]),
    ({"enqueue": [{"train.lrr": 0.01}]}, [], ["enqueue[0].train.lrr: not a search key (did you mean 'train.lr'?)"]),
    ({}, ["--set", "train.lrr=0.1"], ["train.lrr: unknown field (did you mean 'lr'?)"]),
])
def test_a_bad_spec_fails_before_any_trial_naming_the_key(tmp_path, toy, run_cli, change, args, parts):
    spec = write_spec(tmp_path, toy, **change)
    assert_error(run_cli("tune", spec, *args), *parts)
    assert not (tmp_path / "out").exists() and not (tmp_path / "studies").exists()
