"""Multi-label thresholds and metrics (evaluation/multilabel.py) against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, hamming_loss, precision_recall_fscore_support

from texttune.evaluation.multilabel import fit_thresholds, metrics_at, multilabel_metrics, predicted_sets

NAMES = ["a", "b", "c", "d"]


def random_case(seed: int, rows: int = 60):
    rng = np.random.default_rng(seed)
    targets = (rng.random((rows, 4)) < [0.5, 0.2, 0.05, 0.0]).astype(np.float32)  # d never occurs
    scores = np.clip(0.3 * targets + rng.random((rows, 4)) * 0.7, 0, 1)
    return targets, scores


@pytest.mark.parametrize("seed", range(5))
def test_fitted_thresholds_never_lose_f1_against_one_half(seed):
    targets, scores = random_case(seed)
    thresholds = fit_thresholds(targets, scores)
    assert thresholds[3] == 0.5  # a label absent from validation keeps the default
    for label in range(3):
        if targets[:, label].sum() == 0:
            continue
        at_half = f1_score(targets[:, label], scores[:, label] >= 0.5, zero_division=0)
        fitted = f1_score(targets[:, label], scores[:, label] >= thresholds[label], zero_division=0)
        assert fitted >= at_half
        # No other cut does better: the fit is the maximum over every distinct score.
        best = max(f1_score(targets[:, label], scores[:, label] >= v, zero_division=0) for v in scores[:, label])
        assert fitted == pytest.approx(best)


def test_thresholds_between_scores_separate_a_learned_label():
    targets = np.array([[1], [1], [0], [0]], dtype=np.float32)
    scores = np.array([[0.3], [0.25], [0.2], [0.1]])
    assert fit_thresholds(targets, scores)[0] == pytest.approx(0.225)


def test_metrics_equal_sklearn_on_indicator_matrices():
    targets, scores = random_case(7)
    cut = np.array([0.4, 0.6, 0.5, 0.5])
    out = metrics_at(targets, scores, NAMES, cut)
    y_true, y_pred = targets.astype(int), (scores >= cut).astype(int)
    assert out["f1_micro"] == pytest.approx(f1_score(y_true, y_pred, average="micro", zero_division=0))
    assert out["f1_macro"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    assert out["subset_accuracy"] == out["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert out["hamming_loss"] == pytest.approx(hamming_loss(y_true, y_pred))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, zero_division=0)
    assert [out["per_class"][n]["f1"] for n in NAMES] == pytest.approx(f.tolist())
    assert [out["per_class"][n]["support"] for n in NAMES] == s.tolist()
    assert predicted_sets(scores, cut)[0] == np.flatnonzero(y_pred[0]).tolist()


def test_multilabel_metrics_hold_both_decision_rules():
    targets, scores = random_case(3)
    thresholds = fit_thresholds(targets, scores)
    out = multilabel_metrics(targets, scores, NAMES, thresholds)
    assert out["threshold"] == 0.5 and out["thresholds"] == dict(zip(NAMES, thresholds.tolist()))
    assert out["at_thresholds"]["f1_macro"] >= out["f1_macro"]
    assert 0 <= out["ece"] <= 1 and out["log_loss"] > 0
