"""Uncertainty of a score and of a difference between two models, from per-example outcomes.

``correct`` is an (S, N) boolean array: S seeds (runs) of one cell, N test examples in the same order.
Bootstrap resamples the *examples* (the same resample for every seed), which is the variance a new
test set would bring; the spread over seeds is reported separately as a standard deviation.

SciPy does the statistics: ``scipy.stats.bootstrap`` (percentile intervals; ``paired=True`` resamples
labels and predictions together) and ``scipy.stats.binomtest`` (McNemar's exact test). Hand-written,
because SciPy lacks it: the paired bootstrap's p-value (Koehn 2004), read off SciPy's bootstrap
distribution (``bootstrap`` returns intervals, not p-values); macro F1 of many resamples at once
(scikit-learn scores one sample per call); and a test set of one example, which ``bootstrap`` refuses
(its only resample is itself).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

RESAMPLES = 2000
CHUNK = 200  # resamples per batch: (CHUNK, N) indices stay small for 25k-example test sets


def _bootstrap(samples: tuple[np.ndarray, ...], statistic: Callable[..., np.ndarray], resamples: int,
               seed: int, level: float = 0.95) -> tuple[np.ndarray, tuple[float, float]]:
    """SciPy's percentile bootstrap of ``statistic(*samples, axis=-1)`` over the N examples of the (N,)
    ``samples`` (resampled together): every resample's statistic (resamples,) and the ``level`` interval."""
    # Imported here: scipy.stats adds a second to the start-up of everything importing the reports.
    from scipy.stats import bootstrap

    if len(samples[0]) < 2:  # scipy needs two observations; one example resamples to itself
        value = np.asarray(statistic(*samples, axis=-1)).item()
        return np.full(resamples, value), (value, value)
    result = bootstrap(samples, statistic, n_resamples=resamples, batch=CHUNK, vectorized=True,
                       paired=len(samples) > 1, confidence_level=level, method="percentile",
                       rng=np.random.default_rng(seed))
    interval = result.confidence_interval
    return result.bootstrap_distribution, (float(interval.low), float(interval.high))


def bootstrap_ci(correct: np.ndarray, level: float = 0.95, resamples: int = RESAMPLES,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the accuracy (averaged over seeds) under resampling of test examples."""
    per_example = np.atleast_2d(correct).astype(np.float64).mean(axis=0)  # (N,)
    return _bootstrap((per_example,), np.mean, resamples, seed, level)[1]


def paired_bootstrap_p(correct: np.ndarray, baseline: np.ndarray, resamples: int = RESAMPLES,
                       seed: int = 0) -> float:
    """Two-sided p-value of "the accuracies differ", pairing examples (Koehn 2004; Berg-Kirkpatrick
    et al. 2012): the share of resamples whose difference falls on the other side of zero, doubled."""
    diff = (np.atleast_2d(correct).mean(axis=0) - np.atleast_2d(baseline).mean(axis=0)).astype(np.float64)
    if not diff.any():
        return 1.0
    # The per-example differences as one sample: resampling them resamples both models' outcomes
    # together, with the same draws and numbers as bootstrap((a, b), paired=True), which is 2-3 times
    # slower at 25k examples (it gathers an index array, then each sample, per resample).
    means = _bootstrap((diff,), np.mean, resamples, seed)[0]  # (resamples,)
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


def bootstrap_f1_macro_ci(labels: np.ndarray, predicted: np.ndarray, num_labels: int, level: float = 0.95,
                          resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of one run's macro F1 (every class counted, 0 where undefined, as
    ``evaluation.metrics``) under resampling of test examples."""
    labels, predicted = np.asarray(labels, np.int64), np.asarray(predicted, np.int64)
    statistic = partial(_f1_macro, num_labels=num_labels)
    return _bootstrap((labels, predicted), statistic, resamples, seed, level)[1]


def _f1_macro(labels: np.ndarray, predicted: np.ndarray, axis: int = -1, *, num_labels: int) -> np.ndarray:
    """Macro F1 of each row of (R, N) ``labels`` and ``predicted``: sklearn's ``f1_score(labels=range(C),
    average="macro", zero_division=0)``, but for R resamples at once (``f1_score`` takes one sample per
    call: 2000 calls an interval, about ten times slower at 25k examples)."""
    labels, predicted = np.atleast_2d(labels), np.atleast_2d(predicted)  # (R, N)
    size, c = labels.shape[0], num_labels
    offset = (np.arange(size) * c)[:, None]  # one block of C counts per resample

    def counts(values: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:  # (R, C)
        cells = (values + offset) if keep is None else (values + offset)[keep]
        return np.bincount(cells.ravel(), minlength=size * c).reshape(size, c)

    tp = counts(labels, labels == predicted)
    denominator = counts(labels) + counts(predicted)  # support + predicted = 2tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros(tp.shape), where=denominator > 0)
    return f1.mean(axis=1)  # (R,)
