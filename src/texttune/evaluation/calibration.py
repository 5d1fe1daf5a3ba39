"""Calibration: temperature scaling and expected calibration error (ECE).

ECE here is the usual top-label definition (Guo et al., 2017): each example's confidence is its
highest class probability; confidences fall into ``n_bins`` equal-width bins ``(lo, hi]`` over [0, 1];
ECE is the count-weighted mean of ``|accuracy - mean confidence|`` over the bins. The bin helpers are
shared with ``MetricAccumulator`` so its ECE and a one-off ECE are the same number.

The binning is hand-written because scikit-learn has no ECE: ``sklearn.calibration.calibration_curve``
(``strategy="uniform"``) bins the same way, ``(lo, hi]``, but returns only the non-empty bins' fraction
correct and mean confidence, without the counts that weight ECE and without the empty bins a
reliability diagram shows; ``tests/unit/test_calibration.py`` checks the bins against it.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# Bounds on the fitted temperature. On perfectly separable data the NLL keeps falling as T -> 0 and
# never reaches a minimum; the bounds keep the answer finite and usable instead of 1e-30.
MIN_TEMPERATURE = 1e-2
MAX_TEMPERATURE = 1e2


def bin_edges(n_bins: int) -> np.ndarray:
    """The ``n_bins + 1`` equal-width edges over [0, 1] (float64)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    return np.linspace(0.0, 1.0, n_bins + 1)


def bin_statistics(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin (count, sum of confidence, sum of correct) for top-label confidences in [0, 1].

    Bins are ``(lo, hi]`` (a confidence of exactly 0.5 with two bins lands in the first); sums rather
    than means so statistics from many batches (or accumulators) combine by addition.
    """
    edges = bin_edges(n_bins)
    # searchsorted on the inner edges with side="left" gives i such that edges[i] < c <= edges[i+1];
    # clip puts an (impossible for softmax) confidence of 0 into the first bin.
    index = np.clip(np.searchsorted(edges[1:-1], confidence, side="left"), 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins).astype(np.int64)
    conf_sum = np.bincount(index, weights=confidence, minlength=n_bins).astype(np.float64)
    correct_sum = np.bincount(index, weights=correct.astype(np.float64), minlength=n_bins)
    return count, conf_sum, correct_sum


def ece_from_bins(count: np.ndarray, conf_sum: np.ndarray, correct_sum: np.ndarray) -> float:
    """ECE from per-bin sums: sum_b (n_b / N) * |acc_b - conf_b| = sum_b |correct_b - conf_b| / N."""
    total = int(count.sum())
    if total == 0:
        raise ValueError("ECE of zero examples is undefined")
    return float(np.abs(correct_sum - conf_sum).sum() / total)


def expected_calibration_error(
    probs: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, n_bins: int = 15
) -> float:
    """ECE of class probabilities ``probs`` (N, C) against integer ``labels`` (N,)."""
    probs_np = np.asarray(torch.as_tensor(probs).detach().cpu(), dtype=np.float64)  # (N, C)
    labels_np = np.asarray(torch.as_tensor(labels).detach().cpu()).astype(np.int64)  # (N,)
    if probs_np.ndim != 2 or labels_np.shape != (probs_np.shape[0],):
        raise ValueError(f"expected probs (N, C) and labels (N,), got {probs_np.shape} and {labels_np.shape}")
    confidence = probs_np.max(axis=1)  # (N,)
    correct = probs_np.argmax(axis=1) == labels_np  # (N,)
    return ece_from_bins(*bin_statistics(confidence, correct, n_bins))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature T > 0 minimising the NLL of ``softmax(logits / T)`` on held-out data.

    ``logits`` (N, C), ``labels`` (N,). We optimise log T so T stays positive without constraints;
    float64 on CPU with a deterministic line search makes the fit reproducible bit for bit. The result
    lies in [MIN_TEMPERATURE, MAX_TEMPERATURE].
    """
    logits64 = logits.detach().to("cpu", torch.float64)  # (N, C)
    targets = labels.detach().to("cpu", torch.long)  # (N,)
    if logits64.ndim != 2 or targets.shape != (logits64.shape[0],) or logits64.shape[0] == 0:
        raise ValueError(f"expected logits (N, C) and labels (N,) with N > 0, got "
                         f"{tuple(logits64.shape)} and {tuple(targets.shape)}")
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)  # start at T = 1
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    bounds = (math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE))

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        # Clamping inside the objective zeroes the gradient past a bound, so LBFGS stops there
        # instead of walking log T to -inf (separable data) and dividing by an underflowed zero.
        temperature = log_t.clamp(*bounds).exp()
        loss = F.cross_entropy(logits64 / temperature, targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    fitted = log_t.item()
    if not math.isfinite(fitted):
        # Only reachable from non-finite logits; 1.0 is "no rescaling", the safe answer.
        return 1.0
    return math.exp(min(max(fitted, bounds[0]), bounds[1]))
