"""Temperature scaling and expected calibration error (ECE; bins checked against scikit-learn's
calibration_curve, which has the same bins but no ECE)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.calibration import calibration_curve

from texttune.evaluation.calibration import (
    MIN_TEMPERATURE,
    bin_statistics,
    expected_calibration_error,
    fit_temperature,
)
from texttune.evaluation.metrics import MetricAccumulator


def test_ece_on_hand_example():
    # Confidences .9 (right), .7 (wrong), .55 (right), .75 (right) in five bins (lo, hi]:
    # (|1 - .9| + |1 - (.7 + .75)| + |1 - .55|) / 4 = (.1 + .45 + .45) / 4
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.55, 0.45], [0.25, 0.75]])
    labels = np.array([0, 0, 0, 1])
    assert expected_calibration_error(probs, labels, n_bins=5) == pytest.approx(0.25, rel=1e-12)
    assert expected_calibration_error(torch.tensor(probs), torch.tensor(labels), n_bins=5) == \
        pytest.approx(0.25, rel=1e-12)


def test_ece_is_zero_when_confidence_matches_accuracy():
    # Four examples at confidence .75, three of them right.
    probs = np.array([[0.75, 0.25]] * 4)
    assert expected_calibration_error(probs, np.array([0, 0, 0, 1])) == pytest.approx(0.0, abs=1e-12)


def test_bins_are_closed_on_the_right():
    confidence, correct = np.array([0.5, 1.0, 0.51]), np.array([True, False, True])
    count, conf_sum, correct_sum = bin_statistics(confidence, correct, 2)
    assert count.tolist() == [1, 2]  # 0.5 -> (0, .5]; 1.0 and .51 -> (.5, 1]
    assert conf_sum.tolist() == pytest.approx([0.5, 1.51])
    assert correct_sum.tolist() == [1.0, 1.0]


@pytest.mark.parametrize(("seed", "n_bins"), [(0, 15), (1, 5), (2, 10)])
def test_bins_are_sklearns_calibration_curve(seed, n_bins):
    rng = np.random.default_rng(seed)
    confidence = np.concatenate([rng.uniform(0.3, 1.0, 300), np.linspace(0, 1, n_bins + 1)[1:]])  # and edges
    correct = rng.random(len(confidence)) < confidence
    count, conf_sum, correct_sum = bin_statistics(confidence, correct, n_bins)
    prob_true, prob_pred = calibration_curve(correct, confidence, n_bins=n_bins, strategy="uniform",
                                             pos_label=True)
    filled = count > 0
    assert (correct_sum[filled] / count[filled]).tolist() == pytest.approx(prob_true.tolist(), rel=1e-12)
    assert (conf_sum[filled] / count[filled]).tolist() == pytest.approx(prob_pred.tolist(), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_ece_is_the_count_weighted_gap_of_sklearns_bins(seed):
    # calibration_curve gives no counts; they come from counting bins (lo, hi] by hand here.
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(500, 4)) * 2
    labels = rng.integers(0, 4, 500)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    counts = np.zeros(10, int)
    for c in confidence:
        counts[max(0, int(np.ceil(c * 10)) - 1)] += 1
    prob_true, prob_pred = calibration_curve(correct, confidence, n_bins=10, pos_label=True)
    expected = float((counts[counts > 0] * np.abs(prob_true - prob_pred)).sum() / len(labels))
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(expected, rel=1e-12)
    accumulator = MetricAccumulator(4, n_bins=10)
    accumulator.update(torch.from_numpy(logits), torch.from_numpy(labels))
    result = accumulator.compute()
    assert result["ece"] == pytest.approx(expected, rel=1e-12)
    assert result["reliability"]["count"] == counts.tolist()
    filled = [a for a in result["reliability"]["accuracy"] if a is not None]
    assert filled == pytest.approx(prob_true.tolist())


def calibrated_data(seed: int, n: int = 4000, num_labels: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (n, C) and labels (n,) drawn from softmax(logits): calibrated by construction."""
    g = torch.Generator().manual_seed(seed)
    logits = 1.5 * torch.randn(n, num_labels, generator=g, dtype=torch.float64)  # (n, C)
    labels = torch.multinomial(torch.softmax(logits, dim=1), 1, generator=g).squeeze(1)  # (n,)
    return logits, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_overconfident_logits_get_temperature_near_three(seed):
    true_logits, labels = calibrated_data(seed)
    logits = true_logits * 3
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(3.0, rel=0.1)
    assert F.cross_entropy(logits / temperature, labels) < F.cross_entropy(logits, labels)


@pytest.mark.parametrize("seed", [0, 1])
def test_calibrated_and_underconfident_logits(seed):
    logits, labels = calibrated_data(seed)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, rel=0.1)
    assert fit_temperature(logits / 2, labels) == pytest.approx(0.5, rel=0.1)


def test_fit_is_deterministic_and_accepts_float32():
    logits, labels = calibrated_data(3, n=500)
    first = fit_temperature(logits.float() * 2, labels)
    assert first == fit_temperature(logits.float() * 2, labels)


def test_separable_data_stays_finite():
    # Every example right by a wide margin: the NLL keeps falling as T -> 0, so the bound holds it.
    logits = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(10, 1)
    labels = torch.tensor([0, 1]).repeat(10)
    temperature = fit_temperature(logits, labels)
    assert MIN_TEMPERATURE <= temperature < 1.0


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="expected logits"):
        fit_temperature(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="expected probs"):
        expected_calibration_error(np.zeros(3), np.zeros(3))
