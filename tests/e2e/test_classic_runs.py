"""Classic baselines end to end: ``texttune run`` with ``model.name: tfidf_lr | nbsvm`` writes an
ordinary run directory, ``predict`` and ``evaluate`` use it, and ``compare`` puts the baselines in the
leaderboard and marks models that do not beat them significantly."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
import yaml

from texttune import runs

WORDS = [(w, "pos") for w in ("wonderful", "great", "moving", "delightful", "superb", "charming")] + \
        [(w, "neg") for w in ("dull", "boring", "awful", "terrible", "clumsy", "tedious")]
NOUNS = ("film", "story", "script", "cast", "ending", "score", "plot")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    rows = [(f"a {word} {noun}" + " indeed" * (i % 3), label)
            for i, ((word, label), noun) in enumerate(itertools.product(WORDS, NOUNS))]
    random.Random(0).shuffle(rows)
    folder = tmp_path_factory.mktemp("classic-data")
    out = {}
    for name, part in (("train", rows[:50]), ("validation", rows[50:66]), ("test", rows[66:])):
        out[name] = folder / f"{name}.csv"
        out[name].write_text("text,label\n" + "".join(f"{t},{label}\n" for t, label in part), encoding="utf-8")
    return out


def data_args(files: dict[str, Path]) -> list[str]:
    return ["--set", f"data.train_file={files['train']}", "--set", f"data.validation_file={files['validation']}",
            "--set", f"data.test_file={files['test']}"]


@pytest.fixture(scope="module")
def tfidf_run(files, tmp_path_factory) -> Path:
    from texttune.cli import main

    out = tmp_path_factory.mktemp("classic-runs")
    code = main(["run", "--set", "model.name=tfidf_lr", "--set", "model.min_df=1", "--set", "model.cv_folds=3",
                 *data_args(files), "--set", f"output_dir={out}", "--set", "name=tfidf"])
    assert code == 0
    (run,) = out.iterdir()
    return run


def test_a_tfidf_run_writes_an_ordinary_run_directory(tfidf_run):
    metrics = runs.read_json(tfidf_run, runs.METRICS)
    assert metrics["test"]["accuracy"] >= 0.9  # the words decide the label: a linear model finds them
    assert metrics["fit"]["C"] in (0.1, 1.0, 10.0, 100.0) and len(metrics["fit"]["cv_accuracy"]) == 4
    assert metrics["params"]["trainable"] == metrics["params"]["total"] > 0
    assert metrics["temperature"] is not None and "calibrated" in metrics["validation"]
    predictions = runs.read_json(tfidf_run, runs.TEST_PREDICTIONS)
    assert len(predictions["predicted"]) == len(predictions["labels"]) == 84 - 66
    for name in (runs.REPORT, runs.LEARNING_CURVES, runs.CONFUSION_MATRIX, runs.DATA, runs.DATA_CHECKS):
        assert (tfidf_run / name).is_file(), name
    saved = sorted(p.name for p in (tfidf_run / runs.MODEL).iterdir())
    assert saved == ["classic.json", "classic.safetensors"]
    assert "tfidf_lr" in (tfidf_run / runs.REPORT).read_text(encoding="utf-8")


def test_the_cli_says_what_was_fitted(files, tmp_path, run_cli):
    code, out, err = run_cli("run", "--set", "model.name=nbsvm", *data_args(files), "--set", f"output_dir={tmp_path}",
                             "--set", "model.cv_folds=3")
    assert code == 0, err
    assert "fitting nbsvm on 50 training texts" in out + err
    assert "coefficients (C " in out + err


@pytest.mark.parametrize("setting, message", [
    ("strategy.name=lora", "strategies apply to neural models only"),
    ("model.C=[]", "model.C"),
    ("model.cv_folds=1", "model.cv_folds"),
])
def test_bad_classic_settings_are_refused_by_key(setting, message, files, tmp_path, run_cli):
    code, out, err = run_cli("run", "--set", "model.name=tfidf_lr", "--set", setting, *data_args(files),
                             "--set", f"output_dir={tmp_path}")
    assert code != 0
    assert message in out + err and "Traceback" not in out + err


def test_compare_marks_models_that_do_not_beat_the_best_baseline(files, tmp_path):
    from texttune.tasks.compare import run_comparison

    tiny = {"model.name": "transformer", "model.d_model": 8, "model.nhead": 2, "model.num_layers": 1,
            "model.dim_feedforward": 16, "model.max_length": 16, "train.per_device_batch_size": 8,
            "train.max_steps": 1, "train.lr": 1e-5, "train.num_threads": 1}
    spec = {"name": "baselines", "output_dir": str(tmp_path / "out"), "seeds": [1],
            "set": {"data.train_file": str(files["train"]), "data.validation_file": str(files["validation"]),
                    "data.test_file": str(files["test"])},
            "axes": {"model": {"tfidf": {"model.name": "tfidf_lr", "model.min_df": 1, "model.cv_folds": 3},
                               "nbsvm": {"model.name": "nbsvm", "model.cv_folds": 3},
                               "untrained": tiny}}}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    _, board = run_comparison(path)
    rows = {r["cell"]: r for r in board["rows"]}
    assert rows["tfidf"]["classic_baseline"] and rows["nbsvm"]["classic_baseline"]
    assert not rows["untrained"]["classic_baseline"]
    vs = rows["untrained"]["vs_best_baseline"]
    assert rows[vs["cell"]]["mean"] == max(rows["tfidf"]["mean"], rows["nbsvm"]["mean"])  # the best baseline
    assert vs["significantly_better"] is False and vs["delta"] < 0  # one step at lr 1e-5 learns nothing
    markdown = next((tmp_path / "out").rglob("leaderboard.md")).read_text()
    assert "**not significantly better**" in markdown and "classic baseline" in markdown


def test_a_classic_run_predicts_evaluates_and_refuses_export(tfidf_run, files, tmp_path, run_cli):
    import texttune

    model = texttune.load(tfidf_run)
    frame_texts = [line.split(",")[0] for line in files["test"].read_text().splitlines()[1:]]
    predicted = [model.label_names.index(p["label"]) for p in model.predict(frame_texts)]
    assert predicted == runs.read_json(tfidf_run, runs.TEST_PREDICTIONS)["predicted"]
    scores = model.predict(["a wonderful moving film"], top_k=2)[0]
    assert scores["label"] == "pos" and len(scores["top_k"]) == 2
    code, out, err = run_cli("predict", tfidf_run, "--text", "a dull boring plot")
    assert code == 0 and "neg" in out, err
    code, out, err = run_cli("evaluate", tfidf_run, "--data", files["test"], "--split", "test")
    assert code == 0, err
    accuracy = runs.read_json(tfidf_run, runs.METRICS)["test"]["accuracy"]
    assert f"accuracy: {accuracy:.4f}" in out  # the same test file scores as in the run
    code, out, err = run_cli("export", tfidf_run, tmp_path / "exported")
    assert code != 0 and "closed-form model" in out + err and not (tmp_path / "exported").exists()
    code, out, err = run_cli("predict", tfidf_run, "--text", "x", "--backend", "onnx")
    assert code != 0 and "torch backend only" in out + err and "Traceback" not in out + err
