"""MetricAccumulator against scikit-learn (called with explicit arguments) and against counting by
hand, on seeded and generated inputs (missing classes, one class, ties, zero division); its batching
invariants; is_better."""

from __future__ import annotations

import json
import math
import time
import tracemalloc
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp, softmax
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
)

from texttune.evaluation.calibration import expected_calibration_error
from texttune.evaluation.confusion import read_confusion
from texttune.evaluation.metrics import (
    METRIC_DIRECTIONS,
    ROW,
    MetricAccumulator,
    classification_metrics,
    is_better,
)

REL = 1e-9
# Uneven on purpose, with an empty batch: results must not depend on how the data was cut.
BATCH_SIZES = [1, 7, 0, 64, 13, 3, 50]


def make_data(
    seed: int, num_labels: int, n: int = 300, absent: int | None = None, never_predicted: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (logits (n, C), labels (n,)), informative but noisy.

    ``absent`` never occurs as a label; ``never_predicted`` never wins the argmax.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_labels, (n,), generator=g)  # (n,)
    logits = 2.0 * torch.randn(n, num_labels, generator=g)  # (n, C)
    logits[torch.arange(n), labels] += 1.5
    if absent is not None:
        labels[labels == absent] = (absent + 1) % num_labels
    if never_predicted is not None:
        logits[:, never_predicted] = logits.min() - 1.0
    return logits, labels


def batches(n: int) -> list[slice]:
    """Cut range(n) into slices of BATCH_SIZES (cycled), the last one taking what remains."""
    cuts, start, k = [], 0, 0
    while start < n:
        stop = min(n, start + BATCH_SIZES[k % len(BATCH_SIZES)])
        cuts.append(slice(start, stop))
        start, k = stop, k + 1
    return cuts


def stream(logits: torch.Tensor, labels: torch.Tensor, **kwargs: Any) -> MetricAccumulator:
    acc = MetricAccumulator(logits.shape[1], **kwargs)
    for s in batches(len(labels)):
        acc.update(logits[s], labels[s], ids=list(range(s.start, s.stop)))
    return acc


def assert_close(actual: Any, expected: Any) -> None:
    """Recursive equality with floats compared to REL relative tolerance."""
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys()
        for key in expected:
            assert_close(actual[key], expected[key])
    elif isinstance(expected, list):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert_close(a, e)
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=REL, abs=1e-12)
    else:
        assert actual == expected


CASES = [
    # (seed, num_labels, absent label, never-predicted class)
    (0, 2, None, None),
    (1, 2, None, None),
    (2, 2, 1, None),  # no positives at all
    (3, 2, None, 1),  # positive class never predicted
    (4, 5, None, None),
    (5, 5, 3, 4),
    (6, 5, 2, 2),  # a class neither true nor predicted anywhere
    (7, 5, 0, None),
]


def counted_scores(y: list[int], pred: list[int], num_labels: int) -> dict[str, Any]:
    """The scores by counting, independently of scikit-learn: 0 wherever a denominator is 0."""
    per_class = []
    for k in range(num_labels):
        tp = sum(t == p == k for t, p in zip(y, pred))
        true_k, pred_k = y.count(k), pred.count(k)
        per_class.append({"precision": tp / pred_k if pred_k else 0.0,
                          "recall": tp / true_k if true_k else 0.0,
                          "f1": 2 * tp / (true_k + pred_k) if true_k + pred_k else 0.0,
                          "support": true_k})
    accuracy = sum(t == p for t, p in zip(y, pred)) / len(y)
    return {
        "accuracy": accuracy,
        "f1_macro": sum(c["f1"] for c in per_class) / num_labels,
        "f1_micro": accuracy,  # single-label: every error is one false positive and one false negative
        "f1_weighted": sum(c["f1"] * c["support"] for c in per_class) / len(y),
        "precision_macro": sum(c["precision"] for c in per_class) / num_labels,
        "recall_macro": sum(c["recall"] for c in per_class) / num_labels,
        "per_class": per_class,
        "confusion": [[sum(t == i and p == j for t, p in zip(y, pred)) for j in range(num_labels)]
                      for i in range(num_labels)],
    }


def assert_matches_sklearn(result: dict[str, Any], y: np.ndarray, pred: np.ndarray, num_labels: int) -> None:
    classes = list(range(num_labels))
    assert result["num_examples"] == len(y)
    assert result["accuracy"] == pytest.approx(accuracy_score(y, pred), rel=REL)
    for average in ("macro", "micro", "weighted"):
        expected = f1_score(y, pred, labels=classes, average=average, zero_division=0)
        assert result[f"f1_{average}"] == pytest.approx(expected, rel=REL, abs=1e-12)
    p_macro, r_macro, _, _ = precision_recall_fscore_support(
        y, pred, labels=classes, average="macro", zero_division=0)
    assert result["precision_macro"] == pytest.approx(p_macro, rel=REL, abs=1e-12)
    assert result["recall_macro"] == pytest.approx(r_macro, rel=REL, abs=1e-12)
    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, labels=classes, zero_division=0)
    for k in classes:
        per_class = result["per_class"][str(k)]
        assert per_class["precision"] == pytest.approx(precision[k], rel=REL, abs=1e-12)
        assert per_class["recall"] == pytest.approx(recall[k], rel=REL, abs=1e-12)
        assert per_class["f1"] == pytest.approx(f1[k], rel=REL, abs=1e-12)
        assert per_class["support"] == support[k]
    assert result["confusion_matrix"] == confusion_matrix(y, pred, labels=classes).tolist()
    if num_labels == 2:
        expected = f1_score(y, pred, labels=classes, pos_label=1, average="binary", zero_division=0)
        assert result["f1"] == pytest.approx(expected, rel=REL, abs=1e-12)
    else:
        assert "f1" not in result


def assert_matches_counting(result: dict[str, Any], y: np.ndarray, pred: np.ndarray, num_labels: int) -> None:
    expected = counted_scores(y.tolist(), pred.tolist(), num_labels)
    for key in ("accuracy", "f1_macro", "f1_micro", "f1_weighted", "precision_macro", "recall_macro"):
        assert result[key] == pytest.approx(expected[key], rel=REL, abs=1e-12), key
    assert_close(list(result["per_class"].values()), expected["per_class"])
    assert result["confusion_matrix"] == expected["confusion"]


@pytest.mark.parametrize(("seed", "num_labels", "absent", "never_predicted"), CASES)
def test_streamed_metrics_equal_sklearn(seed, num_labels, absent, never_predicted):
    logits, labels = make_data(seed, num_labels, absent=absent, never_predicted=never_predicted)
    result = stream(logits, labels).compute()

    y = labels.numpy()
    pred = logits.argmax(dim=1).numpy()
    probs = torch.softmax(logits.double(), dim=1).numpy()
    assert_matches_sklearn(result, y, pred, num_labels)
    assert_matches_counting(result, y, pred, num_labels)
    assert result["log_loss"] == pytest.approx(log_loss(y, probs, labels=list(range(num_labels))), rel=REL)
    assert result["loss"] == result["log_loss"]  # no loss_sum given
    assert result["ece"] == pytest.approx(expected_calibration_error(probs, y), rel=REL, abs=1e-12)


@st.composite
def small_predictions(draw) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (n, C), labels (n,)) with small integer logits, so argmax ties are common; n may be 1,
    and classes may be absent from labels, from predictions, or from both."""
    num_labels = draw(st.integers(2, 6))
    n = draw(st.integers(1, 30))
    labels = draw(st.lists(st.integers(0, num_labels - 1), min_size=n, max_size=n))
    logits = draw(st.lists(st.lists(st.integers(-2, 2), min_size=num_labels, max_size=num_labels),
                           min_size=n, max_size=n))
    return torch.tensor(logits, dtype=torch.float32), torch.tensor(labels)


@settings(max_examples=80, deadline=None)
@given(small_predictions())
def test_generated_predictions_equal_sklearn_and_counting(data):
    logits, labels = data
    num_labels = logits.shape[1]
    result = stream(logits, labels).compute()
    y = labels.numpy()
    pred = np.array([row.index(max(row)) for row in logits.tolist()])  # ties go to the first class
    assert_matches_sklearn(result, y, pred, num_labels)
    assert_matches_counting(result, y, pred, num_labels)
    log_probs = logits.double().numpy() - logsumexp(logits.double().numpy(), axis=1, keepdims=True)
    assert result["log_loss"] == pytest.approx(-log_probs[np.arange(len(y)), y].mean(), rel=REL)


@pytest.mark.parametrize("num_labels", [2, 4])
def test_a_single_class_everywhere(num_labels):
    # Every label and every prediction is class 1: the other classes are all 0/0.
    logits = torch.zeros(9, num_labels)
    logits[:, 1] = 1.0
    labels = torch.ones(9, dtype=torch.long)
    result = stream(logits, labels).compute()
    assert_matches_sklearn(result, labels.numpy(), np.ones(9, int), num_labels)
    assert result["accuracy"] == result["per_class"]["1"]["f1"] == 1.0
    assert result["f1_macro"] == pytest.approx(1.0 / num_labels)
    assert result["f1_weighted"] == 1.0


def test_tied_logits_predict_the_first_class():
    labels = torch.tensor([0, 1, 2, 2])
    result = stream(torch.zeros(4, 3), labels).compute()
    assert result["confusion_matrix"] == [[1, 0, 0], [1, 0, 0], [2, 0, 0]]
    assert_matches_sklearn(result, labels.numpy(), np.zeros(4, int), 3)


def test_a_hand_example():
    # true 0 0 1 1 2 2, predicted 0 1 1 1 0 2: class 0 p=1/2 r=1/2, class 1 p=2/3 r=1, class 2 p=1 r=1/2
    logits = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 1, 0, 2]), 3).float()
    result = classification_metrics(torch.tensor([0, 0, 1, 1, 2, 2]), logits)
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert [c["precision"] for c in result["per_class"].values()] == pytest.approx([1 / 2, 2 / 3, 1])
    assert [c["recall"] for c in result["per_class"].values()] == pytest.approx([1 / 2, 1, 1 / 2])
    assert [c["f1"] for c in result["per_class"].values()] == pytest.approx([1 / 2, 4 / 5, 2 / 3])
    assert result["f1_macro"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)


def test_log_loss_is_the_exact_nll_where_sklearn_clips():
    # A confidently wrong example (p = e^-60 for its label): sklearn clips p at float64's eps, so its
    # log-loss caps that example at 36 instead of 60; texttune reports the NLL it trains on.
    logits = np.array([[0.0, 60.0], [3.0, 0.0], [0.0, 0.5]])
    labels = np.array([0, 0, 1])
    exact = float(np.mean(logsumexp(logits, axis=1) - logits[np.arange(3), labels]))
    result = classification_metrics(labels, logits)
    assert result["log_loss"] == pytest.approx(exact, rel=1e-12)
    assert log_loss(labels, softmax(logits, axis=1), labels=[0, 1]) < exact - 7


def test_past_the_dense_limit_the_cells_equal_sklearn():
    logits, labels = make_data(9, 150, n=400)
    result = stream(logits, labels).compute()
    pred = logits.argmax(dim=1).numpy()
    expected = confusion_matrix(labels.numpy(), pred, labels=range(150))
    assert result["confusion_matrix"]["format"] == "sparse"
    assert np.array_equal(read_confusion(result["confusion_matrix"]), expected)
    assert result["f1_macro"] == pytest.approx(
        f1_score(labels.numpy(), pred, labels=range(150), average="macro", zero_division=0), rel=REL)


def test_result_is_plain_json():
    logits, labels = make_data(0, 3)
    result = stream(logits, labels, label_names=["neg", "neu", "pos"], keep_worst=4).compute()

    def walk(value: Any) -> None:
        # Exact types: numpy scalars (np.float64 subclasses float) would leak into records.
        assert type(value) in (int, float, str, list, dict, type(None)), type(value)
        for child in value.values() if isinstance(value, dict) else value if isinstance(value, list) else []:
            walk(child)

    walk(result)
    assert json.loads(json.dumps(result, allow_nan=False)) == result
    assert list(result["per_class"]) == ["neg", "neu", "pos"]


def test_ece_and_reliability_on_hand_example():
    # Confidences .9 (right), .7 (wrong), .55 (right), .75 (right); five bins (lo, hi].
    probs = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.55, 0.45], [0.25, 0.75]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1])
    acc = MetricAccumulator(2, n_bins=5)
    acc.update(probs.log(), labels)
    result = acc.compute()
    # (|1 - .9| + |1 - (.7 + .75)| + |1 - .55|) / 4 = (.1 + .45 + .45) / 4
    assert result["ece"] == pytest.approx(0.25, rel=1e-12)
    reliability = result["reliability"]
    assert reliability["bin_edges"] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert reliability["count"] == [0, 0, 1, 2, 1]
    assert reliability["accuracy"][:2] == [None, None]
    assert reliability["accuracy"][2:] == pytest.approx([1.0, 0.5, 1.0])
    assert reliability["confidence"][2:] == pytest.approx([0.55, 0.725, 0.9])


def brute_force_worst(logits: torch.Tensor, labels: torch.Tensor, k: int) -> list[tuple[int, float]]:
    probs = torch.softmax(logits.double(), dim=1)
    confidence, pred = probs.max(dim=1)
    wrong = [i for i in range(len(labels)) if pred[i] != labels[i]]
    # Most confident first; ties keep the earlier example.
    wrong.sort(key=lambda i: (-confidence[i].item(), i))
    return [(i, confidence[i].item()) for i in wrong[:k]]


@pytest.mark.parametrize("k", [1, 5, 1000])
def test_worst_keeps_the_k_most_confident_mistakes(k):
    logits, labels = make_data(11, 4)
    acc = MetricAccumulator(4, keep_worst=k)
    for s in batches(len(labels)):
        acc.update(logits[s], labels[s], ids=[1000 + i for i in range(s.start, s.stop)])
        assert len(acc.compute()["worst"]) <= k
    worst = acc.compute()["worst"]
    expected = brute_force_worst(logits, labels, k)
    assert [(w["id"] - 1000, w["confidence"]) for w in worst] == [(i, pytest.approx(c)) for i, c in expected]
    for w in worst:
        assert w["label"] == labels[w["id"] - 1000] != w["predicted"]
        assert w["label_name"] == str(w["label"])


def test_worst_ties_do_not_depend_on_batching():
    # 300 mistakes at two confidences (every third one higher): the kept 104 are the 100 higher ones,
    # then the first four lower ones, each group in the order seen, however batched.
    logits = torch.tensor([[2.0, 0.0]]).repeat(300, 1)
    logits[::3, 0] = 3.0
    labels = torch.ones(300, dtype=torch.long)
    for size in (1, 7, 300):
        acc = MetricAccumulator(2, keep_worst=104)
        for start in range(0, 300, size):
            acc.update(logits[start:start + size], labels[start:start + size])
        assert [w["id"] for w in acc.compute()["worst"]] == list(range(0, 300, 3)) + [1, 2, 4, 5]


def test_no_worst_kept_by_default():
    logits, labels = make_data(0, 3)
    assert stream(logits, labels).compute()["worst"] == []


@pytest.mark.parametrize("num_labels", [3, 1000])
def test_state_is_one_row_per_example_whatever_the_classes(num_labels):
    g = torch.Generator().manual_seed(0)
    acc = MetricAccumulator(num_labels, keep_worst=4)
    for _ in range(20):
        acc.update(torch.randn(8, num_labels, generator=g), torch.randint(0, num_labels, (8,), generator=g))
    # No logits are kept: every array the accumulator holds adds up to 40 bytes an example, for 3
    # classes as for 1,000.
    held = [v for value in vars(acc).values() for v in (value if isinstance(value, list) else [value])]
    assert sum(v.nbytes for v in held if isinstance(v, np.ndarray)) == 160 * ROW.itemsize == 160 * 40
    assert acc.rows().shape == (160,)
    assert len(acc.compute()["worst"]) == 4


def test_many_classes_and_examples_stay_fast_and_sparse():
    # 25,000 examples of 1,000 classes (compute took ~0.2 s when written), and 5,000 classes without
    # building their 200 MB dense confusion matrix.
    g = torch.Generator().manual_seed(0)
    acc = MetricAccumulator(1000)
    for _ in range(25):
        labels = torch.randint(0, 1000, (1000,), generator=g)
        acc.update(torch.randn(1000, 1000, generator=g), labels)
    tic = time.perf_counter()
    assert acc.compute()["num_examples"] == 25_000
    assert time.perf_counter() - tic < 5
    wide = MetricAccumulator(5000)
    wide.update(torch.randn(500, 5000, generator=g), torch.randint(0, 5000, (500,), generator=g))
    tracemalloc.start()
    try:
        wide.compute()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, peak


def test_merge_equals_one_accumulator():
    logits, labels = make_data(3, 5)
    whole = stream(logits, labels, keep_worst=6)
    whole_losses = MetricAccumulator(5, keep_worst=6)
    parts = [MetricAccumulator(5, keep_worst=6) for _ in range(3)]
    for j, s in enumerate(batches(len(labels))):
        loss = float(j)  # any per-batch sum; it must add up the same way
        whole_losses.update(logits[s], labels[s], loss_sum=loss, ids=list(range(s.start, s.stop)))
        parts[min(j // 3, 2)].update(logits[s], labels[s], loss_sum=loss, ids=list(range(s.start, s.stop)))
    merged = parts[0].merge(parts[1]).merge(parts[2])
    expected = whole.compute()
    expected["loss"] = whole_losses.compute()["loss"]
    assert_close(merged.compute(), expected)


def test_merge_refuses_incompatible_accumulators():
    with pytest.raises(ValueError, match="same num_labels"):
        MetricAccumulator(3).merge(MetricAccumulator(4))
    with_loss, without = MetricAccumulator(2), MetricAccumulator(2)
    with_loss.update(torch.zeros(2, 2), torch.tensor([0, 1]), loss_sum=1.0)
    without.update(torch.zeros(2, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="loss_sum"):
        with_loss.merge(without)


def test_loss_is_the_mean_of_given_loss_sums():
    acc = MetricAccumulator(2)
    acc.update(torch.zeros(3, 2), torch.tensor([0, 1, 1]), loss_sum=3.0)
    acc.update(torch.zeros(1, 2), torch.tensor([0]), loss_sum=1.0)
    result = acc.compute()
    assert result["loss"] == pytest.approx(1.0)
    assert result["log_loss"] == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="every batch or for none"):
        acc.update(torch.zeros(1, 2), torch.tensor([0]))


def test_classification_metrics_is_one_update():
    logits, labels = make_data(8, 5, absent=1)
    names = list("abcde")
    assert_close(classification_metrics(labels.numpy(), logits.numpy(), label_names=names),
                 stream(logits, labels, label_names=names).compute())


@pytest.mark.parametrize(
    ("logits", "labels", "message"),
    [
        (torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), r"logits must be \(B, 2\)"),
        (torch.zeros(4, 2), torch.zeros(3, dtype=torch.long), r"labels must be \(4,\)"),
        (torch.zeros(2, 2), torch.tensor([0, 2]), r"labels must lie in \[0, 2\)"),
        (torch.zeros(2, 2), torch.tensor([0.0, 1.0]), "integer class ids"),
    ],
)
def test_bad_batches_are_refused_before_any_state_changes(logits, labels, message):
    acc = MetricAccumulator(2)
    with pytest.raises(ValueError, match=message):
        acc.update(logits, labels)
    assert acc.num_examples == 0 and acc.confusion.sum() == 0


def test_compute_without_examples_fails_clearly():
    with pytest.raises(ValueError, match="no examples"):
        MetricAccumulator(2).compute()


def test_every_direction_names_a_computed_metric():
    logits, labels = make_data(0, 2)
    assert set(METRIC_DIRECTIONS) <= set(stream(logits, labels).compute())


def test_is_better():
    assert is_better("accuracy", 0.8, None)
    assert is_better("accuracy", 0.8, 0.7) and not is_better("accuracy", 0.7, 0.7)
    assert is_better("loss", 0.5, 0.6) and not is_better("loss", 0.6, 0.5)
    assert not is_better("f1_macro", 0.705, 0.7, min_delta=0.01)
    assert is_better("ece", 0.05, 0.07, min_delta=0.01)
    assert not is_better("loss", float("nan"), 1.0)
    assert is_better("loss", 1.0, float("nan"))
    with pytest.raises(ValueError, match="unknown metric 'acc'"):
        is_better("acc", 1.0, 0.0)
