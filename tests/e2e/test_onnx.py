"""``texttune export --format onnx [--quantize int8]`` and ``predict --backend onnx`` end to end on tiny runs:
the ONNX graph gives PyTorch's logits (fp32) for every strategy and the exportable from-scratch encoders,
sentence pairs keep their token types, the folder is self-describing, and bad input gets one message."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from conftest import TOY_ROWS
from test_run import assert_error, overrides, write_csv

from texttune.errors import TexttuneError
from texttune.onnx_backend import EXPORT_RECORD, ONNX_MODEL, OnnxPredictor, export_onnx
from texttune.predict import load
from texttune.tasks.classify import load_config, run_experiment

TEXTS = ["what a wonderful film", "awful acting, i hated it", "a moving story", "boring",
         "the worst film i have ever seen , a dull and boring waste of time"]
PAIRS = [("a cat sits on the mat", "a cat is sitting on a mat", "same"),
         ("stocks fell sharply", "the market dropped", "same"),
         ("he plays the guitar", "a man is eating", "different"),
         ("the sun is bright", "it is raining hard", "different")] * 2
ENCODERS = {
    "cnn": {"model.name": "cnn", "model.embedding_dim": 16, "model.num_filters": 4, "model.kernel_sizes": "[2,3]"},
    "transformer": {"model.name": "transformer", "model.d_model": 16, "model.nhead": 2, "model.num_layers": 2,
                    "model.dim_feedforward": 32, "model.dropout": 0.0},
    "bag_of_ngrams": {"model.name": "bag_of_ngrams", "model.embedding_dim": 8, "model.num_buckets": 1000},
}


def tiny_run(model_dir: Path, folder: Path, data: Path, **extra):
    items = {"train.per_device_batch_size": 4, "train.max_steps": 4, "train.eval_every_steps": 4, **extra}
    return run_experiment(load_config(None, overrides(model_dir, folder, data, **items)), callbacks=[])


def scratch_run(folder: Path, data: Path, **model):
    """A from-scratch encoder (its word vocabulary built from the toy texts) trained for a few steps."""
    items = {"output_dir": folder, "data.train_file": data, "data.validation_file": data, "data.test_file": data,
             "train.per_device_batch_size": 4, "train.max_steps": 4, "train.lr": 1e-2, "train.num_threads": 1,
             "model.max_length": 32, **model}
    return run_experiment(load_config(None, [f"{k}={v}" for k, v in items.items()]), callbacks=[]).run_dir


def torch_logits(run_dir: Path, texts, pairs=None) -> torch.Tensor:
    return load(run_dir, backend="torch").logits(texts, pairs)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "toy.csv", TOY_ROWS)


@pytest.fixture(scope="module")
def bert_run(tiny_model_dir, tmp_path_factory, data):
    return tiny_run(tiny_model_dir, tmp_path_factory.mktemp("runs"), data).run_dir


@pytest.fixture(scope="module")
def int8_export(bert_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exports") / "int8"
    export_onnx(bert_run, out, quantize="int8")
    return out


def test_fp32_export_matches_pytorch_and_describes_itself(bert_run, tmp_path, run_cli):
    code, out, err = run_cli("export", bert_run, tmp_path / "onnx", "--format", "onnx")
    assert code == 0, err
    assert "fp32 max |Δlogit|" in out and "labels agree 8/8" in out
    folder = tmp_path / "onnx"
    assert {ONNX_MODEL, "config.json", EXPORT_RECORD, "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    record = json.loads((folder / EXPORT_RECORD).read_text(encoding="utf-8"))
    assert record["parity"]["fp32"]["max_abs_logit_diff"] < 1e-4
    assert record["parity"]["fp32"]["label_agreement"] == 1.0
    assert record["parity_texts"].startswith("8 of the 8 validation texts")  # the run's own split
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert config["texttune_onnx"]["max_length"] == 128 and config["texttune_onnx"]["precision"] == "fp32"
    onnx = load(folder)  # an ONNX folder loads with the onnx backend by default
    torch_predictor = load(bert_run)
    assert onnx.backend == "onnx" and onnx.label_names == torch_predictor.label_names
    assert onnx.temperature == pytest.approx(torch_predictor.temperature)
    assert onnx.max_length == torch_predictor.max_length
    # Batch 1, a batch padded to the longest text: the axes are dynamic.
    for texts in (TEXTS[:1], TEXTS, TEXTS * 7):
        torch.testing.assert_close(onnx.logits(texts), torch_predictor.logits(texts), atol=1e-4, rtol=0)
    assert [r["label"] for r in onnx.predict(TEXTS, top_k=2)] == [r["label"] for r in torch_predictor.predict(TEXTS)]
    session_axes = [i.shape for i in onnx.session.get_inputs()]
    assert all(shape == ["batch", "sequence"] for shape in session_axes), session_axes


def test_int8_export_records_agreement_and_test_accuracy(int8_export, bert_run):
    record = json.loads((int8_export / EXPORT_RECORD).read_text(encoding="utf-8"))
    assert record["quantize"] == "int8"
    assert record["parity"]["fp32"]["max_abs_logit_diff"] < 1e-4  # checked before quantizing
    int8 = record["parity"]["int8"]
    assert int8["texts"] == 8 and 0 <= int8["label_agreement"] <= 1
    test = record["test"]
    assert test["rows"] == 8 and {"accuracy_torch_fp32", "accuracy_onnx_int8", "accuracy_drop_points"} <= set(test)
    labels = torch_logits(bert_run, [t for t, _ in TOY_ROWS]).argmax(-1)
    names = load(bert_run).label_names
    truth = torch.tensor([names.index(label) for _, label in TOY_ROWS])
    assert test["accuracy_torch_fp32"] == pytest.approx(float((labels == truth).float().mean()))
    assert json.loads((int8_export / "config.json").read_text(encoding="utf-8"))["texttune_onnx"]["precision"] == "int8"
    # int8 weights: well under the fp32 safetensors file (not a quarter: scales, and small tensors stay fp32).
    assert (int8_export / ONNX_MODEL).stat().st_size < 0.5 * (bert_run / "model" / "model.safetensors").stat().st_size


def test_predict_backend_onnx_gives_the_labels_of_torch(int8_export, bert_run, tmp_path, run_cli):
    fp32 = tmp_path / "fp32"
    export_onnx(bert_run, fp32)
    args = [arg for text in TEXTS for arg in ("--text", text)]
    code, by_torch, err = run_cli("predict", bert_run, *args, "--backend", "torch")
    assert code == 0, err
    code, by_onnx, err = run_cli("predict", fp32, *args, "--backend", "onnx")
    assert code == 0, err
    labels = [line.split("\t")[0] for line in by_torch.strip().splitlines()]
    assert [line.split("\t")[0] for line in by_onnx.strip().splitlines()] == labels
    code, by_int8, err = run_cli("predict", int8_export, *args)  # auto-detected
    assert code == 0, err
    assert len(by_int8.strip().splitlines()) == len(TEXTS)


def test_sentence_pairs_keep_their_token_types(tiny_model_dir, tmp_path):
    path = tmp_path / "pairs.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("text", "text_pair", "label"), *PAIRS])
    run = tiny_run(tiny_model_dir, tmp_path / "runs", path, **{"data.text_pair_column": "text_pair"}).run_dir
    record = export_onnx(run, tmp_path / "onnx")
    assert "token_type_ids" in record["inputs"] and record["parity"]["fp32"]["max_abs_logit_diff"] < 1e-4
    onnx = OnnxPredictor.from_path(tmp_path / "onnx")
    first, second = [a for a, _, _ in PAIRS], [b for _, b, _ in PAIRS]
    expected = torch_logits(run, first, second)
    torch.testing.assert_close(onnx.logits(first, second), expected, atol=1e-4, rtol=0)
    # The pair is not just concatenated text: segment ids reach the graph.
    assert not torch.allclose(onnx.logits([f"{a} {b}" for a, b in zip(first, second)]), expected, atol=1e-4)


# LoRA is merged before export; linear_probe saves only the head (loaded onto its base); adapters and
# prefixes are forward hooks, which torch.export traces; deep prefixes pass through the attention's cache.
STRATEGIES = {"lora": {}, "linear_probe": {}, "adapters": {}, "prefix": {}, "prefix-deep": {"strategy.mode": "deep"}}


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_exports_with_parity(strategy, tiny_model_dir, tmp_path, data):
    settings = {"strategy.name": strategy.split("-")[0], "strategy.prefix_length": 4, **STRATEGIES[strategy]}
    if not strategy.startswith("prefix"):
        settings.pop("strategy.prefix_length")
    run = tiny_run(tiny_model_dir, tmp_path / "runs", data, **settings).run_dir
    record = export_onnx(run, tmp_path / "onnx")
    assert record["parity"]["fp32"]["max_abs_logit_diff"] < 1e-4, record["parity"]
    torch.testing.assert_close(load(tmp_path / "onnx").logits(TEXTS), torch_logits(run, TEXTS), atol=1e-4, rtol=0)


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_from_scratch_encoders_export_with_parity(encoder, tmp_path, data):
    run = scratch_run(tmp_path / "runs", data, **ENCODERS[encoder])
    record = export_onnx(run, tmp_path / "onnx")
    assert record["parity"]["fp32"]["max_abs_logit_diff"] < 1e-4, record["parity"]
    texts = TEXTS + ["", "unseenword " * 40]  # an empty text, and one truncated at max_length
    torch.testing.assert_close(load(tmp_path / "onnx").logits(texts), torch_logits(run, texts), atol=1e-4, rtol=0)


def test_rnn_is_refused_by_name(tmp_path, data, run_cli):
    run = scratch_run(tmp_path / "runs", data, **{"model.name": "rnn", "model.embedding_dim": 8,
                                                   "model.hidden_size": 8, "train.max_steps": 2})
    assert_error(run_cli("export", run, tmp_path / "onnx", "--format", "onnx"),
                 "the rnn encoder cannot be exported to ONNX", "packed sequences")
    assert not (tmp_path / "onnx").exists()


def test_bad_input_gets_one_message(bert_run, int8_export, data, tmp_path, run_cli):
    taken = tmp_path / "taken"
    taken.mkdir()
    assert_error(run_cli("export", bert_run, taken, "--format", "onnx"), f"{taken}: already exists")
    assert_error(run_cli("export", bert_run, tmp_path / "x", "--format", "tflite"), "--format tflite: choose hf or onnx")
    assert_error(run_cli("export", bert_run, tmp_path / "x", "--format", "onnx", "--quantize", "int4"),
                 "--quantize int4: choose one of none, int8")
    assert_error(run_cli("export", bert_run, tmp_path / "x", "--quantize", "int8"), "--quantize int8 needs --format onnx")
    assert_error(run_cli("export", int8_export, tmp_path / "x", "--format", "onnx"), "already an ONNX export")
    assert not (tmp_path / "x").exists()
    assert_error(run_cli("predict", bert_run, "--text", "hi", "--backend", "onnx"),
                 f"{bert_run}: no ONNX model here (expected {bert_run / ONNX_MODEL})")
    assert_error(run_cli("predict", int8_export, "--text", "hi", "--backend", "torch"),
                 "an ONNX export (model.onnx), not a PyTorch model")
    assert_error(run_cli("evaluate", int8_export, "--data", data),
                 "an ONNX export (model.onnx), not a PyTorch model")
    assert_error(run_cli("predict", bert_run, "--text", "hi", "--backend", "tensorrt"),
                 "backend 'tensorrt': choose one of torch, onnx")
    with pytest.raises(TexttuneError, match="no ONNX model here"):
        load(tmp_path, backend="onnx")


def test_a_failed_parity_check_writes_nothing(bert_run, tmp_path, run_cli, monkeypatch):
    import texttune.onnx_backend

    monkeypatch.setattr(texttune.onnx_backend, "PARITY_TOLERANCE", -1.0)  # any difference is too large
    assert_error(run_cli("export", bert_run, tmp_path / "onnx", "--format", "onnx"),
                 "ONNX fp32 logits differ from PyTorch's by up to", "on 8 texts", "nothing exported")
    assert list(tmp_path.iterdir()) == []  # neither OUT nor its temporary folder


def test_a_damaged_onnx_file_is_named(int8_export, tmp_path, run_cli):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(int8_export, broken)
    (broken / ONNX_MODEL).write_bytes(b"not a graph")
    assert_error(run_cli("predict", broken, "--text", "hi"), f"{broken / ONNX_MODEL}: not a readable ONNX model")
