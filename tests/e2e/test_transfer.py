"""Transfer (``init_from``) and parameter-efficient runs end to end: a 3-label source run on a tiny
from-scratch Transformer, adapted to a 2-label target with a new head; what was replaced is logged
and recorded; runs that froze part of the encoder save only what they trained and still predict."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import load_file

from conftest import TOY_ROWS
from test_run import assert_error, set_options, write_csv
from texttune.tasks.classify import load_config
from texttune.tasks.classify import run_experiment
from texttune.models.loading import load_classifier
from texttune.models.saving import TRAINED_WEIGHTS

SOURCE_ROWS = [(text, "pos" if label == "pos" else "neg") for text, label in TOY_ROWS] + [
    ("the film opens in cinemas on friday", "news"), ("the studio announced a sequel today", "news"),
    ("box office figures were published", "news"), ("the festival lineup was revealed", "news"),
]
TINY = {"model.name": "transformer", "model.d_model": 16, "model.nhead": 2, "model.num_layers": 2,
        "model.dim_feedforward": 32, "model.max_length": 32, "model.dropout": 0.0}


def settings(output_dir, data, **extra) -> list[str]:
    items = {"output_dir": output_dir, "data.train_file": data, "data.validation_file": data,
             "data.test_file": data, "train.per_device_batch_size": 4, "train.max_steps": 6,
             "train.lr": 1e-2, "train.num_threads": 1, "train.calibrate": False, **extra}
    return [f"{key}={value}" for key, value in items.items()]


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("transfer")
    data = write_csv(folder / "source.csv", SOURCE_ROWS)
    return run_experiment(load_config(None, settings(folder / "runs", data, **TINY, name="source")), callbacks=[])


@pytest.fixture(scope="module")
def target_data(tmp_path_factory):
    return write_csv(tmp_path_factory.mktemp("target") / "target.csv", TOY_ROWS)


def target_config(source_run, target_data, strategy: str, **extra):
    return load_config(None, settings(source_run.run_dir.parent, target_data, init_from=source_run.run_dir,
                                      **{"model.max_length": 32, "strategy.name": strategy, "name": strategy,
                                         **extra}))


def test_a_new_head_replaces_the_source_head_when_labels_differ(source_run, target_data, caplog):
    with caplog.at_level(logging.INFO, logger="texttune"):
        result = run_experiment(target_config(source_run, target_data, "linear_probe"), callbacks=[])
    assert "head replaced: the source's 3 labels ['neg', 'news', 'pos'] differ from the target's 2 labels " \
           "['neg', 'pos']" in caplog.text
    config = json.loads((result.run_dir / "model" / "config.json").read_text(encoding="utf-8"))
    assert config["init_from"]["head_replaced"] is True
    assert config["texttune_base"]["kind"] == "run"
    # Only the head trained, and only the head was saved; the encoder equals the source's.
    assert set(load_file(result.run_dir / "model" / TRAINED_WEIGHTS)) == {"head.1.weight", "head.1.bias"}
    source, target = load_classifier(source_run.run_dir / "model"), load_classifier(result.run_dir / "model")
    for (name, a), (_, b) in zip(source.encoder.state_dict().items(), target.encoder.state_dict().items()):
        assert torch.equal(a, b), name
    assert result.metrics["checkpoint"] == "trained tensors + base reference"
    assert result.metrics["params"]["trainable"] == 16 * 2 + 2


@pytest.mark.parametrize("strategy", ["full", "adapters", "lora", "prefix"])
def test_every_strategy_adapts_the_source_and_predicts(strategy, source_run, target_data, run_cli):
    result = run_experiment(target_config(source_run, target_data, strategy), callbacks=[])
    whole = (result.run_dir / "model" / "model.safetensors").is_file()
    assert whole == (strategy == "full")
    code, out, err = run_cli("predict", result.run_dir, "--text", "what a wonderful film")
    assert code == 0, err
    assert out.strip().splitlines()[-1].split("\t")[0] in ("neg", "pos")  # after the runs' log lines


def test_same_labels_keep_the_source_head(source_run, tmp_path, caplog):
    data = write_csv(tmp_path / "same.csv", SOURCE_ROWS)
    with caplog.at_level(logging.INFO, logger="texttune"):
        run_experiment(target_config(source_run, data, "linear_probe"), callbacks=[])
    assert "tokenizer and head kept (same 3 labels)" in caplog.text


def test_init_from_errors_name_the_problem(source_run, target_data, tmp_path, run_cli):
    args = ["run", "--set", f"init_from={tmp_path}", *set_options(settings(tmp_path, target_data))]
    assert_error(run_cli(*args), f"{tmp_path}: no trained model here")
    too_long = ["run", *set_options(settings(tmp_path, target_data, init_from=source_run.run_dir,
                                             **{"model.max_length": 500}))]
    assert_error(run_cli(*too_long), "model.max_length: 500 is longer than the encoder of")
    adapters = run_experiment(target_config(source_run, target_data, "adapters"), callbacks=[])
    from_adapters = ["run", *set_options(settings(tmp_path, target_data, init_from=adapters.run_dir,
                                                  **{"model.max_length": 32}))]
    assert_error(run_cli(*from_adapters), "trained with strategy 'adapters', whose modules cannot be folded")


def test_the_command_line_shows_what_the_transfer_replaced(source_run, target_data, run_cli, tmp_path):
    args = settings(tmp_path, target_data, init_from=source_run.run_dir,
                    **{"model.max_length": 32, "strategy.name": "linear_probe"})
    code, out, err = run_cli("run", *set_options(args))
    assert code == 0, err
    assert "head replaced: the source's 3 labels" in "".join(out.split("\n"))
