"""Bootstrap intervals and paired tests of per-example outcomes: against SciPy called directly, against
an independent NumPy bootstrap (the numbers texttune reported before it used SciPy), and their sense."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom, binomtest, bootstrap
from sklearn.metrics import f1_score

from texttune.evaluation.significance import (
    bootstrap_ci,
    bootstrap_f1_macro_ci,
    mcnemar_p,
    paired_bootstrap_p,
)


def outcomes(accuracy: float, n: int = 2000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(n) < accuracy


def numpy_means(values: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Means of ``values`` over bootstrap resamples drawn with NumPy alone, in blocks of 200 draws."""
    rng = np.random.default_rng(seed)
    out = [values[rng.integers(0, len(values), size=(min(200, resamples - start), len(values)))].mean(axis=1)
           for start in range(0, resamples, 200)]
    return np.concatenate(out)


def test_the_interval_contains_the_score_and_has_the_binomial_width():
    correct = outcomes(0.8)
    low, high = bootstrap_ci(correct)
    assert low < correct.mean() < high
    half_width = 1.96 * np.sqrt(0.8 * 0.2 / len(correct))  # normal approximation of a proportion
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.15)


@pytest.mark.parametrize(("level", "resamples", "seed"), [(0.95, 2000, 0), (0.9, 500, 7)])
def test_the_interval_is_scipys_percentile_bootstrap(level, resamples, seed):
    correct = np.stack([outcomes(0.7, n=300, seed=1), outcomes(0.75, n=300, seed=2)])  # (S, N)
    per_example = correct.mean(axis=0)
    expected = bootstrap((per_example,), np.mean, n_resamples=resamples, confidence_level=level,
                         method="percentile", rng=np.random.default_rng(seed)).confidence_interval
    assert bootstrap_ci(correct, level=level, resamples=resamples, seed=seed) == pytest.approx(
        (expected.low, expected.high), rel=1e-12)
    # The same draws as the NumPy bootstrap texttune used before SciPy: the same interval.
    tail = (1 - level) / 2
    means = numpy_means(per_example, resamples, seed)
    assert bootstrap_ci(correct, level=level, resamples=resamples, seed=seed) == pytest.approx(
        (np.quantile(means, tail), np.quantile(means, 1 - tail)), rel=1e-12)


def test_intervals_are_reproducible_given_the_seed():
    correct = outcomes(0.6, n=500)
    assert bootstrap_ci(correct, seed=3) == bootstrap_ci(correct, seed=3)
    assert bootstrap_ci(correct, seed=3) != bootstrap_ci(correct, seed=4)


def test_seeds_are_averaged_per_example():
    a, b = outcomes(0.7, seed=1), outcomes(0.9, seed=2)
    low, high = bootstrap_ci(np.stack([a, b]))
    assert low < (a.mean() + b.mean()) / 2 < high


def test_degenerate_test_sets():
    assert bootstrap_ci(np.ones(50, bool)) == (1.0, 1.0)  # every resample scores 1
    assert bootstrap_ci(np.array([True])) == (1.0, 1.0)  # one example: scipy refuses, it is its own resample
    assert paired_bootstrap_p(np.array([True]), np.array([False])) == pytest.approx(2 / 2000)


def test_identical_models_do_not_differ_and_a_clearly_better_one_does():
    base = outcomes(0.8)
    assert paired_bootstrap_p(base, base) == 1.0
    better = base | outcomes(0.5, seed=3)  # right wherever the baseline is, and on half of the rest
    assert paired_bootstrap_p(better, base) < 0.01
    assert paired_bootstrap_p(base, better) < 0.01  # two-sided


def test_a_tiny_difference_is_not_significant():
    base = outcomes(0.8)
    other = base.copy()
    other[:2] = ~other[:2]  # two examples flipped
    assert paired_bootstrap_p(other, base) > 0.2


@pytest.mark.parametrize(("seed", "shift", "n"),
                         [(0, 0.01, 400), (5, -0.02, 400), (6, 0.0, 400), (1, 0.1, 12), (3, 0.1, 12)])
def test_the_p_value_reads_scipys_paired_bootstrap_distribution(seed, shift, n):
    # With 12 examples many resamples differ by exactly 0: they count as the other side.
    a = np.stack([outcomes(0.75 + shift, n=n, seed=seed), outcomes(0.75 + shift, n=n, seed=seed + 10)])
    b = np.stack([outcomes(0.75, n=n, seed=seed + 20)])  # seed counts may differ between cells
    a_mean, b_mean = a.mean(axis=0), b.mean(axis=0)
    distribution = bootstrap((a_mean, b_mean), lambda x, y, axis: x.mean(axis) - y.mean(axis), paired=True,
                             n_resamples=1000, method="percentile", rng=np.random.default_rng(seed)
                             ).bootstrap_distribution
    observed = a_mean.mean() - b_mean.mean()
    other_side = np.mean(distribution <= 0) if observed > 0 else np.mean(distribution >= 0)
    expected = min(1.0, 2 * max(other_side, 1 / 1000))
    assert paired_bootstrap_p(a, b, resamples=1000, seed=seed) == pytest.approx(expected)
    assert 0 < expected <= 1


def test_mcnemar_is_the_exact_binomial_test_on_discordant_examples():
    a = np.array([1, 1, 1, 1, 1, 0, 0, 1, 0, 1], bool)
    b = np.array([0, 0, 0, 1, 1, 1, 0, 1, 0, 0], bool)
    # a right / b wrong: 4; b right / a wrong: 1
    assert mcnemar_p(a, b) == pytest.approx(binomtest(4, 5, 0.5).pvalue)
    assert mcnemar_p(a, b) == pytest.approx(2 * binom.cdf(1, 5, 0.5))  # the symmetric two-sided tail
    assert mcnemar_p(a, a) == 1.0


@pytest.mark.parametrize(("seed", "num_labels"), [(0, 3), (1, 6)])
def test_f1_macro_interval_is_scipys_bootstrap_of_sklearns_f1(seed, num_labels):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_labels - 1, 80)  # the last class never occurs: its F1 is 0 everywhere
    predicted = np.where(rng.random(80) < 0.6, labels, rng.integers(0, num_labels, 80))

    def f1_macro(y, p):  # one resample at a time, by scikit-learn
        return f1_score(y, p, labels=range(num_labels), average="macro", zero_division=0)

    expected = bootstrap((labels, predicted), f1_macro, paired=True, vectorized=False, n_resamples=300,
                         method="percentile", rng=np.random.default_rng(seed)).confidence_interval
    interval = bootstrap_f1_macro_ci(labels, predicted, num_labels, resamples=300, seed=seed)
    assert interval == pytest.approx((expected.low, expected.high), rel=1e-12)
    assert interval[0] < f1_macro(labels, predicted) < interval[1]
