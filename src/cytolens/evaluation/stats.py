"""Evaluation statistics: accuracy with intervals, paired tests between classifiers, confusion and calibration.

Test sets in cell microscopy are small (Shpilman et al. 2017 test on 100 cells per class), so every accuracy
should travel with an interval, and two classifiers scored on the *same* cells should be compared with a paired
test (:func:`mcnemar_exact`, or the paper's :func:`paired_t_test`), not by eye. Calibration lives in
:mod:`cytolens.evaluation.calibration`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import stats as sps

from cytolens.core.errors import OptionError, check_choice

__all__ = [
    "McNemarResult", "TTestResult", "accuracy", "benjamini_hochberg", "bootstrap_interval", "confusion_matrix",
    "mcnemar_exact", "most_confused_pairs", "paired_t_test", "permutation_p_value", "proportion_interval",
    "welch_t_test",
]

#: Two statistics closer than this count as equal in :func:`permutation_p_value`: average precisions are ratios of
#: small integers whose float sums differ in the last bits (1/3 + 2/3 is not exactly 1).
TIE_TOLERANCE = 1e-9


# ------------------------------------------------------------------------------------------------ helpers


def _vector(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise OptionError(f"`{name}` must be 1-D, got shape {array.shape}")
    if array.size == 0:
        raise OptionError(f"`{name}` must not be empty")
    return array


def _same_length(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if len(a) != len(b):
        raise OptionError(f"`{name_a}` and `{name_b}` must have the same length, got {len(a)} and {len(b)}")


def _correctness(values: Any, name: str) -> np.ndarray:
    array = _vector(values, name)
    if array.dtype != bool:
        if not np.isin(array, (0, 1)).all():
            raise OptionError(f"`{name}` must be boolean (or 0/1), got values {np.unique(array)[:5]!r}")
        array = array.astype(bool)
    return array


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise OptionError(f"`confidence` must be in (0, 1), got {confidence!r}")


def _labels(y_true: Any, n_classes: int, name: str = "y_true") -> np.ndarray:
    labels = _vector(y_true, name)
    if not np.issubdtype(labels.dtype, np.integer):
        raise OptionError(f"`{name}` must hold integer class indices, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise OptionError(f"`{name}` must lie in 0..{n_classes - 1}, got range {labels.min()}..{labels.max()}")
    return labels


def _zero_variance(mean: float, df: float) -> TTestResult:
    # t = mean / 0 is undefined; a difference with no spread is certain, no difference is no evidence.
    if mean == 0.0:
        return TTestResult(0.0, 0.0, df, 1.0)
    return TTestResult(mean, float(np.sign(mean) * np.inf), df, 0.0)


# ------------------------------------------------------------------------------------------------ accuracy and intervals


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of items whose prediction equals the true label.

    Parameters
    ----------
    y_true, y_pred : (N,) array-like
        Labels of any comparable type; same length, N >= 1.

    Returns
    -------
    float
        Accuracy in ``[0, 1]``.
    """
    truth, pred = _vector(y_true, "y_true"), _vector(y_pred, "y_pred")
    _same_length(truth, pred, "y_true", "y_pred")
    return float(np.mean(truth == pred))


def proportion_interval(
    successes: int,
    n: int,
    *,
    confidence: float = 0.95,
    method: Literal["wilson", "clopper-pearson"] = "wilson",
) -> tuple[float, float]:
    """Confidence interval for a binomial proportion such as an accuracy.

    Parameters
    ----------
    successes : int
        Number of successes (e.g. correctly classified cells), ``0 <= successes <= n``.
    n : int
        Number of trials, ``n >= 1``.
    confidence : float, default 0.95
        Coverage of the interval.
    method : {"wilson", "clopper-pearson"}, default "wilson"
        ``"wilson"``: the Wilson score interval (good coverage, never leaves ``[0, 1]``).
        ``"clopper-pearson"``: the exact interval from beta quantiles (conservative).

    Returns
    -------
    (float, float)
        Lower and upper bound. At ``successes == 0`` the lower bound is exactly 0, at ``successes == n`` the
        upper bound is exactly 1.
    """
    check_choice("method", method, ("wilson", "clopper-pearson"))
    _check_confidence(confidence)
    if int(n) != n or n < 1:
        raise OptionError(f"`n` must be a positive integer, got {n!r}")
    if int(successes) != successes or not 0 <= successes <= n:
        raise OptionError(f"`successes` must be an integer in 0..{n}, got {successes!r}")
    # SciPy's binomtest: "exact" is Clopper-Pearson's beta-quantile interval.
    interval = sps.binomtest(int(successes), int(n)).proportion_ci(
        confidence_level=confidence, method="exact" if method == "clopper-pearson" else "wilson")
    # The bounds are exactly 0 and 1 at the ends (SciPy's Wilson bound can miss by a rounding error).
    lower = 0.0 if successes == 0 else max(0.0, float(interval.low))
    upper = 1.0 if successes == n else min(1.0, float(interval.high))
    return lower, upper


def bootstrap_interval(
    statistic: Callable[..., float],
    *arrays: Any,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    groups: Any = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*arrays)``.

    Parameters
    ----------
    statistic : callable
        Called as ``statistic(*resampled_arrays)``, returns a float (e.g. :func:`accuracy`).
    *arrays : array-like
        One or more arrays with the same length along axis 0; rows (items) are resampled jointly, so
        ``y_true[i]`` stays paired with ``y_pred[i]``.
    n_resamples : int, default 2000
        Number of bootstrap resamples.
    confidence : float, default 0.95
        Coverage of the interval.
    seed : int, default 0
        Seed of the resampling; the same seed gives the same interval.
    groups : (N,) array-like, optional
        Group of each item (e.g. the original image of rotated copies, or the well). Whole groups are
        resampled with replacement (a cluster bootstrap), which is required when items within a group are
        correlated; otherwise the interval is too narrow.

    Returns
    -------
    (float, float)
        Lower and upper percentiles. If the statistic returns NaN on some resample the bounds are NaN.
    """
    if not arrays:
        raise OptionError("`bootstrap_interval` needs at least one array")
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise OptionError(f"`n_resamples` must be a positive integer, got {n_resamples!r}")
    _check_confidence(confidence)
    data = [np.asarray(a) for a in arrays]
    n = len(data[0])
    if n == 0 or any(a.ndim == 0 or len(a) != n for a in data):
        raise OptionError(f"arrays must be non-empty with the same length, got {[np.shape(a) for a in data]}")
    rng = np.random.default_rng(seed)
    if groups is None:
        members = None
    else:
        group_labels = _vector(groups, "groups")
        if len(group_labels) != n:
            raise OptionError(f"`groups` must have length {n}, got {len(group_labels)}")
        _, codes = np.unique(group_labels, return_inverse=True)
        members = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
    values = np.empty(n_resamples)
    for r in range(n_resamples):
        if members is None:
            index = rng.integers(0, n, n)
        else:
            index = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        values[r] = statistic(*(a[index] for a in data))
    alpha = 1.0 - confidence
    lower, upper = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(lower), float(upper)


# ------------------------------------------------------------------------------------------------ paired tests


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test of two classifiers on the same items.

    Attributes
    ----------
    b : int
        Items classifier A got right and B got wrong.
    c : int
        Items A got wrong and B got right.
    statistic : int
        ``min(b, c)``, the binomial test statistic.
    p_value : float
        Two-sided exact p-value, ``min(1, 2 * Binom(b + c, 0.5).cdf(min(b, c)))``; 1 when ``b + c == 0``.
    """

    b: int
    c: int
    statistic: int
    p_value: float


@dataclass(frozen=True)
class TTestResult:
    """Result of a t-test.

    Attributes
    ----------
    mean_difference : float
        Mean of A minus mean of B.
    statistic : float
        The t statistic (may be ``±inf``, see the test's notes).
    df : float
        Degrees of freedom (Welch–Satterthwaite for :func:`welch_t_test`).
    p_value : float
        Two-sided p-value.
    """

    mean_difference: float
    statistic: float
    df: float
    p_value: float


def mcnemar_exact(correct_a: Any, correct_b: Any) -> McNemarResult:
    """Exact (binomial) McNemar test: do two classifiers scored on the same items differ in accuracy?

    Parameters
    ----------
    correct_a, correct_b : (N,) array-like of bool
        Whether classifier A (resp. B) got item ``i`` right; 0/1 integers are accepted.

    Returns
    -------
    McNemarResult
        Only discordant items (one right, the other wrong) carry information.
    """
    a, b_ = _correctness(correct_a, "correct_a"), _correctness(correct_b, "correct_b")
    _same_length(a, b_, "correct_a", "correct_b")
    b, c = int(np.sum(a & ~b_)), int(np.sum(~a & b_))
    # Under the null each discordant item goes either way with probability 1/2: a two-sided binomial test.
    p_value = 1.0 if b + c == 0 else float(sps.binomtest(b, b + c, 0.5).pvalue)
    return McNemarResult(b=b, c=c, statistic=min(b, c), p_value=p_value)


def paired_t_test(correct_a: Any, correct_b: Any) -> TTestResult:
    """Paired t-test on per-item 0/1 correctness, as used by Shpilman et al. (2017).

    Parameters
    ----------
    correct_a, correct_b : (N,) array-like of bool
        Whether classifier A (resp. B) got item ``i`` right, same items in the same order, N >= 2.

    Returns
    -------
    TTestResult
        ``mean_difference`` is accuracy(A) − accuracy(B); ``df = N − 1``.

    Notes
    -----
    With zero variance of the differences the t statistic is undefined; by convention identical vectors give
    ``t = 0, p = 1`` and a constant non-zero difference gives ``t = ±inf, p = 0``. On 0/1 data the exact
    :func:`mcnemar_exact` is usually preferable; this test is offered to reproduce the paper.
    """
    a, b = _correctness(correct_a, "correct_a"), _correctness(correct_b, "correct_b")
    _same_length(a, b, "correct_a", "correct_b")
    if len(a) < 2:
        raise OptionError(f"`paired_t_test` needs at least 2 items, got {len(a)}")
    differences = a.astype(float) - b.astype(float)
    mean, df = float(differences.mean()), float(len(a) - 1)
    if np.all(differences == differences[0]):
        return _zero_variance(mean, df)
    result = sps.ttest_rel(a.astype(float), b.astype(float))
    return TTestResult(mean, float(result.statistic), df, float(result.pvalue))


def welch_t_test(scores_a: Any, scores_b: Any) -> TTestResult:
    """Welch's unequal-variance t-test on two independent samples, e.g. per-fold accuracies of two methods.

    Parameters
    ----------
    scores_a, scores_b : (N,) and (M,) array-like of float
        Independent samples, at least 2 values each.

    Returns
    -------
    TTestResult
        If both samples have zero variance: equal means give ``t = 0, p = 1``, different means
        ``t = ±inf, p = 0``.
    """
    a = _vector(scores_a, "scores_a").astype(float)
    b = _vector(scores_b, "scores_b").astype(float)
    if len(a) < 2 or len(b) < 2:
        raise OptionError(f"`welch_t_test` needs at least 2 values per sample, got {len(a)} and {len(b)}")
    mean = float(a.mean() - b.mean())
    if a.var() == 0.0 and b.var() == 0.0:
        return _zero_variance(mean, float(len(a) + len(b) - 2))
    # Written out rather than scipy.stats.ttest_ind(equal_var=False) (same numbers): scipy warns about
    # "catastrophic cancellation" whenever one sample is constant, which is common for per-fold accuracies.
    var_a, var_b = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    statistic = mean / np.sqrt(var_a + var_b)
    df = (var_a + var_b) ** 2 / (var_a**2 / (len(a) - 1) + var_b**2 / (len(b) - 1))
    return TTestResult(mean, float(statistic), float(df), float(2 * sps.t.sf(abs(statistic), df)))


# ------------------------------------------------------------------------------------------------ confusion


def confusion_matrix(y_true: Any, y_pred: Any, *, n_classes: int) -> np.ndarray:
    """Count matrix of true against predicted class.

    Parameters
    ----------
    y_true, y_pred : (N,) array-like of int
        Class indices in ``0..n_classes-1``.
    n_classes : int
        Number of classes (fixes the shape even if a class never occurs).

    Returns
    -------
    (n_classes, n_classes) ndarray of int64
        ``matrix[i, j]`` = number of items of true class ``i`` predicted as ``j`` (rows = truth, columns =
        prediction, as in scikit-learn). Shpilman et al. (2017, Tables II–III) print the transpose (rows =
        guess, columns = truth): compare with ``matrix.T``.
    """
    if int(n_classes) != n_classes or n_classes < 1:
        raise OptionError(f"`n_classes` must be a positive integer, got {n_classes!r}")
    truth, pred = _labels(y_true, n_classes, "y_true"), _labels(y_pred, n_classes, "y_pred")
    _same_length(truth, pred, "y_true", "y_pred")
    counts = np.bincount(truth.astype(np.int64) * n_classes + pred, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes).astype(np.int64)


def most_confused_pairs(matrix: Any, class_names: Any, top: int = 3) -> list[tuple[str, str, int]]:
    """The largest off-diagonal cells of a confusion matrix.

    Parameters
    ----------
    matrix : (K, K) array-like
        Confusion matrix with rows = true class (see :func:`confusion_matrix`).
    class_names : sequence of str
        K names.
    top : int, default 3
        Maximum number of pairs returned.

    Returns
    -------
    list of (str, str, int)
        ``(true_class, predicted_class, count)``, largest count first (ties in row-major order); cells with
        count 0 are left out.
    """
    counts = np.asarray(matrix)
    names = [str(name) for name in class_names]
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(names):
        raise OptionError(f"`matrix` must be square with one row per class name, got {counts.shape}, {len(names)}")
    if int(top) != top or top < 1:
        raise OptionError(f"`top` must be a positive integer, got {top!r}")
    cells = [(i, j) for i in range(len(names)) for j in range(len(names)) if i != j and counts[i, j] > 0]
    cells.sort(key=lambda cell: -counts[cell])  # stable sort keeps row-major order among ties
    return [(names[i], names[j], int(counts[i, j])) for i, j in cells[:top]]


# ------------------------------------------------------------------------------------------------ multiple tests


def permutation_p_value(observed: float, null: Any) -> float:
    """One-sided permutation p-value with ties counted: ``(1 + #{null >= observed}) / (1 + n_null)``.

    Null values equal to ``observed`` (within :data:`TIE_TOLERANCE`) count as at least as extreme, as a
    permutation test requires (Phipson & Smyth 2010); with coarse nulls, such as the average precision of a few
    positives among a few candidates, ignoring ties makes the p-value far too small.

    Parameters
    ----------
    observed : float
        The statistic of the real labelling (larger = more extreme).
    null : (n_null,) array-like of float
        The statistic under random labellings, ``n_null >= 1``.

    Returns
    -------
    float
        In ``[1 / (1 + n_null), 1]``.
    """
    values = _vector(null, "null").astype(np.float64)
    if values.size == 0:
        raise OptionError("`null` must hold at least one value")
    if not np.isfinite(observed):
        raise OptionError(f"`observed` must be finite, got {observed!r}")
    at_least = int(np.count_nonzero(values >= float(observed) - TIE_TOLERANCE))
    return (1 + at_least) / (1 + values.size)


def benjamini_hochberg(p_values: Any) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values), through :func:`scipy.stats.false_discovery_control`.

    Parameters
    ----------
    p_values : (n,) array-like of float
        p-values in ``[0, 1]``; NaN entries (untested hypotheses) stay NaN and do not count among the tests.

    Returns
    -------
    (n,) ndarray of float64
    """
    values = _vector(p_values, "p_values").astype(np.float64)
    out = np.full(values.shape, np.nan)
    tested = ~np.isnan(values)
    if np.any((values[tested] < 0) | (values[tested] > 1)):
        raise OptionError("`p_values` must lie in [0, 1]")
    if tested.any():
        out[tested] = sps.false_discovery_control(values[tested], method="bh")
    return out
