"""Tests for cytolens.evaluation.stats against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.special import betainc
from scipy.stats import ttest_ind

from cytolens.core.errors import OptionError
from cytolens.evaluation.calibration import (
    apply_temperature,
    brier_score,
    expected_calibration_error,
    fit_temperature,
    reliability_curve,
)
from cytolens.evaluation.stats import (
    accuracy,
    bootstrap_interval,
    confusion_matrix,
    mcnemar_exact,
    most_confused_pairs,
    paired_t_test,
    proportion_interval,
    welch_t_test,
)

Z95 = 1.959963984540054


def wilson_by_quadratic(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson bounds as the roots of (p_hat - p)^2 = z^2 p (1 - p) / n, solved independently of the module."""
    p_hat = k / n
    a, b, c = 1 + z**2 / n, -(2 * p_hat + z**2 / n), p_hat**2
    roots = np.sort(np.roots([a, b, c]).real)
    return float(roots[0]), float(roots[1])


# ------------------------------------------------------------------------------------------------ intervals


def test_accuracy():
    assert accuracy([0, 1, 2, 2], [0, 1, 1, 2]) == 0.75
    assert accuracy(np.array(["0", "0.1"]), ["0", "1"]) == 0.5
    with pytest.raises(OptionError, match="same length"):
        accuracy([0, 1], [0])


@pytest.mark.parametrize(
    ("k", "n", "method", "expected"),
    [
        (8, 10, "wilson", (0.4902, 0.9433)),
        (8, 10, "clopper-pearson", (0.4439, 0.9748)),
        (0, 10, "wilson", (0.0, 0.2775)),  # upper = (z^2/n) / (1 + z^2/n)
        (0, 10, "clopper-pearson", (0.0, 1 - 0.025 ** (1 / 10))),
        (10, 10, "clopper-pearson", (0.025 ** (1 / 10), 1.0)),
    ],
)
def test_proportion_interval_known_values(k, n, method, expected):
    lower, upper = proportion_interval(k, n, method=method)
    assert lower == pytest.approx(expected[0], abs=1e-4)
    assert upper == pytest.approx(expected[1], abs=1e-4)


@pytest.mark.parametrize(("k", "n"), [(45, 50), (8, 10), (1, 7), (199, 200)])
def test_wilson_matches_quadratic_roots(k, n):
    assert proportion_interval(k, n) == pytest.approx(wilson_by_quadratic(k, n), abs=1e-12)


def _old_clopper_pearson(k: int, n: int, confidence: float) -> tuple[float, float]:
    # cytolens 0.3's own formula (beta quantiles), kept here as the reference SciPy's binomtest must equal.
    from scipy.stats import beta

    alpha = 1 - confidence
    lower = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    upper = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lower, upper


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_scipy_intervals_equal_the_old_hand_written_ones(confidence: float) -> None:
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    for n in (1, 2, 7, 20, 60, 300):
        for k in range(n + 1):
            assert proportion_interval(k, n, confidence=confidence) == pytest.approx(
                wilson_by_quadratic(k, n, z), abs=1e-12)
            assert proportion_interval(k, n, confidence=confidence, method="clopper-pearson") == pytest.approx(
                _old_clopper_pearson(k, n, confidence), abs=1e-12)


def test_mcnemar_equals_the_old_doubled_tail() -> None:
    from scipy.stats import binom

    for b in range(0, 25):
        for c in range(0, 25):
            old = 1.0 if b + c == 0 else min(1.0, 2.0 * float(binom.cdf(min(b, c), b + c, 0.5)))
            assert mcnemar_exact(*outcomes(b, c)).p_value == pytest.approx(old, abs=1e-12), (b, c)


def test_proportion_interval_edges_and_errors():
    assert proportion_interval(0, 10)[0] == 0.0
    assert proportion_interval(10, 10)[1] == 1.0
    narrow, wide = proportion_interval(45, 50, confidence=0.8), proportion_interval(45, 50, confidence=0.99)
    assert wide[0] < narrow[0] < 0.9 < narrow[1] < wide[1]
    with pytest.raises(OptionError, match="`n`"):
        proportion_interval(0, 0)
    with pytest.raises(OptionError, match="`successes`"):
        proportion_interval(11, 10)
    with pytest.raises(OptionError, match="`confidence`"):
        proportion_interval(5, 10, confidence=95)
    with pytest.raises(OptionError, match="Did you mean 'wilson'"):
        proportion_interval(5, 10, method="wilsn")


def test_bootstrap_contains_estimate_and_is_deterministic():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 3, 120)
    y_pred = np.where(rng.random(120) < 0.7, y_true, rng.integers(0, 3, 120))
    first = bootstrap_interval(accuracy, y_true, y_pred, n_resamples=500, seed=4)
    assert first[0] <= accuracy(y_true, y_pred) <= first[1]
    assert bootstrap_interval(accuracy, y_true, y_pred, n_resamples=500, seed=4) == first
    values = rng.normal(size=50)  # a continuous statistic, so different seeds give different bounds
    assert bootstrap_interval(np.mean, values, seed=1) != bootstrap_interval(np.mean, values, seed=2)


def test_grouped_bootstrap_is_wider_for_perfectly_correlated_groups():
    # 40 images, each with 4 rotated copies that share one outcome: only 40 independent observations.
    per_image = np.random.default_rng(2).random(40) < 0.6
    correct = np.repeat(per_image, 4)
    groups = np.repeat(np.arange(40), 4)
    plain = bootstrap_interval(np.mean, correct, n_resamples=1000, seed=0)
    grouped = bootstrap_interval(np.mean, correct, n_resamples=1000, seed=0, groups=groups)
    assert grouped[1] - grouped[0] > 1.5 * (plain[1] - plain[0])  # ~2x (sqrt of 4) in expectation


def test_bootstrap_errors():
    with pytest.raises(OptionError, match="same length"):
        bootstrap_interval(accuracy, [0, 1, 1], [0, 1])
    with pytest.raises(OptionError, match="`groups`"):
        bootstrap_interval(np.mean, [0, 1, 1], groups=[0, 1])


# ------------------------------------------------------------------------------------------------ paired tests


def outcomes(b: int, c: int, both_right: int = 3, both_wrong: int = 2) -> tuple[np.ndarray, np.ndarray]:
    a = [True] * b + [False] * c + [True] * both_right + [False] * both_wrong
    other = [False] * b + [True] * c + [True] * both_right + [False] * both_wrong
    return np.array(a), np.array(other)


@pytest.mark.parametrize(
    ("b", "c", "p_value"),
    [(1, 6, 2 * 8 / 128), (6, 1, 2 * 8 / 128), (0, 0, 1.0), (0, 5, 2 / 32), (3, 3, 1.0), (10, 0, 2 / 1024)],
)
def test_mcnemar_exact_hand_values(b, c, p_value):
    result = mcnemar_exact(*outcomes(b, c))
    assert (result.b, result.c, result.statistic) == (b, c, min(b, c))
    assert result.p_value == pytest.approx(p_value, rel=1e-12)


def test_mcnemar_accepts_01_and_rejects_mismatch():
    assert mcnemar_exact([1, 0, 1], [0, 1, 1]).p_value == 1.0
    with pytest.raises(OptionError, match="same length"):
        mcnemar_exact([True, False], [True])
    with pytest.raises(OptionError, match="boolean"):
        mcnemar_exact([0, 2], [1, 1])


def test_paired_t_test_hand_computation():
    a = np.array([1, 1, 1, 0, 1, 0, 1, 1], dtype=bool)
    b = np.array([0, 1, 0, 0, 1, 1, 0, 1], dtype=bool)
    # d = [1,0,1,0,0,-1,1,0]: mean 0.25, sample sd sqrt(3.5/7) = sqrt(0.5), se = sqrt(0.5/8) = 0.25 -> t = 1
    result = paired_t_test(a, b)
    assert result.mean_difference == pytest.approx(0.25)
    assert result.statistic == pytest.approx(1.0)
    assert result.df == 7
    # two-sided p of t with df degrees of freedom: regularized incomplete beta I_{df/(df+t^2)}(df/2, 1/2)
    assert result.p_value == pytest.approx(betainc(3.5, 0.5, 7 / 8), rel=1e-10)
    assert result.p_value == pytest.approx(0.350617, abs=1e-6)


def test_paired_t_test_zero_variance():
    same = paired_t_test([1, 0, 1], [1, 0, 1])
    assert (same.statistic, same.p_value) == (0.0, 1.0)
    better = paired_t_test([1, 1, 1], [0, 0, 0])
    assert better.statistic == math.inf and better.p_value == 0.0 and better.mean_difference == 1.0
    with pytest.raises(OptionError, match="at least 2"):
        paired_t_test([1], [0])


def test_welch_t_test_hand_computation():
    # var(a) = 0.01, var(b) = 0: se = sqrt(0.01 / 3), t = 0.2 / se, df = 2 (Welch-Satterthwaite)
    result = welch_t_test([0.6, 0.7, 0.8], [0.5, 0.5, 0.5, 0.5])
    assert result.mean_difference == pytest.approx(0.2)
    assert result.statistic == pytest.approx(0.2 / math.sqrt(0.01 / 3))
    assert result.df == pytest.approx(2.0)
    assert result.p_value == pytest.approx(betainc(1.0, 0.5, 2 / (2 + result.statistic**2)), rel=1e-10)
    scipy_result = ttest_ind([0.61, 0.7, 0.8], [0.5, 0.52, 0.49, 0.5], equal_var=False)
    ours = welch_t_test([0.61, 0.7, 0.8], [0.5, 0.52, 0.49, 0.5])
    assert (ours.statistic, ours.df, ours.p_value) == pytest.approx(
        (scipy_result.statistic, scipy_result.df, scipy_result.pvalue), rel=1e-10
    )
    assert welch_t_test([0.5, 0.5], [0.5, 0.5]).p_value == 1.0
    assert welch_t_test([0.4, 0.4], [0.5, 0.5]).statistic == -math.inf


# ------------------------------------------------------------------------------------------------ confusion


def test_confusion_matrix_orientation():
    matrix = confusion_matrix([0, 0, 0, 1, 2], [0, 1, 1, 1, 0], n_classes=3)
    expected = np.array([[1, 2, 0], [0, 1, 0], [1, 0, 0]])  # rows = true class, columns = predicted
    np.testing.assert_array_equal(matrix, expected)
    assert matrix.dtype == np.int64
    with pytest.raises(OptionError, match="0..2"):
        confusion_matrix([0, 3], [0, 1], n_classes=3)


def test_confusion_matrix_reproduces_paper_table_ii_transposed():
    guess_by_truth = np.array([[84, 6, 3], [16, 58, 53], [0, 36, 44]])  # Table II: rows guess, columns truth
    truth, guess = np.nonzero(guess_by_truth.T >= 0)
    counts = guess_by_truth.T[truth, guess]
    matrix = confusion_matrix(np.repeat(truth, counts), np.repeat(guess, counts), n_classes=3)
    np.testing.assert_array_equal(matrix.T, guess_by_truth)


def test_most_confused_pairs():
    matrix = np.array([[5, 2, 0], [7, 4, 2], [0, 9, 1]])
    assert most_confused_pairs(matrix, ["0", "0.1", "1"]) == [("1", "0.1", 9), ("0.1", "0", 7), ("0", "0.1", 2)]
    assert most_confused_pairs(np.eye(2, dtype=int), ["a", "b"]) == []
    with pytest.raises(OptionError, match="square"):
        most_confused_pairs(matrix, ["a", "b"])


# ------------------------------------------------------------------------------------------------ calibration


def constant_confidence(n_correct: int, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
    probabilities = np.tile([0.8, 0.2], (n, 1))  # always predicts class 0 at confidence 0.8
    y_true = np.array([0] * n_correct + [1] * (n - n_correct))
    return probabilities, y_true


@pytest.mark.parametrize(("n_correct", "ece"), [(8, 0.0), (5, 0.3), (10, 0.2)])
def test_ece_constant_confidence(n_correct, ece):
    assert expected_calibration_error(*constant_confidence(n_correct)) == pytest.approx(ece, abs=1e-12)


def test_ece_two_bins_by_hand():
    probabilities = np.array([[0.9, 0.1]] * 4 + [[0.4, 0.6]] * 6)
    y_true = np.array([0, 0, 0, 1] + [1, 1, 1, 0, 0, 0])
    # bin 0.9: acc 0.75, gap 0.15, weight 0.4; bin 0.6: acc 0.5, gap 0.1, weight 0.6 -> 0.06 + 0.06
    assert expected_calibration_error(probabilities, y_true, n_bins=10) == pytest.approx(0.12)


def test_reliability_curve_columns_and_counts():
    curve = reliability_curve(*constant_confidence(5), n_bins=5)
    assert list(curve.columns) == ["bin_lower", "bin_upper", "count", "mean_confidence", "accuracy"]
    assert len(curve) == 5 and curve["count"].sum() == 10
    filled = curve[curve["count"] > 0]
    assert len(filled) == 1 and filled["bin_upper"].iloc[0] == pytest.approx(0.8)
    assert filled["accuracy"].iloc[0] == 0.5 and filled["mean_confidence"].iloc[0] == pytest.approx(0.8)
    assert curve.loc[curve["count"] == 0, "accuracy"].isna().all()


def test_calibration_input_errors():
    with pytest.raises(OptionError, match="sum to 1"):
        expected_calibration_error([[0.5, 0.6]], [0])
    with pytest.raises(OptionError, match="0..1"):
        brier_score([[0.5, 0.5]], [2])


def test_brier_score_by_hand():
    probabilities = np.array([[1.0, 0.0], [0.5, 0.5], [0.2, 0.8]])
    # 0 + (0.25 + 0.25) + (0.64 + 0.64) = 1.78 over 3 items
    assert brier_score(probabilities, [0, 0, 0]) == pytest.approx(1.78 / 3)
    assert brier_score(np.eye(3), [0, 1, 2]) == 0.0


def test_temperature_scaling_recovers_overconfidence():
    rng = np.random.default_rng(0)
    calibrated_logits = rng.normal(0, 2, (3000, 3))
    probabilities = apply_temperature(calibrated_logits, 1.0)
    y_true = np.array([rng.choice(3, p=p) for p in probabilities])
    temperature = fit_temperature(3.0 * calibrated_logits, y_true)
    assert temperature == pytest.approx(3.0, rel=0.1)
    scaled = apply_temperature(3.0 * calibrated_logits, temperature)
    np.testing.assert_allclose(scaled.sum(axis=1), 1.0)
    np.testing.assert_array_equal(scaled.argmax(axis=1), calibrated_logits.argmax(axis=1))
    with pytest.raises(OptionError, match="`temperature`"):
        apply_temperature(calibrated_logits, 0.0)


def test_inputs_not_modified():
    probabilities = pd.DataFrame(np.tile([0.7, 0.3], (4, 1))).to_numpy()
    before = probabilities.copy()
    expected_calibration_error(probabilities, [0, 1, 0, 0])
    brier_score(probabilities, [0, 1, 0, 0])
    np.testing.assert_array_equal(probabilities, before)
