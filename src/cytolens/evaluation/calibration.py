"""Calibration of predicted probabilities: reliability curves, expected calibration error, Brier score and
temperature scaling.

A classifier's probabilities are used for triage (which cells to look at first), so they should mean what
they say; these functions measure that and fix the commonest failure (over-confidence) with one parameter.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, special

from cytolens.core.errors import OptionError
from cytolens.evaluation.stats import _labels, _same_length

__all__ = ["apply_temperature", "brier_score", "expected_calibration_error", "fit_temperature", "reliability_curve"]


def _probabilities(probabilities: Any, y_true: Any) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probabilities, dtype=float)
    if probs.ndim != 2 or probs.shape[0] == 0 or probs.shape[1] < 2:
        raise OptionError(f"`probabilities` must have shape (N, K) with N >= 1, K >= 2, got {probs.shape}")
    if not np.isfinite(probs).all() or (probs < 0).any() or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise OptionError("`probabilities` must be finite, non-negative and sum to 1 per row (apply softmax first)")
    labels = _labels(y_true, probs.shape[1])
    _same_length(probs, labels, "probabilities", "y_true")
    return probs, labels


def reliability_curve(probabilities: Any, y_true: Any, *, n_bins: int = 15) -> pd.DataFrame:
    """Accuracy against top-label confidence in equal-width bins.

    Parameters
    ----------
    probabilities : (N, K) array-like of float
        Class probabilities, rows summing to 1.
    y_true : (N,) array-like of int
        True class indices.
    n_bins : int, default 15
        Bins ``(lower, upper]`` over ``[0, 1]`` (the first also holds confidence 0).

    Returns
    -------
    pandas.DataFrame
        One row per bin with columns ``bin_lower``, ``bin_upper``, ``count``, ``mean_confidence`` and
        ``accuracy`` (NaN for empty bins).
    """
    if int(n_bins) != n_bins or n_bins < 1:
        raise OptionError(f"`n_bins` must be a positive integer, got {n_bins!r}")
    probs, labels = _probabilities(probabilities, y_true)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(confidence, edges, right=True) - 1, 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, weights=confidence, minlength=n_bins) / count
        bin_accuracy = np.bincount(index, weights=correct.astype(float), minlength=n_bins) / count
    return pd.DataFrame(
        {
            "bin_lower": edges[:-1],
            "bin_upper": edges[1:],
            "count": count.astype(np.int64),
            "mean_confidence": mean_confidence,
            "accuracy": bin_accuracy,
        }
    )


def expected_calibration_error(probabilities: Any, y_true: Any, *, n_bins: int = 15) -> float:
    """Top-label expected calibration error (Guo et al. 2017).

    Parameters
    ----------
    probabilities, y_true, n_bins
        As in :func:`reliability_curve`.

    Returns
    -------
    float
        ``sum_b (n_b / N) * |accuracy_b - mean_confidence_b|`` over non-empty bins; 0 is perfectly calibrated.
    """
    curve = reliability_curve(probabilities, y_true, n_bins=n_bins)
    filled = curve[curve["count"] > 0]
    weights = filled["count"] / filled["count"].sum()
    return float(np.sum(weights * np.abs(filled["accuracy"] - filled["mean_confidence"])))


def brier_score(probabilities: Any, y_true: Any) -> float:
    """Multi-class Brier score: mean over items of ``sum_k (p_k - [y == k])**2``.

    Parameters
    ----------
    probabilities, y_true
        As in :func:`reliability_curve`.

    Returns
    -------
    float
        In ``[0, 2]``; 0 for confident correct predictions.
    """
    probs, labels = _probabilities(probabilities, y_true)
    one_hot = np.eye(probs.shape[1])[labels]
    return float(np.mean(np.sum((probs - one_hot) ** 2, axis=1)))


def apply_temperature(logits: Any, temperature: float) -> np.ndarray:
    """Softmax of ``logits / temperature``.

    Parameters
    ----------
    logits : (N, K) array-like of float
        Unnormalised scores.
    temperature : float
        Positive; > 1 softens, < 1 sharpens the probabilities.

    Returns
    -------
    (N, K) ndarray of float64
        Probabilities, rows summing to 1.
    """
    if not np.isfinite(temperature) or temperature <= 0:
        raise OptionError(f"`temperature` must be positive and finite, got {temperature!r}")
    scores = np.asarray(logits, dtype=float)
    if scores.ndim != 2:
        raise OptionError(f"`logits` must have shape (N, K), got {scores.shape}")
    return special.softmax(scores / temperature, axis=1)


def fit_temperature(logits: Any, y_true: Any, *, bounds: tuple[float, float] = (0.01, 100.0)) -> float:
    """Temperature scaling: the T minimising the negative log-likelihood of ``softmax(logits / T)``.

    Parameters
    ----------
    logits : (N, K) array-like of float
        Unnormalised scores on a held-out (validation) set, never the test set.
    y_true : (N,) array-like of int
        True class indices.
    bounds : (float, float), default (0.01, 100)
        Search range for T (searched on log T).

    Returns
    -------
    float
        The fitted temperature; use with :func:`apply_temperature`. Argmax predictions are unchanged.
    """
    scores = np.asarray(logits, dtype=float)
    if scores.ndim != 2 or scores.shape[0] == 0 or not np.isfinite(scores).all():
        raise OptionError(f"`logits` must be a finite (N, K) array with N >= 1, got shape {scores.shape}")
    labels = _labels(y_true, scores.shape[1])
    _same_length(scores, labels, "logits", "y_true")
    if not 0 < bounds[0] < bounds[1]:
        raise OptionError(f"`bounds` must satisfy 0 < low < high, got {bounds!r}")

    def nll(log_t: float) -> float:
        scaled = scores / np.exp(log_t)
        return float(np.mean(special.logsumexp(scaled, axis=1) - scaled[np.arange(len(labels)), labels]))

    result = optimize.minimize_scalar(nll, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded")
    return float(np.exp(result.x))
