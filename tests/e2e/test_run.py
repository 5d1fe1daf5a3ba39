"""``texttune run / predict / evaluate`` end to end on a tiny random BERT and eight toy sentences:
overfitting, the run directory's exact record, reproducibility, early stopping, resume, save → load,
the transformers pipeline, and bad input with one clear message.

Runs train on one CPU thread (``train.num_threads=1``): a tiny model is fastest there, and far
faster when another process holds the cores. Tests that only read a finished run share one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import TOY_ROWS
from texttune.config import config_to_dict
from texttune.tasks.classify import load_config
from texttune.errors import TexttuneError
from texttune.runs import RunResult, create_run_dir
from texttune.tasks.classify import run_experiment
from texttune.training.callbacks import Callback

RUN_NAME = re.compile(r"^\d{8}-\d{6}-(?P<name>.+?)(-\d+)?$")
TEXTS = ["what a wonderful film", "awful acting, i hated it", "a moving story", "boring"]


@pytest.fixture(scope="module", autouse=True)
def _isolated(tmp_path_factory):
    """Tokenization cache in a temporary folder; torch's thread count restored afterwards."""
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TEXTTUNE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield
    torch.set_num_threads(threads)


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "toy.csv", TOY_ROWS)


def overrides(model_dir: Path, output_dir: Path, data: Path, **extra) -> list[str]:
    """--set items: the toy CSV as train/validation/test, settings that overfit it in a few steps."""
    items = {
        "model.path": model_dir, "model.pooling": "mean", "model.head.dropout": 0,
        "output_dir": output_dir,
        "data.train_file": data, "data.validation_file": data, "data.test_file": data,
        "train.per_device_batch_size": 8, "train.lr": 1e-2, "train.warmup_ratio": 0,
        "train.num_threads": 1, "train.log_every_steps": 1,
        **extra,
    }
    return [f"{key}={value}" for key, value in items.items()]


def set_options(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def config_of(*args, **kwargs):
    return load_config(None, overrides(*args, **kwargs))


# Run A, shared by the tests that only read a finished run: 12 steps of batch 4 (6 epochs),
# evaluated every 4 steps, calibrated.
A_SETTINGS = {"train.per_device_batch_size": 4, "train.max_steps": 12, "train.eval_every_steps": 4}


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def a_config(tiny_model_dir, runs_dir, toy):
    return config_of(tiny_model_dir, runs_dir, toy, **A_SETTINGS)


@pytest.fixture(scope="module")
def finished(a_config) -> RunResult:
    return run_experiment(a_config, callbacks=[])


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def train_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in records(run_dir) if r["type"] == "train"}


def metrics_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))


def squash(text: str) -> str:
    """Console output without whitespace: rich wraps long paths at the terminal width."""
    return "".join(text.split())


def assert_error(result: tuple[int, str, str], *parts: str) -> str:
    code, out, err = result
    assert "Traceback" not in out + err
    assert code == 2, f"exit {code}\nstdout:\n{out}\nstderr:\n{err}"
    assert err.startswith("error:"), err
    for part in parts:
        assert part in err, f"{part!r} not in stderr:\n{err}"
    return err


class Interrupt(Callback):
    """Ctrl-C after a given optimizer step; remembers the run directory."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step
        self.run_dir: Path | None = None

    def on_train_begin(self, trainer) -> None:
        self.run_dir = trainer.checkpoint_dir.parent  # the loop writes checkpoints into the run directory

    def on_step_end(self, trainer) -> None:
        if trainer.state.global_step == self.at_step:
            raise KeyboardInterrupt


def interrupted_run(config, at_step: int) -> Path:
    interrupt = Interrupt(at_step)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, callbacks=[interrupt])
    assert interrupt.run_dir is not None and not (interrupt.run_dir / "metrics.json").exists()
    return interrupt.run_dir


# --------------------------------------------------------------------------- overfitting, through the CLI


def test_overfits_the_toy_examples_through_the_cli(run_cli, tiny_model_dir, toy_csv, tmp_path):
    sets = overrides(tiny_model_dir, tmp_path / "runs", toy_csv, **{"train.epochs": 8, "name": "overfit"})
    code, out, err = run_cli("run", *set_options(sets))
    assert "Traceback" not in out + err
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert f"Run{run_dir}" in squash(out) and f"report:{run_dir / 'report.html'}" in squash(out)
    # What the seconds before training go to, in order, on stdout with the rest of the run's lines.
    said = [out.index(line) for line in (f"new run directory: {run_dir}", f"loading data: {toy_csv} ...",
                                         "checking data: train 8, validation 8, test 8 rows (policy warn) ...",
                                         f"loading model {tiny_model_dir} ...", "tokenizing 24 texts (max_length")]
    assert said == sorted(said)
    metrics = metrics_of(run_dir)
    assert metrics["validation"]["accuracy"] == 1.0
    assert metrics["test"]["accuracy"] == 1.0
    assert metrics["steps"] == 8  # one batch of 8 per epoch
    evals = [r for r in records(run_dir) if r["type"] == "eval"]
    assert [r["step"] for r in evals] == list(range(1, 9))  # an evaluation per epoch by default
    assert evals[-1]["loss"] < 0.5 * evals[0]["loss"]


def test_each_step_before_training_is_announced_before_training_starts(tiny_model_dir, toy, tmp_path, caplog):
    """Loading a model and checking data take seconds each: the run says what it is doing, in order,
    through texttune's log (which the CLI prints), before the loop's first line."""
    class AtStart(Callback):
        said: tuple[str, ...] = ()

        def on_train_begin(self, trainer) -> None:
            self.said = tuple(record.getMessage() for record in caplog.records if record.name == "texttune")

    caplog.set_level(logging.INFO, logger="texttune")
    spy = AtStart()
    run_experiment(config_of(tiny_model_dir, tmp_path, toy, **{"train.max_steps": 1}), callbacks=[spy])
    steps = ["new run directory: ", "loading data: ", "checking data: train 8, validation 8, test 8 rows",
             "loading model ", "tokenizing 24 texts"]
    at = [next((i for i, message in enumerate(spy.said) if message.startswith(step)), None) for step in steps]
    assert None not in at and at == sorted(at), spy.said


def test_every_file_of_a_run_gets_the_users_umask(tiny_model_dir, toy, tmp_path):
    """Files written through mkstemp (atomic writes, and safetensors 0.8 for every .safetensors file) came
    out 0600: a model shared on a team's disk could not be read by the others."""
    previous = os.umask(0o022)
    try:
        result = run_experiment(config_of(tiny_model_dir, tmp_path, toy, **{
            "train.max_steps": 2, "train.eval_every_steps": 1, "train.keep_checkpoints": True}), callbacks=[])
    finally:
        os.umask(previous)
    run_dir = result.run_dir
    files = {p.relative_to(run_dir).as_posix(): p.stat().st_mode & 0o777 for p in run_dir.rglob("*")}
    for name in ("metrics.json", "config.yaml", "environment.json", "report.html", "learning_curves.png",
                 "model/model.safetensors", "model/config.json", "checkpoints/last/model.safetensors",
                 "checkpoints/last/optimizer.safetensors", "checkpoints/best/model.safetensors"):
        assert files[name] == 0o644, (name, oct(files[name]))
    assert {mode for mode in files.values()} <= {0o644, 0o755}, {k: oct(v) for k, v in files.items()}
    assert files["model"] == 0o755 and files["checkpoints/last"] == 0o755


# --------------------------------------------------------------------------- the run directory


def test_run_directory_holds_exactly_the_record(finished, runs_dir):
    run_dir = finished.run_dir
    assert run_dir.parent == runs_dir
    match = RUN_NAME.match(run_dir.name)
    assert match and match["name"] == "experiment", run_dir.name
    top = {p.name for p in run_dir.iterdir()}
    assert top == {
        "config.yaml", "environment.json", "data.json", "data_checks.json", "labels.json", "metrics.jsonl",
        "metrics.json", "model", "learning_curves.png", "confusion_matrix.png", "reliability.png",
        "report.html", "test_predictions.json",
    }  # in particular no checkpoints/ (train.keep_checkpoints is false)
    model_files = {p.name for p in (run_dir / "model").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= model_files
    assert model_files & {"tokenizer.json", "vocab.txt"}
    extra = model_files - {"config.json", "model.safetensors", "special_tokens_map.json", "vocab.txt"}
    assert all(name.startswith("tokenizer") for name in extra), model_files
    leftovers = [p for p in run_dir.rglob("*") if p.name.startswith(".") or p.name.endswith((".tmp", ".old"))]
    assert leftovers == []
    for name in ("learning_curves.png", "confusion_matrix.png", "reliability.png"):
        assert (run_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((run_dir / "labels.json").read_text()) == ["neg", "pos"]
    model_config = json.loads((run_dir / "model" / "config.json").read_text())
    assert model_config["id2label"] == {"0": "neg", "1": "pos"}
    environment = json.loads((run_dir / "environment.json").read_text())
    assert environment["device"] == "cpu"
    assert json.loads((run_dir / "data.json").read_text())["splits"]["train"]["rows"] == 8


def test_a_run_directory_is_never_reused(a_config, tmp_path):
    config = a_config.model_copy(update={"output_dir": tmp_path, "name": "same name"})
    made = [create_run_dir(config) for _ in range(3)]
    assert len({p.name for p in made}) == 3 and all(p.is_dir() and p.parent == tmp_path for p in made)
    assert all(RUN_NAME.match(p.name)["name"] == "same-name" for p in made)


def test_metrics_json_is_complete(finished):
    metrics = metrics_of(finished.run_dir)
    assert metrics == json.loads(json.dumps(finished.metrics))  # what the API returns is what is saved
    for split in ("validation", "test"):
        scores = metrics[split]
        for key in ("accuracy", "f1_macro", "log_loss", "ece", "per_class", "confusion_matrix", "calibrated"):
            assert key in scores, (split, key)
        assert scores["num_examples"] == 8 and sum(map(sum, scores["confusion_matrix"])) == 8
    params = metrics["params"]
    assert params["trainable"] == params["total"] > 0  # the full strategy trains everything
    assert metrics["best"]["metric"] == "accuracy" and metrics["best"]["step"] in (4, 8, 12)
    assert metrics["steps"] == 12 and metrics["epochs"] == 6.0 and metrics["stopped_early"] is False
    assert metrics["temperature"] > 0
    for key in ("wall_time_s", "peak_memory_mb", "train_samples_per_s"):
        assert metrics[key] > 0, key


def test_metrics_jsonl_has_train_and_eval_records_in_step_order(finished):
    logged = records(finished.run_dir)
    train = [r for r in logged if r["type"] == "train"]
    evals = [r for r in logged if r["type"] == "eval"]
    assert [r["step"] for r in train] == list(range(1, 13))
    assert [r["step"] for r in evals] == [4, 8, 12]
    steps = [r["step"] for r in logged]
    assert steps == sorted(steps)
    for record in train:
        assert record["loss"] > 0 and record["lr"] >= 0
        assert record["grad_norm"] > 0 and record["samples_per_s"] > 0
    assert train[-1]["lr"] == 0.0  # linear decay ends at 0
    best = metrics_of(finished.run_dir)["best"]
    assert best["value"] == next(r["accuracy"] for r in evals if r["step"] == best["step"])


def test_config_yaml_reloads_to_the_same_config(finished, a_config):
    reloaded = load_config(finished.run_dir / "config.yaml")
    assert config_to_dict(reloaded) == config_to_dict(a_config)
    assert reloaded == a_config


# --------------------------------------------------------------------------- reproducibility


def test_same_seed_same_numbers_other_seed_other_numbers(finished, a_config):
    again = run_experiment(a_config, callbacks=[])
    assert again.run_dir != finished.run_dir
    first, second = metrics_of(finished.run_dir), metrics_of(again.run_dir)
    for split in ("validation", "test"):
        assert second[split] == first[split], split  # every score, bit for bit
    assert second["best"] == first["best"] and second["temperature"] == first["temperature"]
    assert train_losses(again.run_dir) == train_losses(finished.run_dir)

    other = run_experiment(a_config.model_copy(update={"seed": a_config.seed + 1}), callbacks=[])
    other_losses = train_losses(other.run_dir)
    assert other_losses.keys() == train_losses(finished.run_dir).keys()
    assert all(other_losses[s] != loss for s, loss in train_losses(finished.run_dir).items())


# --------------------------------------------------------------------------- early stopping


def test_early_stopping_restores_the_best_weights(tiny_model_dir, toy, tmp_path):
    # Validation holds the training sentences with every label flipped: the better the model fits
    # train, the worse its validation loss gets, so the first evaluation is the best.
    flip = {"pos": "neg", "neg": "pos"}
    flipped = write_csv(tmp_path / "flipped.csv", [(text, flip[label]) for text, label in TOY_ROWS])
    config = config_of(tiny_model_dir, tmp_path / "runs", toy, **{
        "data.validation_file": flipped, "train.metric": "loss", "train.eval_every_steps": 1,
        "train.early_stopping_patience": 2, "train.max_steps": 20, "train.calibrate": False,
        "train.keep_checkpoints": True,
    })
    result = run_experiment(config, callbacks=[])
    metrics = metrics_of(result.run_dir)
    evals = [r for r in records(result.run_dir) if r["type"] == "eval"]
    assert metrics["stopped_early"] is True and metrics["stop_reason"] == "early_stopping"
    assert metrics["steps"] < 20 and metrics["steps"] == evals[-1]["step"]
    best = min(evals, key=lambda r: r["loss"])
    assert metrics["best"] == {"step": best["step"], "metric": "loss", "value": best["loss"]}
    assert len(evals) == [r["step"] for r in evals].index(best["step"]) + 1 + 2  # patience 2, then stop
    # The final model is the best step's: same validation numbers, same weights.
    assert metrics["validation"]["log_loss"] == pytest.approx(best["log_loss"], abs=1e-6)
    assert metrics["validation"]["log_loss"] != pytest.approx(evals[-1]["log_loss"], abs=1e-6)
    saved = load_file(str(result.run_dir / "model" / "model.safetensors"))
    best_weights = load_file(str(result.run_dir / "checkpoints" / "best" / "model.safetensors"))
    assert saved.keys() == best_weights.keys()
    assert all(torch.equal(saved[k], best_weights[k]) for k in saved)
    assert (result.run_dir / "checkpoints" / "last" / "trainer_state.json").is_file()  # kept on request


# --------------------------------------------------------------------------- resume


def test_resume_after_an_interrupt_matches_the_uninterrupted_run(finished, a_config, run_cli):
    run_dir = interrupted_run(a_config, at_step=7)  # the last checkpoint is step 4's
    assert (run_dir / "checkpoints" / "last" / "trainer_state.json").is_file()

    # A label set that changed since the checkpoint is refused, naming the run and both sets.
    labels = run_dir / "labels.json"
    original = labels.read_text()
    labels.write_text(json.dumps(["a", "b", "c"]))
    assert_error(run_cli("run", "--resume", run_dir), str(run_dir), "['a', 'b', 'c']", "['neg', 'pos']")
    labels.write_text(original)

    resumed = run_experiment(resume=run_dir, callbacks=[])
    assert resumed.run_dir == run_dir
    a, b = metrics_of(finished.run_dir), metrics_of(run_dir)
    for split in ("validation", "test"):
        for key in ("accuracy", "log_loss", "f1_macro"):
            assert b[split][key] == pytest.approx(a[split][key], abs=1e-6), (split, key)
    assert b["best"]["step"] == a["best"]["step"] and b["steps"] == 12
    assert train_losses(run_dir) == pytest.approx(train_losses(finished.run_dir), abs=1e-6)
    keys = [(r["type"], r["step"]) for r in records(run_dir)]
    assert len(keys) == len(set(keys)), "metrics.jsonl repeats steps after the resume"
    assert keys == [(r["type"], r["step"]) for r in records(finished.run_dir)]
    assert not (run_dir / "checkpoints").exists()


def test_resume_through_the_cli(finished, a_config, run_cli):
    run_dir = interrupted_run(a_config, at_step=6)
    code, out, err = run_cli("run", "--resume", run_dir)
    assert "Traceback" not in out + err
    assert code == 0, err
    assert f"Run{run_dir}" in squash(out)
    a, b = metrics_of(finished.run_dir), metrics_of(run_dir)
    assert b["validation"]["log_loss"] == pytest.approx(a["validation"]["log_loss"], abs=1e-6)
    assert train_losses(run_dir) == pytest.approx(train_losses(finished.run_dir), abs=1e-6)


def test_resume_refuses_a_finished_run(finished, run_cli):
    assert_error(run_cli("run", "--resume", finished.run_dir), str(finished.run_dir), "has finished")


def test_resume_without_a_checkpoint(a_config, run_cli, tmp_path):
    run_dir = interrupted_run(a_config, at_step=2)  # before the first evaluation (step 4)
    assert_error(run_cli("run", "--resume", run_dir), str(run_dir), "no checkpoint to resume from")
    assert_error(run_cli("run", "--resume", tmp_path), str(tmp_path), "not a texttune run directory")


def test_resume_takes_no_config_or_overrides(finished, run_cli):
    assert_error(run_cli("run", "--resume", finished.run_dir, "--set", "train.lr=1"),
                 "give no CONFIG or --set")


# --------------------------------------------------------------------------- using the saved model


def test_saved_model_gives_the_in_memory_logits(finished):
    import texttune

    predictor = texttune.load(finished.run_dir)
    model, tokenizer = finished.model.eval(), finished.tokenizer
    with torch.no_grad():
        expected = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(predictor.logits(TEXTS), expected, atol=1e-5, rtol=0)
    assert predictor.label_names == ["neg", "pos"]
    # Scores are the temperature-scaled probabilities of those logits.
    temperature = finished.metrics["temperature"]
    predicted = predictor.predict(TEXTS, top_k=2)
    probs = torch.softmax(expected / temperature, dim=-1)
    for row, item in zip(probs, predicted):
        assert item["label"] == ["neg", "pos"][int(row.argmax())]
        assert item["score"] == pytest.approx(float(row.max()), abs=1e-5)
        other = "pos" if item["label"] == "neg" else "neg"
        assert [t["label"] for t in item["top_k"]] == [item["label"], other]


def test_predict_texts_through_the_cli(finished, run_cli):
    import texttune

    code, out, err = run_cli("predict", finished.run_dir, "--text", TEXTS[0], "--text", TEXTS[1],
                             "--top-k", "2")
    assert code == 0, err
    lines = out.strip().splitlines()
    expected = texttune.load(finished.run_dir).predict(TEXTS[:2])
    assert len(lines) == 2
    for line, text, item in zip(lines, TEXTS, expected):
        match = re.fullmatch(r"(\S+)\s+(\d\.\d{4})\s+(.+?)\s+\(also: (\S+) (\d\.\d{3})\)", line.strip())
        assert match, line
        label, score, shown, other, _ = match.groups()
        assert (label, shown) == (item["label"], text)
        assert float(score) == pytest.approx(item["score"], abs=1e-4)
        assert {label, other} == {"neg", "pos"}


def test_predict_prints_one_tab_separated_line_per_text(finished, run_cli):
    long_text = "a film " * 30
    code, out, err = run_cli("predict", finished.run_dir, "--text", TEXTS[0], "--text", long_text)
    assert code == 0, err
    lines = out.rstrip("\n").split("\n")
    assert len(lines) == 2
    # Whitespace runs (newlines, tabs) are collapsed so each text stays on its own tab-separated line.
    assert [line.split("\t")[2] for line in lines] == [TEXTS[0], " ".join(long_text.split())]


def test_predict_a_file_to_jsonl_without_overwriting(finished, run_cli, tmp_path):
    source = write_csv(tmp_path / "in.csv", [(t, "") for t in TEXTS])
    target = tmp_path / "out.jsonl"
    code, out, err = run_cli("predict", finished.run_dir, "--input", source, "--output", target,
                             "--top-k", "2")
    assert code == 0, err
    rows = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == TEXTS
    for row in rows:
        assert row["label"] in ("neg", "pos") and 0.5 <= row["score"] <= 1
        assert [t["label"] for t in row["top_k"]][0] == row["label"] and len(row["top_k"]) == 2

    code, out, err = run_cli("predict", finished.run_dir, "--input", source, "--output", target)
    assert code == 0, err
    assert [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()] == rows  # untouched
    written = tmp_path / "out-1.jsonl"
    assert str(written) in squash(out)
    assert len(written.read_text(encoding="utf-8").splitlines()) == len(TEXTS)


def test_predict_input_without_the_text_column_names_the_flag(finished, run_cli, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("sentence\nwhat a film\n", encoding="utf-8")
    err = assert_error(run_cli("predict", finished.run_dir, "--input", source),
                       f"{source}: no column 'text' (--text-column); the columns are: sentence")
    assert "data.text_column" not in err
    assert_error(run_cli("predict", finished.run_dir, "--input", source, "--text-column", "sentence",
                         "--text-pair-column", "second"), "no column 'second' (--text-pair-column)")


def test_transformers_pipeline_agrees_with_texttune_load(finished):
    import texttune
    import texttune.models  # noqa: F401  (registers the architecture with the Auto classes)
    from transformers import pipeline

    classifier = pipeline("text-classification", model=str(finished.run_dir / "model"), device="cpu")
    labels = [item["label"] for item in classifier(TEXTS)]
    assert labels == [item["label"] for item in texttune.load(finished.run_dir).predict(TEXTS)]


def printed_scores(out: str) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(r"^\s+(\w+): (\d+\.\d{4})$", out, re.MULTILINE)}


def test_evaluate_a_saved_model_on_a_csv(finished, run_cli, toy):
    code, out, err = run_cli("evaluate", finished.run_dir, "--data", toy)
    assert code == 0, err
    assert {"accuracy", "f1_macro", "log_loss", "ece"} <= printed_scores(out).keys(), out

    # With the file as the test split itself, the numbers are the run's own test numbers, whatever
    # order the dataset lists its labels in (they are matched to the model's by name).
    whole = ["--set", f"data.test_file={toy}", "--set", f"data.validation_file={toy}"]
    expected = metrics_of(finished.run_dir)["test"]
    for extra in ([], ["--set", "data.label_names=[pos, neg]"]):
        code, out, err = run_cli("evaluate", finished.run_dir, "--data", toy, *whole, *extra)
        assert code == 0, err
        assert "toy/test: 8 examples" in out
        scores = printed_scores(out)
        for key in ("accuracy", "f1_macro", "log_loss"):
            assert scores[key] == pytest.approx(expected[key], abs=6e-5), (extra, key)


def test_evaluate_a_csv_scores_every_row(finished, run_cli, toy):
    code, out, err = run_cli("evaluate", finished.run_dir, "--data", toy)
    assert code == 0, err
    assert "8 examples" in out, out


def test_evaluate_with_labels_the_model_does_not_know(finished, run_cli, tmp_path):
    rows = TOY_ROWS + [("so so", "meh"), ("neither here nor there", "meh"), ("it was fine i guess", "meh")]
    data = write_csv(tmp_path / "other.csv", rows)
    assert_error(run_cli("evaluate", finished.run_dir, "--data", data),
                 "labels the model does not know: ['meh']", "['neg', 'pos']")


# --------------------------------------------------------------------------- bad input


def test_missing_model_folder(run_cli, toy, tmp_path):
    args = set_options(["model.path=/nonexistent/model", f"data.train_file={toy}", f"output_dir={tmp_path}"])
    err = assert_error(run_cli("run", *args), "/nonexistent/model: model folder not found")
    assert len(err.strip().splitlines()) == 1


def test_output_dir_under_a_file(run_cli, tiny_model_dir, toy, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    args = set_options(overrides(tiny_model_dir, blocker / "runs", toy))
    err = assert_error(run_cli("run", *args), f"{blocker / 'runs'}: cannot create the run directory",
                       "set output_dir to a writable folder")
    assert len(err.strip().splitlines()) == 1


def test_read_only_output_dir(run_cli, tiny_model_dir, toy, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: a read-only folder is still writable")
        assert_error(run_cli("run", *set_options(overrides(tiny_model_dir, locked / "runs", toy))),
                     f"{locked / 'runs'}: cannot create the run directory")
    finally:
        locked.chmod(0o700)


def test_unknown_strategy(run_cli):
    err = assert_error(run_cli("run", "--set", "strategy.name=lorax"),
                       "strategy", "lorax", "expected one of", "'full'", "in --set strategy.name=lorax")
    assert len(err.strip().splitlines()) == 1


def test_unknown_strategy_names_the_name(run_cli):
    assert_error(run_cli("run", "--set", "strategy.name=lorax"), "unknown name 'lorax'")


def test_unknown_metric(run_cli):
    err = assert_error(run_cli("run", "--set", "train.metric=acc"), "train.metric: unknown metric 'acc'",
                       "known: accuracy", "--set train.metric=acc")
    assert len(err.strip().splitlines()) == 1


def test_unknown_metric_suggests_the_close_name(run_cli):
    assert_error(run_cli("run", "--set", "train.metric=acc"), "did you mean 'accuracy'")


def test_predict_on_a_folder_without_a_model(run_cli, tmp_path):
    err = assert_error(run_cli("predict", tmp_path, "--text", "hello"), f"{tmp_path}: no trained model here")
    assert len(err.strip().splitlines()) == 1
    assert_error(run_cli("predict", tmp_path / "missing", "--text", "hello"), "no such run directory")


def test_predict_on_an_interrupted_run_has_no_model(a_config, run_cli):
    # An interrupted run has checkpoints but no model/ yet.
    run_dir = interrupted_run(a_config.model_copy(update={"name": "cut"}), at_step=1)
    assert_error(run_cli("predict", run_dir, "--text", "hello"), "no trained model here")
    shutil.rmtree(run_dir)


def test_load_errors_are_texttune_errors(tmp_path):
    import texttune

    with pytest.raises(TexttuneError, match="no such run directory"):
        texttune.load(tmp_path / "nope")


def test_test_predictions_record_every_test_example(finished):
    record = json.loads((finished.run_dir / "test_predictions.json").read_text(encoding="utf-8"))
    assert len(record["rows"]) == len(record["labels"]) == len(record["predicted"]) == len(TOY_ROWS)
    accuracy = sum(p == y for p, y in zip(record["predicted"], record["labels"])) / len(TOY_ROWS)
    assert accuracy == pytest.approx(finished.metrics["test"]["accuracy"])


def test_the_quickstart_config_trains_on_your_own_file(run_cli, tmp_path):
    """The README's quick start pointed at your own CSV: the file on the command line replaces the
    config's built-in dataset (it failed with "set data.dataset or data.train_file, not both")."""
    rows = [(f"{text} number {i}", label) for i in range(6) for text, label in TOY_ROWS]
    data = write_csv(tmp_path / "mine.csv", rows)
    quickstart = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"
    code, out, err = run_cli("run", quickstart, *set_options([
        f"data.train_file={data}", f"output_dir={tmp_path / 'runs'}",
        "train.max_steps=1", "train.num_threads=1", "model.max_length=16",
    ]))
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    config = json.loads(json.dumps(load_config(run_dir / "config.yaml").data.model_dump(mode="json")))
    assert config["dataset"] is None and config["train_file"] == str(data)
    splits = json.loads((run_dir / "data.json").read_text())["splits"]
    assert splits["train"]["file"] == str(data)
    assert sum(split["rows"] for split in splits.values()) == len(rows)  # all three carved from the file


@pytest.mark.parametrize(("at_step", "resumable"), [(6, True), (2, False)])  # checkpoints at steps 4, 8, 12
def test_ctrl_c_through_the_cli_names_the_run_directory(at_step, resumable, run_cli, tiny_model_dir, toy,
                                                         tmp_path, monkeypatch):
    """The run directory is printed when the run starts, and Ctrl-C says how to continue it (or that it
    cannot be continued), with the directory itself rather than "the run directory printed above"."""
    from texttune.training.callbacks import ProgressCallback

    def interrupt(self, trainer):
        if trainer.state.global_step == at_step:
            raise KeyboardInterrupt

    monkeypatch.setattr(ProgressCallback, "on_step_end", interrupt)
    code, out, err = run_cli("run", *set_options(overrides(tiny_model_dir, tmp_path, toy, **A_SETTINGS)))
    assert code == 130 and "Traceback" not in out + err
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert f"newrundirectory:{run_dir}" in squash(out)
    if resumable:
        assert f"interrupted; continue with: texttune run --resume {run_dir}" in err
        monkeypatch.undo()
        code, out, err = run_cli("run", "--resume", run_dir)
        assert code == 0, err
        assert f"resumingtherundirectory:{run_dir}" in squash(out)
    else:
        assert f"interrupted before the first checkpoint: {run_dir} cannot be resumed" in err


def test_train_test_overlap_is_printed_before_training_and_shown_beside_the_score(run_cli, tiny_model_dir,
                                                                                    tmp_path):
    """Under the default policy (warn) a test split sharing texts with train trains, but the console
    says so before training, and the leaderboard carries it next to the score it inflates."""
    train = write_csv(tmp_path / "train.csv", [(f"{t} {i}", lab) for i in range(3) for t, lab in TOY_ROWS])
    test = write_csv(tmp_path / "test.csv", [(f"{t} 0", lab) for t, lab in TOY_ROWS[:3]] + TOY_ROWS[3:])
    validation = write_csv(tmp_path / "validation.csv", [(f"{t} v", lab) for t, lab in TOY_ROWS])
    sets = overrides(tiny_model_dir, tmp_path / "runs", train, **{"data.test_file": test, "data.validation_file": validation,
                                                                "train.max_steps": 2})
    code, out, err = run_cli("run", *set_options(sets))
    assert code == 0, err
    before_training = out[: out.index("Run")]  # the result table comes after training
    assert "data checks: 1 finding change what the scores on this data mean" in before_training
    assert "train∩test: 3 distinct texts in both train and test (3 rows in train, 3 in test)" in before_training
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "data.json").read_text())["caveats"] == [
        "train∩test: 3 distinct texts in both train and test (3 rows in train, 3 in test)"]
    code, out, err = run_cli("runs", "compare", run_dir, "--output", tmp_path / "board")
    assert code == 0, err
    assert "train∩test: 3 distinct texts in both train and test" in out
    assert "train∩test: 3 distinct texts" in (tmp_path / "board" / "comparison.html").read_text()
    assert "train∩test" in (tmp_path / "board" / "leaderboard.csv").read_text()
