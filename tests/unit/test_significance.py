"""Bootstrap intervals and paired tests of per-example outcomes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest

from texttune.evaluation.significance import bootstrap_ci, mcnemar_p, paired_bootstrap_p


def outcomes(accuracy: float, n: int = 2000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(n) < accuracy


def test_the_interval_contains_the_score_and_has_the_binomial_width():
    correct = outcomes(0.8)
    low, high = bootstrap_ci(correct)
    assert low < correct.mean() < high
    half_width = 1.96 * np.sqrt(0.8 * 0.2 / len(correct))  # normal approximation of a proportion
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.15)


def test_seeds_are_averaged_per_example():
    a, b = outcomes(0.7, seed=1), outcomes(0.9, seed=2)
    low, high = bootstrap_ci(np.stack([a, b]))
    assert low < (a.mean() + b.mean()) / 2 < high


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


def test_mcnemar_is_the_exact_binomial_test_on_discordant_examples():
    a = np.array([1, 1, 1, 1, 1, 0, 0, 1, 0, 1], bool)
    b = np.array([0, 0, 0, 1, 1, 1, 0, 1, 0, 0], bool)
    # a right / b wrong: 4; b right / a wrong: 1
    assert mcnemar_p(a, b) == pytest.approx(binomtest(4, 5, 0.5).pvalue)
    assert mcnemar_p(a, a) == 1.0
