"""Uncertainty of a score and of a difference between two models, from per-example outcomes.

``correct`` is an (S, N) boolean array: S seeds (runs) of one cell, N test examples in the same order.
Bootstrap resamples the *examples* (the same resample for every seed), which is the variance a new
test set would bring; the spread over seeds is reported separately as a standard deviation.
scikit-learn and SciPy have no paired bootstrap; McNemar's exact test is a binomial test (SciPy).
"""

from __future__ import annotations

import numpy as np

RESAMPLES = 2000
CHUNK = 200  # resamples per block: (CHUNK, N) indices stay small for 25k-example test sets


def _resampled_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Mean of ``values`` (N,) over ``resamples`` bootstrap samples of its N positions."""
    rng = np.random.default_rng(seed)
    n = len(values)
    out = np.empty(resamples)
    for start in range(0, resamples, CHUNK):
        size = min(CHUNK, resamples - start)
        idx = rng.integers(0, n, size=(size, n))  # (chunk, N)
        out[start : start + size] = values[idx].mean(axis=1)
    return out


def bootstrap_ci(correct: np.ndarray, level: float = 0.95, resamples: int = RESAMPLES,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the accuracy (averaged over seeds) under resampling of test examples."""
    per_example = np.atleast_2d(correct).astype(np.float64).mean(axis=0)  # (N,)
    means = _resampled_means(per_example, resamples, seed)
    tail = (1.0 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))


def paired_bootstrap_p(correct: np.ndarray, baseline: np.ndarray, resamples: int = RESAMPLES,
                       seed: int = 0) -> float:
    """Two-sided p-value of "the accuracies differ", pairing examples (Koehn 2004; Berg-Kirkpatrick
    et al. 2012): the share of resamples whose difference falls on the other side of zero, doubled."""
    diff = (np.atleast_2d(correct).mean(axis=0) - np.atleast_2d(baseline).mean(axis=0)).astype(np.float64)
    if not diff.any():
        return 1.0
    means = _resampled_means(diff, resamples, seed)
    observed = diff.mean()
    other_side = (means <= 0).mean() if observed > 0 else (means >= 0).mean()
    return float(min(1.0, 2.0 * max(other_side, 1.0 / resamples)))


def mcnemar_p(correct: np.ndarray, baseline: np.ndarray) -> float:
    """Exact McNemar test for one run against one run: a binomial test on the discordant examples."""
    from scipy.stats import binomtest

    a, b = np.asarray(correct, bool).ravel(), np.asarray(baseline, bool).ravel()
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)
