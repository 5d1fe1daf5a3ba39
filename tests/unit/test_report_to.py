"""``train.report_to`` without training: its validation, the names trackers receive, where MLflow logs,
and the failure policy (a tracker that fails is warned about once and dropped; the others go on)."""

from __future__ import annotations

import logging

import pytest

from texttune.config import ConfigError
from texttune.tasks.classify import load_config
from texttune.training.tracking import Tracking, ended_with_run, final_scalars, flatten, mlflow_tracking_uri


@pytest.mark.parametrize("value, expected", [
    ("[tensorboard,mlflow]", ["tensorboard", "mlflow"]), ("mlflow", ["mlflow"]), ("none", []), ("[]", []),
    ("[mlflow,mlflow]", ["mlflow"]),
])
def test_report_to_takes_a_list_one_name_or_none(value, expected):
    assert load_config(None, [f"train.report_to={value}"]).train.report_to == expected


def test_no_tracker_by_default():
    assert load_config(None, []).train.report_to == []


def test_an_unknown_tracker_names_the_key_and_the_known_ones():
    with pytest.raises(ConfigError) as error:
        load_config(None, ["train.report_to=[mlfow]"])
    assert "train.report_to: unknown tracker 'mlfow' (did you mean 'mlflow'?); known: tensorboard, mlflow" \
        in str(error.value)


def test_the_config_flattens_to_dotted_keys():
    assert flatten({"train": {"lr": 1e-3, "betas": [0.9, 0.99]}, "seed": 1, "extra": {}}) == {
        "train.lr": 1e-3, "train.betas": [0.9, 0.99], "seed": 1, "extra": {}}


def test_final_metrics_are_the_numbers_under_final_with_names_mlflow_takes():
    metrics = {"test": {"accuracy": 0.5, "per_class": {"sci&tech": {"f1": 0.25}}, "confusion_matrix": [[1, 0]]},
               "stopped_early": False, "best": {"metric": "accuracy", "value": 0.5, "step": None}, "steps": 6}
    assert final_scalars(metrics) == {"final/test/accuracy": 0.5, "final/test/per_class/sci_tech/f1": 0.25,
                                      "final/best/value": 0.5, "final/steps": 6}


def test_mlflow_logs_to_its_uri_if_set_else_beside_the_runs(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert mlflow_tracking_uri(tmp_path / "run") == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert mlflow_tracking_uri(tmp_path / "run") == "http://mlflow.example:5000"


class Fake:
    """A tracker that records what it receives; ``broken`` names the method that raises."""

    def __init__(self, name: str, broken: str | None = None) -> None:
        self.name, self.broken, self.calls = name, broken, []

    def __getattr__(self, method: str):
        def call(*args):
            self.calls.append(method)
            if method == self.broken:
                raise OSError(28, "No space left on device")
        return call


def tracking_with(*trackers: Fake, tmp_path) -> Tracking:
    config = load_config(None, [])
    tracking = Tracking(config, tmp_path, record=tmp_path / "tracking.json", tensorboard_dir=tmp_path / "tb")
    tracking.trackers = list(trackers)
    return tracking


def test_a_failing_tracker_is_warned_about_once_and_the_others_go_on(tmp_path, caplog):
    broken, fine = Fake("broken", broken="log"), Fake("fine")
    tracking = tracking_with(broken, fine, tmp_path=tmp_path)
    with caplog.at_level(logging.WARNING, logger="texttune"), ended_with_run(tracking):
        for step in (1, 2, 3):
            tracking.on_log(None, {"type": "train", "step": step, "loss": 0.5, "grad_norm": None})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "train.report_to: broken failed (OSError" in warnings[0], warnings
    assert broken.calls == ["log", "end"]  # closed after its failure, then left alone
    assert fine.calls == ["log", "log", "log", "end"]


@pytest.mark.parametrize("raised, status", [(None, "FINISHED"), (KeyboardInterrupt, "KILLED"),
                                            (RuntimeError, "FAILED")])
def test_the_tracked_run_ends_as_the_run_does(tmp_path, raised, status):
    ends = []
    fake = Fake("fake")
    fake.end = ends.append  # type: ignore[method-assign]
    tracking = tracking_with(fake, tmp_path=tmp_path)
    if raised is None:
        with ended_with_run(tracking):
            pass
    else:
        with pytest.raises(raised), ended_with_run(tracking):
            raise raised
    assert ends == [status]
