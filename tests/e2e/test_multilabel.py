"""Multi-label classification (issue 19) end to end on a tiny random BERT: label sets as JSON lists
and as delimited strings, BCE, thresholds fitted on validation, metrics equal scikit-learn's on the
saved test predictions, predict returning sets, the model config and the export, bad data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from texttune.errors import TexttuneError
from texttune.tasks.classify import MultiLabelObjective, load_config, run_experiment

ROWS = [  # (text, labels): {action, comedy, romance}, one row with no label
    ("explosions car chase and a big fight", ["action"]),
    ("a funny film full of jokes and laughs", ["comedy"]),
    ("two lovers kiss in paris", ["romance"]),
    ("a fight and a car chase with jokes", ["action", "comedy"]),
    ("funny lovers laugh and kiss", ["comedy", "romance"]),
    ("a big fight for his lovers in paris", ["action", "romance"]),
    ("a documentary about bees", []),
    ("jokes laughs kiss and a chase", ["action", "comedy", "romance"]),
]
LABELS = ["action", "comedy", "romance"]


@pytest.fixture(scope="module", autouse=True)
def _isolated(tmp_path_factory):
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TEXTTUNE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield
    torch.set_num_threads(threads)


def write_csv(path: Path, rows, delimiter: str | None = None) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for text, labels in rows:
            writer.writerow([text, delimiter.join(labels) if delimiter else json.dumps(labels)])
    return path


def overrides(model_dir: Path, output_dir: Path, data: Path, **extra) -> list[str]:
    items = {
        "model.path": model_dir, "model.pooling": "mean", "model.head.dropout": 0, "output_dir": output_dir,
        "data.train_file": data, "data.validation_file": data, "data.test_file": data,
        "data.multi_label": True, "data.min_rows_per_label": 0,
        "train.per_device_batch_size": 8, "train.lr": 1e-2, "train.warmup_ratio": 0, "train.epochs": 30,
        "train.num_threads": 1, "train.metric": "f1_micro", **extra,
    }
    return [f"{key}={value}" for key, value in items.items()]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def finished(tiny_model_dir, tmp_path_factory, data_dir):
    data = write_csv(data_dir / "movies.csv", ROWS)
    return run_experiment(load_config(None, overrides(tiny_model_dir, tmp_path_factory.mktemp("runs"), data)))


def test_json_lists_train_end_to_end_with_fitted_thresholds(finished):
    metrics = json.loads((finished.run_dir / "metrics.json").read_text())
    validation, test = metrics["validation"], metrics["test"]
    assert validation["multi_label"] and set(validation["thresholds"]) == set(LABELS)
    assert metrics["thresholds"] == validation["thresholds"] == test["thresholds"]
    for key in ("f1_micro", "f1_macro", "subset_accuracy", "hamming_loss", "accuracy", "log_loss", "ece"):
        assert key in test and key in test["at_thresholds"] or key in ("log_loss", "ece")
    assert set(test["per_class"]["action"]) == {"precision", "recall", "f1", "support"}
    # Per-label F1 at the fitted thresholds is at least that at 0.5 on validation, so macro F1 too.
    for name in LABELS:
        assert validation["at_thresholds"]["per_class"][name]["f1"] >= validation["per_class"][name]["f1"]
    assert validation["at_thresholds"]["f1_macro"] >= validation["f1_macro"]
    assert test["at_thresholds"]["f1_micro"] == 1.0  # the toy rows are learned
    config = json.loads((finished.run_dir / "model" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert config["texttune_thresholds"] == metrics["thresholds"]
    data = json.loads((finished.run_dir / "data.json").read_text())
    assert data["multi_label"] and data["splits"]["train"]["classes"] == {"action": 4, "comedy": 4, "romance": 4}


def test_metrics_equal_sklearn_on_the_saved_test_predictions(finished):
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss
    from sklearn.preprocessing import MultiLabelBinarizer

    metrics = json.loads((finished.run_dir / "metrics.json").read_text())["test"]
    saved = json.loads((finished.run_dir / "test_predictions.json").read_text())
    binarize = MultiLabelBinarizer(classes=range(len(LABELS))).fit([])
    y_true = binarize.transform(saved["labels"])
    assert y_true.tolist() == [[int(name in labels) for name in LABELS] for _, labels in ROWS]
    scores = np.asarray(saved["scores"])
    cut = np.asarray([metrics["thresholds"][name] for name in LABELS])
    for at, y_pred in ((metrics, scores >= 0.5), (metrics["at_thresholds"], scores >= cut)):
        assert at["f1_micro"] == pytest.approx(f1_score(y_true, y_pred, average="micro", zero_division=0), abs=1e-5)
        assert at["f1_macro"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0), abs=1e-5)
        assert at["subset_accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-5)
        assert at["hamming_loss"] == pytest.approx(hamming_loss(y_true, y_pred), abs=1e-5)
    assert binarize.transform(saved["predicted"]).tolist() == (scores >= cut).astype(int).tolist()
    assert saved["correct"] == [a == b for a, b in zip(saved["labels"], saved["predicted"])]


def test_predict_returns_label_sets_with_scores(finished):
    import texttune
    from texttune.predict import load

    predictor = load(finished.run_dir)
    out = predictor.predict([text for text, _ in ROWS])
    assert [sorted(p["labels"]) for p in out] == [sorted(labels) for _, labels in ROWS]
    assert set(out[0]["scores"]) == set(LABELS) and all(0 <= v <= 1 for v in out[0]["scores"].values())
    assert texttune  # the package import stays lazy


def test_the_export_carries_problem_type_and_sigmoid_pipeline_works(finished, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from texttune.predict import export_classifier

    folder = export_classifier(finished.run_dir, tmp_path / "export")
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    assert model.config.problem_type == "multi_label_classification"
    classify = pipeline("text-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(folder),
                        function_to_apply="sigmoid", top_k=None)
    scores = {item["label"]: item["score"] for item in classify([ROWS[0][0]])[0]}
    assert set(scores) == set(LABELS) and scores["action"] > 0.5 > scores["romance"]


def test_the_objective_is_bce(finished, tiny_model_dir, data_dir, tmp_path):
    from texttune.data.load import prepare_data
    from texttune.tasks.classify import objective_for, build, tokenize

    data = write_csv(data_dir / "bce.csv", ROWS)
    config = load_config(None, overrides(tiny_model_dir, tmp_path, data, **{"train.class_weights": "auto"}))
    ds, _, _ = prepare_data(config.data)
    _, tokenizer = build(config, ds)
    encoded, _ = tokenize(ds, tokenizer, 32)
    objective = objective_for(config, ds, encoded["train"])
    assert isinstance(objective, MultiLabelObjective)
    assert isinstance(objective.loss_fn, torch.nn.BCEWithLogitsLoss)
    assert objective.loss_fn.pos_weight.tolist() == [1.0, 1.0, 1.0]  # each label in 4 of 8 rows
    assert encoded["train"].labels.shape == (8, 3) and encoded["train"].labels[6].sum() == 0


def test_a_delimited_label_column_trains_too(tiny_model_dir, data_dir, tmp_path):
    data = write_csv(data_dir / "piped.csv", ROWS, delimiter="|")
    (data_dir / "labels.txt").write_text("\n".join(LABELS) + "\n")  # the vocabulary, as usual
    try:
        result = run_experiment(load_config(None, overrides(tiny_model_dir, tmp_path, data, **{
            "data.label_delimiter": "'|'", "train.epochs": 2})))
    finally:
        (data_dir / "labels.txt").unlink()
    saved = json.loads((result.run_dir / "test_predictions.json").read_text())
    assert saved["labels"][3] == [0, 1] and saved["labels"][6] == []
    assert json.loads((result.run_dir / "labels.json").read_text()) == LABELS


def error_of(model_dir: Path, tmp_path: Path, data: Path, **extra) -> str:
    with pytest.raises(TexttuneError) as err:
        run_experiment(load_config(None, overrides(model_dir, tmp_path / "runs", data, **extra)))
    return str(err.value)


def test_a_label_not_in_labels_txt_names_file_row_and_column(tiny_model_dir, tmp_path):
    data = write_csv(tmp_path / "bad.csv", [*ROWS[:5], ("a horror film", ["horror"]), *ROWS[5:]])
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n")
    message = error_of(tiny_model_dir, tmp_path, data)
    assert message.startswith(f"{data}: row 5, column 'label': the label 'horror' is not in the label set from "
                              f"{tmp_path / 'labels.txt'}")


def test_a_malformed_list_names_file_row_and_column(tiny_model_dir, tmp_path):
    data = tmp_path / "bad.csv"
    data.write_text('text,label\na,"[""action""]"\nb,"[""comedy"", "\n', encoding="utf-8")
    message = error_of(tiny_model_dir, tmp_path, data)
    assert message.startswith(f"{data}: row 1, column 'label': '[\"comedy\", ' is not a JSON list of labels")
    assert "data.label_delimiter" in message


def test_a_delimiter_without_multi_label_is_a_config_error():
    with pytest.raises(TexttuneError, match="data.multi_label: true"):
        load_config(None, ["data.train_file=x.csv", "data.label_delimiter=';'"])


def test_classic_baselines_refuse_label_sets(tmp_path, data_dir):
    data = write_csv(data_dir / "classic.csv", ROWS)
    with pytest.raises(TexttuneError, match="single-label classic baseline"):
        run_experiment(load_config(None, [f"output_dir={tmp_path}", f"data.train_file={data}",
                                          f"data.validation_file={data}", "data.multi_label=true",
                                          "data.min_rows_per_label=0", "model.name=tfidf_lr"]))


def test_the_onnx_backend_returns_the_same_label_sets(finished, tmp_path):
    pytest.importorskip("onnxruntime")
    from texttune.onnx_backend import export_onnx
    from texttune.predict import load

    export_onnx(finished.run_dir, tmp_path / "onnx")
    texts = [text for text, _ in ROWS]
    torch_sets = load(finished.run_dir).predict(texts)
    onnx_sets = load(tmp_path / "onnx", backend="onnx").predict(texts)
    assert [p["labels"] for p in onnx_sets] == [p["labels"] for p in torch_sets]
    for a, b in zip(onnx_sets, torch_sets):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-4)
