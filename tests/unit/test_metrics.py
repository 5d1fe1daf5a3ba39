"""MetricAccumulator against scikit-learn, its streaming invariants, and is_better."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
)

from texttune.evaluation.calibration import expected_calibration_error
from texttune.evaluation.metrics import (
    METRIC_DIRECTIONS,
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


@pytest.mark.parametrize(("seed", "num_labels", "absent", "never_predicted"), CASES)
def test_streamed_metrics_equal_sklearn(seed, num_labels, absent, never_predicted):
    logits, labels = make_data(seed, num_labels, absent=absent, never_predicted=never_predicted)
    result = stream(logits, labels).compute()

    y = labels.numpy()
    pred = logits.argmax(dim=1).numpy()
    probs = torch.softmax(logits.double(), dim=1).numpy()
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
    assert result["log_loss"] == pytest.approx(log_loss(y, probs, labels=classes), rel=REL)
    assert result["loss"] == result["log_loss"]  # no loss_sum given
    assert result["ece"] == pytest.approx(expected_calibration_error(probs, y), rel=REL, abs=1e-12)
    if num_labels == 2:
        assert result["f1"] == pytest.approx(f1_score(y, pred, zero_division=0), rel=REL, abs=1e-12)
    else:
        assert "f1" not in result


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
    # Twenty identical mistakes: the kept three are the first three seen, however batched.
    logits = torch.tensor([[2.0, 0.0]]).repeat(20, 1)
    labels = torch.ones(20, dtype=torch.long)
    for size in (1, 3, 20):
        acc = MetricAccumulator(2, keep_worst=3)
        for start in range(0, 20, size):
            acc.update(logits[start:start + size], labels[start:start + size])
        assert [w["id"] for w in acc.compute()["worst"]] == [0, 1, 2]


def test_no_worst_kept_by_default():
    logits, labels = make_data(0, 3)
    assert stream(logits, labels).compute()["worst"] == []


def state_sizes(acc: MetricAccumulator) -> dict[str, int]:
    """Bytes of every array and length of every list the accumulator holds."""
    sizes = {}
    for name, value in vars(acc).items():
        if isinstance(value, np.ndarray):
            sizes[name] = value.nbytes
        elif isinstance(value, (list, tuple, dict, set)):
            sizes[name] = len(value)
    return sizes


def test_state_size_does_not_grow_with_updates():
    g = torch.Generator().manual_seed(0)
    accumulators = {}
    for n_batches in (10, 1000):
        acc = MetricAccumulator(3, keep_worst=4)
        for _ in range(n_batches):
            acc.update(torch.randn(8, 3, generator=g), torch.randint(0, 3, (8,), generator=g))
        accumulators[n_batches] = acc
    assert accumulators[1000].num_examples == 8000
    assert state_sizes(accumulators[10]) == state_sizes(accumulators[1000])
    assert len(accumulators[1000].compute()["worst"]) == 4


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
