"""Per-plate normalisation against DMSO cells and ZCA whitening: the affine maps the BBBC021 protocol applies.

Both are fit on the DMSO (negative control) cells only, so the treated cells never shape their own
normalisation. See :mod:`cytolens.profile.profiles` for where they are applied.
"""

from __future__ import annotations

import numpy as np

from cytolens.core.errors import CytolensError, check_choice

__all__ = ["MAD_TO_STD", "NORMALIZATIONS", "fit_whitening", "plate_dmso_statistics"]

NORMALIZATIONS = ("standard", "robust")
#: Scales a median absolute deviation to the standard deviation of a normal distribution (pycytominer's too).
MAD_TO_STD = 1.4826


def plate_dmso_statistics(
    dmso_cells: dict[str, np.ndarray], *, normalization: str = "standard"
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Centre and scale of each feature over each plate's DMSO cells.

    Parameters
    ----------
    dmso_cells : dict of plate to (n, F) ndarray
        The DMSO cells of each plate.
    normalization : {"standard", "robust"}
        ``"standard"``: mean and standard deviation (ddof 0, as scikit-learn's StandardScaler and pycytominer).
        ``"robust"``: median and 1.4826 · median absolute deviation.

    Returns
    -------
    dict of plate to (centre, scale)
        A scale of 0 (a feature constant over the plate's DMSO cells) is replaced by the scale over all plates'
        DMSO cells, and by 1 if that is 0 too, so no value becomes infinite.
    """
    check_choice("normalization", normalization, NORMALIZATIONS)
    if not dmso_cells:
        raise CytolensError("no DMSO cells: the BBBC021 protocol normalises each plate against its DMSO wells")

    def centre_scale(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = np.asarray(values, dtype=np.float64)
        if normalization == "standard":
            return values.mean(axis=0), values.std(axis=0)
        median = np.median(values, axis=0)
        return median, MAD_TO_STD * np.median(np.abs(values - median), axis=0)

    _, pooled_scale = centre_scale(np.concatenate(list(dmso_cells.values())))
    pooled_scale = np.where(pooled_scale > 0, pooled_scale, 1.0)
    stats = {}
    for plate, values in dmso_cells.items():
        centre, scale = centre_scale(values)
        stats[plate] = (centre, np.where(scale > 0, scale, pooled_scale))
    return stats


def fit_whitening(samples: np.ndarray, *, regularization: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """ZCA whitening fit on ``samples``: returns ``(mean, matrix)`` so that ``(x - mean) @ matrix`` is white.

    Parameters
    ----------
    samples : (n, F) ndarray
        The reference vectors (the DMSO cells), n >= 2.
    regularization : float, default 0.01
        Added to every eigenvalue of the covariance as a fraction of their mean, so directions with almost no
        DMSO variance are not blown up.

    Returns
    -------
    mean : (F,) ndarray
    matrix : (F, F) ndarray
        Symmetric: ``U diag(1 / sqrt(λ + ε)) Uᵀ``.
    """
    values = np.asarray(samples, dtype=np.float64)
    if values.ndim != 2 or len(values) < 2:
        raise CytolensError(f"whitening needs at least 2 reference vectors, got shape {values.shape}")
    if regularization < 0:
        raise CytolensError(f"`regularization` must be >= 0, got {regularization!r}")
    mean = values.mean(axis=0)
    covariance = np.cov(values - mean, rowvar=False).reshape(values.shape[1], values.shape[1])
    eigenvalues, vectors = np.linalg.eigh(covariance)
    eigenvalues = np.maximum(eigenvalues, 0.0)
    epsilon = regularization * max(float(eigenvalues.mean()), 1e-12)
    matrix = (vectors / np.sqrt(eigenvalues + epsilon)) @ vectors.T
    return mean, matrix
