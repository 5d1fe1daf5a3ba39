"""Records that scale with the number of classes stay bounded: the confusion matrix is stored sparse
past ``DENSE_MAX_CLASSES`` classes and every reader takes both forms; the confusion plot draws only
the most confused classes past ``PLOT_MAX_CLASSES``; per-class records stay a few numbers a class."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix, f1_score

from texttune.evaluation.confusion import DENSE_MAX_CLASSES, read_confusion
from texttune.evaluation.metrics import MetricAccumulator, classification_metrics
from texttune.reports.html import render_report
from texttune.reports.plots import PLOT_MAX_CLASSES, PLOT_TOP_CLASSES, _most_confused, plot_confusion_matrix


def predictions(num_labels: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(labels (n,), logits (n, C)), right about half the time."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_labels, n)
    logits = rng.normal(size=(n, num_labels)).astype(np.float32)
    logits[np.arange(n), labels] += 2.5
    return labels, logits


@pytest.mark.parametrize("num_labels", [DENSE_MAX_CLASSES, DENSE_MAX_CLASSES + 1, 2_000])
def test_the_stored_matrix_is_dense_up_to_the_limit_then_sparse(num_labels):
    labels, logits = predictions(num_labels, 600)
    result = classification_metrics(labels, logits)
    stored = result["confusion_matrix"]
    expected = confusion_matrix(labels, logits.argmax(1), labels=range(num_labels))
    if num_labels <= DENSE_MAX_CLASSES:
        assert stored == expected.tolist()
    else:
        assert stored["format"] == "sparse" and stored["shape"] == [num_labels, num_labels]
        assert len(stored["counts"]) <= 600 and 0 not in stored["counts"]
    assert np.array_equal(read_confusion(stored), expected)
    assert np.array_equal(read_confusion(json.loads(json.dumps(stored)), dense=False).dense(), expected)
    predicted = logits.argmax(1)
    expected_f1 = f1_score(labels, predicted, labels=range(num_labels), average="macro", zero_division=0)
    assert result["f1_macro"] == pytest.approx(expected_f1, rel=1e-9)


def test_streamed_and_merged_sparse_counts_match_one_pass():
    labels, logits = predictions(500, 400, seed=1)
    whole = classification_metrics(labels, logits)
    first, second = MetricAccumulator(500), MetricAccumulator(500)
    first.update(torch.from_numpy(logits[:150]), torch.from_numpy(labels[:150]))
    second.update(torch.from_numpy(logits[150:]), torch.from_numpy(labels[150:]))
    merged = first.merge(second).compute()
    assert merged["confusion_matrix"] == whole["confusion_matrix"]
    assert merged["accuracy"] == whole["accuracy"]


@pytest.mark.parametrize("record", [
    {"format": "dense"},
    {"format": "sparse", "shape": [3, 4], "rows": [], "cols": [], "counts": []},
    {"format": "sparse", "shape": [3, 3], "rows": [0, 1], "cols": [0], "counts": [1, 1]},
    {"format": "sparse", "shape": [3, 3], "rows": [3], "cols": [0], "counts": [1]},
    [[1, 2], [3]],
    [[1, 2, 3]],
])
def test_malformed_matrices_are_a_value_error(record):
    with pytest.raises(ValueError):
        read_confusion(record)


def test_per_class_records_stay_a_few_numbers_per_class():
    labels, logits = predictions(5_000, 500)
    result = classification_metrics(labels, logits, label_names=[f"label_{i}" for i in range(5_000)])
    size = len(json.dumps(result, indent=2))
    # ~150 bytes a class (4 numbers and the name, indented) + the non-zero cells; the dense matrix
    # alone was 25 million cells here.
    assert size < 5_000 * 200 + 500 * 60, size


def test_plot_of_thousands_of_classes_draws_the_most_confused(tmp_path):
    labels, logits = predictions(5_000, 3_000)
    logits[labels % 7 == 0, 3] += 9  # many classes are taken for class 3
    stored = classification_metrics(labels, logits)["confusion_matrix"]
    chosen = _most_confused(read_confusion(stored, dense=False), PLOT_TOP_CLASSES)
    assert len(chosen) == PLOT_TOP_CLASSES == len(set(chosen.tolist())) and 3 in chosen
    tic = time.perf_counter()
    path = plot_confusion_matrix(stored, [f"label_{i}" for i in range(5_000)], tmp_path / "cm.png")
    assert time.perf_counter() - tic < 10
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_plot_with_few_errors_still_fills_its_classes(tmp_path):
    stored = {"format": "sparse", "shape": [PLOT_MAX_CLASSES + 5] * 2, "rows": [0, 1, 2], "cols": [0, 2, 2],
              "counts": [4, 1, 3]}
    chosen = _most_confused(read_confusion(stored, dense=False), PLOT_TOP_CLASSES)
    assert chosen[:2].tolist() == [1, 2] and len(chosen) == PLOT_TOP_CLASSES
    plot_confusion_matrix(stored, [str(i) for i in range(PLOT_MAX_CLASSES + 5)], tmp_path / "cm.png")


def test_the_report_reads_a_sparse_matrix(tmp_path):
    names = [f"label_{i}" for i in range(300)]
    labels, logits = predictions(300, 900)
    scores = classification_metrics(labels, logits, label_names=names)
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"validation": scores}))
    (run / "data.json").write_text(json.dumps({"name": "many", "labels": names, "splits": {}}))
    html = render_report(run).read_text(encoding="utf-8")
    assert "could not be drawn" not in html
    assert Path(run / "confusion_matrix.png").stat().st_size > 10_000
