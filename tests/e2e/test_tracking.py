"""``train.report_to`` end to end: a tiny run through the CLI copied to TensorBoard and MLflow and read
back with the libraries themselves; a missing library's message; a failing tracker that costs no run;
an interrupted run whose resume continues the same tracked run.

Tests that need the libraries skip without them (extra ``texttune[tracking]``); the missing-library
test needs none. MLflow logs to its default here: sqlite ``<output_dir>/mlflow.db``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from texttune.tasks.classify import load_config, run_experiment
from texttune.training.callbacks import Callback

# 6 steps of batch 4 on the eight toy sentences, a log line every step, an evaluation every 2.
SETTINGS = {"train.per_device_batch_size": 4, "train.max_steps": 6, "train.eval_every_steps": 2,
            "train.log_every_steps": 1, "train.lr": 1e-2, "train.warmup_ratio": 0, "train.num_threads": 1}
BOTH = {"train.report_to": "[tensorboard,mlflow]"}


@pytest.fixture(scope="module", autouse=True)
def _no_mlflow_settings():
    """MLflow's own environment variables would send the runs elsewhere: the default store is tested."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
            mp.delenv(name, raising=False)
        yield


def needs_tracking_libraries() -> None:
    for module in ("tensorboard", "mlflow", "sqlalchemy", "alembic"):
        pytest.importorskip(module, reason="the tracking extra (pip install 'texttune[tracking]')")


def overrides(model_dir: Path, output_dir: Path, data: Path, **extra) -> list[str]:
    items = {"model.path": model_dir, "model.pooling": "mean", "model.head.dropout": 0, "output_dir": output_dir,
             "data.train_file": data, "data.validation_file": data, "data.test_file": data, **SETTINGS, **extra}
    return [f"{key}={value}" for key, value in items.items()]


def set_options(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def run_dirs(output_dir: Path) -> list[Path]:
    return [p for p in output_dir.iterdir() if (p / "config.yaml").is_file()]


def records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def squash(text: str) -> str:
    return "".join(text.split())  # rich wraps long lines at the terminal width


def event_accumulator(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return accumulator


def mlflow_runs(output_dir: Path, monkeypatch) -> list:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{output_dir / 'mlflow.db'}")  # only to read back
    return mlflow.search_runs(experiment_names=["texttune"], output_format="list")


def history(output_dir: Path, run_id: str, key: str) -> dict[int, float]:
    from mlflow.tracking import MlflowClient

    points = MlflowClient(f"sqlite:///{output_dir / 'mlflow.db'}").get_metric_history(run_id, key)
    steps = [m.step for m in points]
    assert len(steps) == len(set(steps)), f"{key} logged twice at a step: {sorted(steps)}"
    return {m.step: m.value for m in points}


# --------------------------------------------------------------------------- one tracked run, through the CLI


@pytest.fixture(scope="module")
def tracked(tiny_model_dir, toy, tmp_path_factory) -> Path:
    needs_tracking_libraries()
    from texttune.cli import main

    output = tmp_path_factory.mktemp("runs")
    assert main(["run", *set_options(overrides(tiny_model_dir, output, toy, **BOTH))]) == 0
    (run_dir,) = run_dirs(output)
    return run_dir


def test_tensorboard_holds_every_logged_scalar_and_the_config(tracked):
    accumulator = event_accumulator(tracked / "tensorboard")
    losses = {e.step: e.value for e in accumulator.Scalars("train/loss")}
    assert losses == {r["step"]: pytest.approx(r["loss"], rel=1e-6) for r in records(tracked, "train")}
    assert sorted(losses) == list(range(1, 7))
    for key in ("lr", "grad_norm", "samples_per_s"):
        assert len(accumulator.Scalars(f"train/{key}")) == 6, key
    accuracy = {e.step: e.value for e in accumulator.Scalars("validation/accuracy")}
    assert accuracy == {r["step"]: pytest.approx(r["accuracy"]) for r in records(tracked, "eval")}
    final = json.loads((tracked / "metrics.json").read_text(encoding="utf-8"))
    (test_accuracy,) = accumulator.Scalars("final/test/accuracy")
    assert test_accuracy.value == pytest.approx(final["test"]["accuracy"]) and test_accuracy.step == 6

    text = accumulator.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "lr: 0.01" in text and "report_to:" in text
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["train.lr"].number_value == pytest.approx(0.01)
    assert hparams["model.name"].string_value == "pretrained"
    assert hparams["train.adam_betas"].string_value == "[0.9, 0.999]"


def test_mlflow_holds_the_run_its_config_metrics_and_artifacts(tracked, monkeypatch):
    from mlflow.tracking import MlflowClient

    output = tracked.parent
    (run,) = mlflow_runs(output, monkeypatch)
    assert run.info.run_name == tracked.name and run.info.status == "FINISHED"
    params = run.data.params
    assert float(params["train.lr"]) == 0.01 and params["model.name"] == "pretrained"
    assert params["train.report_to"] == '["tensorboard", "mlflow"]' and params["train.tracking_dir"] == "null"
    final = json.loads((tracked / "metrics.json").read_text(encoding="utf-8"))
    assert run.data.metrics["final/test/accuracy"] == final["test"]["accuracy"]
    assert run.data.metrics["final/params/trainable"] == final["params"]["trainable"]
    assert run.data.tags["texttune.run_dir"] == str(tracked.resolve())

    run_id = run.info.run_id
    assert history(output, run_id, "train/loss") == {r["step"]: r["loss"] for r in records(tracked, "train")}
    evals = records(tracked, "eval")
    assert history(output, run_id, "validation/accuracy") == {r["step"]: r["accuracy"] for r in evals}
    artifacts = {f.path for f in MlflowClient(f"sqlite:///{output / 'mlflow.db'}").list_artifacts(run_id)}
    assert artifacts == {"report.html", "learning_curves.png", "confusion_matrix.png", "reliability.png",
                         "config.yaml", "metrics.json"}
    assert (output / "mlartifacts").is_dir()  # beside the store, not in the working directory


def test_the_run_directory_records_where_it_was_tracked(tracked):
    where = json.loads((tracked / "tracking.json").read_text(encoding="utf-8"))
    assert where["tensorboard"] == {"dir": str((tracked / "tensorboard").resolve())}
    assert where["mlflow"]["tracking_uri"] == f"sqlite:///{(tracked.parent / 'mlflow.db').resolve()}"


# --------------------------------------------------------------------------- what goes wrong


@pytest.mark.parametrize("name, package", [("tensorboard", "tensorboard"), ("mlflow", "mlflow-skinny")])
def test_a_missing_library_is_one_clear_error_before_any_work(run_cli, monkeypatch, tiny_model_dir, toy,
                                                              tmp_path, name, package):
    monkeypatch.setitem(sys.modules, name, None)  # `import name` now fails as if it were not installed
    output = tmp_path / "runs"
    code, out, err = run_cli("run", *set_options(overrides(tiny_model_dir, output, toy,
                                                           **{"train.report_to": f"[{name}]"})))
    assert "Traceback" not in out + err
    assert code == 2, err
    message = f"train.report_to: {name} needs the package {package}: pip install 'texttune[tracking]'"
    assert squash(message) in squash(err), err
    assert not output.exists() or run_dirs(output) == []  # no half-made run directory


def test_an_unknown_tracker_is_refused_naming_the_key(run_cli, tiny_model_dir, toy, tmp_path):
    code, out, err = run_cli("run", *set_options(overrides(tiny_model_dir, tmp_path, toy,
                                                           **{"train.report_to": "[tensorbord]"})))
    assert code == 2 and "Traceback" not in out + err
    assert "train.report_to: unknown tracker 'tensorbord' (did you mean 'tensorboard'?)" in err


def test_a_failing_tracker_warns_once_and_the_run_finishes(run_cli, tiny_model_dir, toy, tmp_path):
    pytest.importorskip("tensorboard")
    # A folder under a file cannot be made: TensorBoard fails when it starts.
    sets = overrides(tiny_model_dir, tmp_path / "runs", toy, **{"train.report_to": "[tensorboard]",
                                                                "train.tracking_dir": toy / "tb"})
    code, out, err = run_cli("run", *set_options(sets))
    assert code == 0, err
    assert squash(out).count("train.report_to:tensorboardfailed") == 1, out
    (run_dir,) = run_dirs(tmp_path / "runs")
    assert (run_dir / "metrics.json").is_file() and (run_dir / "report.html").is_file()
    assert not (run_dir / "tracking.json").exists()  # it tracked nowhere


# --------------------------------------------------------------------------- resume


class Interrupt(Callback):
    """Ctrl-C after optimizer step ``at_step``."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_step_end(self, trainer) -> None:
        if trainer.state.global_step == self.at_step:
            raise KeyboardInterrupt


def test_a_resumed_run_continues_the_same_tracked_run(tiny_model_dir, toy, tmp_path, monkeypatch):
    needs_tracking_libraries()
    output = tmp_path / "runs"
    config = load_config(None, overrides(tiny_model_dir, output, toy, **BOTH))
    # Steps 1-3 logged, the checkpoint at step 2: the resumed loop logs step 3 again.
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, callbacks=[Interrupt(at_step=4)])
    (run_dir,) = run_dirs(output)
    (run,) = mlflow_runs(output, monkeypatch)
    assert run.info.status == "KILLED"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")

    run_experiment(resume=run_dir, callbacks=[])
    (run,) = mlflow_runs(output, monkeypatch)  # the same MLflow run, not a second one
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    losses = {r["step"]: r["loss"] for r in records(run_dir, "train")}
    assert sorted(losses) == list(range(1, 7))
    assert history(output, run.info.run_id, "train/loss") == losses  # step 3 once
    assert "final/test/accuracy" in run.data.metrics
    scalars = event_accumulator(run_dir / "tensorboard").Scalars("train/loss")
    assert [e.step for e in scalars] == list(range(1, 7))  # purged the interrupted run's step 3
    assert [e.value for e in scalars] == [pytest.approx(losses[s], rel=1e-6) for s in range(1, 7)]
