"""Multi-label classification (``data.multi_label``): sigmoid scores, per-label thresholds fitted on
validation, and the metrics of scikit-learn on indicator matrices.

A row's targets are a (C,) 0/1 vector; a label is predicted when its sigmoid score reaches its
threshold. Every metric is computed twice: at the conventional 0.5 and at the per-label thresholds
fitted on validation (``fit_thresholds``), under ``at_thresholds``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from texttune.data.tokenize import Encoded

DEFAULT_THRESHOLD = 0.5
ECE_BINS = 15


def collect_scores(model, data: Encoded, pad_id: int, batch_size: int, accelerator=None,
                   batch_tokens: int | None = None) -> np.ndarray:
    """Sigmoid scores (N, C) float64 of ``model`` on ``data``, in ``data``'s row order."""
    from texttune.evaluation.evaluate import evaluation_model, iter_logits

    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    autocast = accelerator.autocast if accelerator is not None else None
    model = evaluation_model(model, accelerator)
    scores = np.zeros(data.labels.shape, dtype=np.float64)  # (N, C)
    for indices, logits in iter_logits(model, data, pad_id, batch_size, device, autocast, accelerator,
                                       batch_tokens):
        scores[np.asarray(indices)] = torch.sigmoid(logits).double().numpy()
    return scores


def fit_thresholds(targets: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per label, the threshold that maximises that label's F1 on these (validation) rows.

    The candidates are the cuts between consecutive distinct scores (a threshold halfway between two
    scores predicts exactly the rows at or above the higher one), so the 0.5 cut is among them and
    the fitted F1 is never below the F1 at 0.5 on these rows. Ties go to the higher threshold. A label
    that never occurs here keeps ``DEFAULT_THRESHOLD``: no row says where its cut should be.
    """
    targets = np.asarray(targets) > 0.5
    thresholds = np.full(targets.shape[1], DEFAULT_THRESHOLD)
    for label in range(targets.shape[1]):
        positives = int(targets[:, label].sum())
        if positives == 0:
            continue
        values = np.unique(scores[:, label])[::-1]  # distinct scores, highest first
        # Rows at or above each distinct value: predicted positives and true positives of that cut.
        order = np.argsort(-scores[:, label], kind="stable")
        sorted_scores, sorted_targets = scores[order, label], targets[order, label]
        cut = np.searchsorted(-sorted_scores, -values, side="right")  # rows with score >= value
        true_pos = np.concatenate([[0], np.cumsum(sorted_targets)])[cut]
        f1 = 2 * true_pos / (cut + positives)  # 2TP / (2TP + FP + FN) = 2TP / (predicted + actual)
        best = int(np.argmax(f1))  # the first maximum: the highest threshold
        lower = values[best + 1] if best + 1 < len(values) else 0.0
        thresholds[label] = (values[best] + lower) / 2
    return thresholds


def metrics_at(targets: np.ndarray, scores: np.ndarray, label_names: list[str],
               thresholds: np.ndarray | float) -> dict[str, Any]:
    """scikit-learn's multi-label metrics of the predictions ``scores >= thresholds``."""
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss, precision_recall_fscore_support

    y_true = (np.asarray(targets) > 0.5).astype(np.int64)
    y_pred = (scores >= np.asarray(thresholds)).astype(np.int64)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, zero_division=0)
    out: dict[str, Any] = {
        "accuracy": float(accuracy_score(y_true, y_pred)),  # subset accuracy: the whole set right
        "subset_accuracy": float(accuracy_score(y_true, y_pred)),
        "hamming_loss": float(hamming_loss(y_true, y_pred)),
    }
    for average in ("micro", "macro", "weighted", "samples"):
        out[f"f1_{average}"] = float(f1_score(y_true, y_pred, average=average, zero_division=0))
    for average in ("micro", "macro"):
        p, r, _, _ = precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0)
        out[f"precision_{average}"], out[f"recall_{average}"] = float(p), float(r)
    out["per_class"] = {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
               "support": int(support[i])}
        for i, name in enumerate(label_names)
    }
    return out


def multilabel_metrics(targets: np.ndarray, scores: np.ndarray, label_names: list[str],
                       thresholds: np.ndarray | None = None) -> dict[str, Any]:
    """The metrics at 0.5 (top level), probability metrics of the scores, and, with ``thresholds``,
    the metrics at them (``at_thresholds``) and the thresholds by label name."""
    from sklearn.metrics import log_loss

    out = {"num_examples": int(len(targets)), "multi_label": True, "threshold": DEFAULT_THRESHOLD,
           **metrics_at(targets, scores, label_names, DEFAULT_THRESHOLD)}
    flat_targets, flat_scores = np.asarray(targets).ravel() > 0.5, np.clip(scores.ravel(), 1e-7, 1 - 1e-7)
    # Mean binary cross-entropy over every (row, label): the BCE the model was trained on.
    out["log_loss"] = float(log_loss(flat_targets, flat_scores, labels=[False, True])) if len(flat_scores) else 0.0
    out["ece"] = binary_ece(flat_targets, flat_scores)
    if thresholds is not None:
        out["thresholds"] = {name: float(t) for name, t in zip(label_names, thresholds)}
        out["at_thresholds"] = metrics_at(targets, scores, label_names, thresholds)
    return out


def binary_ece(targets: np.ndarray, scores: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Expected calibration error of per-label probabilities: |mean score − share positive| per
    equal-width bin, weighted by the bin's share of the (row, label) pairs."""
    if not len(scores):
        return 0.0
    bins = np.minimum((scores * n_bins).astype(np.int64), n_bins - 1)
    total = 0.0
    for b in np.unique(bins):
        inside = bins == b
        total += inside.mean() * abs(scores[inside].mean() - targets[inside].mean())
    return float(total)


def predicted_sets(scores: np.ndarray, thresholds: np.ndarray | float) -> list[list[int]]:
    """The label indices at or above their thresholds, per row."""
    return [np.flatnonzero(row).tolist() for row in scores >= np.asarray(thresholds)]
