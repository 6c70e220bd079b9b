"""Hand-crafted single-cell features: the classical baseline the CNN of Shpilman et al. 2017 is compared with.

One image of one cell becomes one row of named numbers, in five groups (the prefix of every name):

``intensity_``
    Intensity statistics inside the cell mask on the per-image normalised image, and the raw
    cell-to-background ratio.
``texture_``
    Grey-level co-occurrence (GLCM) properties at distances 1, 2 and 4 px averaged over four angles, and the
    uniform local-binary-pattern histogram (P = 8, R = 1).
``filament_``
    Everything :func:`cytolens.classify.filaments.filament_features` measures (radial order, bundling, coherence,
    polymer, …) except the centre's coordinates, measured on the robust-scaled but *unclipped* image, so
    ``filament_mean_intensity`` and ``filament_total_polymer`` keep the absolute, background-subtracted signal
    relative to the image's own range (in working-size pixels). Plus the entropy of the filament-orientation
    histogram, and radial order in the inner and outer half of the cell (taxol-stabilised microtubules curl
    along the periphery).
``ridge_``
    Multi-scale bright-line measures: mean ridge strength, ridge-pixel fraction, skeleton length per cell area,
    branch and end points per skeleton length and the mean ridge width.
``shape_``
    Cell area fraction, solidity, eccentricity, the share of the outline on the image border (cells cut by the
    frame) and two focus measures (out-of-focus cells).

Every image is first resized (anti-aliased) so that its longer side is ``working_size`` pixels, so features do
not depend on the camera's pixel count, and scaled per image so that its 0.5th and 99.8th intensity
percentiles map to 0 and 1. Degenerate cases (a flat image, an empty mask, no ridges) would give NaN for some
measures; those are reported as 0 so every value is finite and a tree model can still split on them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import ndimage as ndi

from cytolens.classify import filaments
from cytolens.core.errors import OptionError
from cytolens.data.io import read_image, to_grayscale
from cytolens.data.transforms import resize

__all__ = ["FEATURES_VERSION", "extract_features", "feature_names", "feature_table"]

# Bump whenever a feature's definition changes, so stored tables are not mixed with new ones.
FEATURES_VERSION = "1"

_PERCENTILES = (0.5, 99.8)
# cytolens.classify.filaments.cell_mask thresholds the log of the intensity, which is only scale-free for camera-like
# ranges; giving it the robust-scaled image on a fixed 12-bit range makes the mask the same for every dtype.
_MASK_SCALE = 4095.0
_GLCM_LEVELS = 32
_GLCM_DISTANCES = (1, 2, 4)
_GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
_GLCM_PROPS = ("contrast", "homogeneity", "energy", "correlation", "dissimilarity", "ASM")
_LBP_POINTS = 8
# Ridge scales at the working size: single filaments (also the scale of the orientation measures) and bundles.
_RIDGE_SIGMA, _BUNDLE_SIGMA = 1.5, 3.0
_ORIENTATION_BINS = 18
_FILAMENT_KEYS = (
    "radial_order",
    "bundling_index",
    "orientation_coherence",
    "total_polymer",
    "mean_intensity",
    "cell_area",
    "background",
)

_NAMES: tuple[str, ...] = (
    *(
        f"intensity_{name}"
        for name in (
            "mean std p10 p50 p90 p99 skewness kurtosis saturated_fraction bright_fraction "
            "coefficient_of_variation cell_to_background_ratio"
        ).split()
    ),
    *(f"texture_glcm_{prop.lower()}_d{d}" for prop in _GLCM_PROPS for d in _GLCM_DISTANCES),
    *(f"texture_lbp_u{k}" for k in range(_LBP_POINTS + 1)),
    "texture_lbp_nonuniform",
    *(f"filament_{key}" for key in _FILAMENT_KEYS),
    "filament_orientation_entropy",
    "filament_radial_order_inner",
    "filament_radial_order_outer",
    "ridge_mean_response",
    "ridge_pixel_fraction",
    "ridge_skeleton_length_per_area",
    "ridge_branch_points_per_length",
    "ridge_end_points_per_length",
    "ridge_mean_width",
    "shape_area_fraction",
    "shape_solidity",
    "shape_eccentricity",
    "shape_border_fraction",
    "shape_focus_laplacian_var",
    "shape_focus_high_frequency_ratio",
)


def feature_names() -> list[str]:
    """Names of the features :func:`extract_features` returns, in their stable order.

    Returns
    -------
    list of str
        Snake-case names prefixed by their group (``intensity_``, ``texture_``, ``filament_``, ``ridge_``,
        ``shape_``).
    """
    return list(_NAMES)


def _prepare(image: np.ndarray, working_size: int) -> NDArray[np.float64]:
    array = np.asarray(image)
    if array.ndim == 3:
        array = to_grayscale(array)
    if array.ndim != 2:
        raise OptionError(f"`image` must be a 2-D grayscale or channels-last image, got shape {array.shape!r}.")
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise OptionError(f"`image` must have a numeric dtype, got {array.dtype}.")
    if min(array.shape) < 8:
        raise OptionError(f"`image` must be at least 8 × 8 pixels, got shape {array.shape!r}.")
    data = array.astype(np.float64)  # a copy: the caller's array is never touched
    if not np.all(np.isfinite(data)):
        raise OptionError("`image` contains NaN or infinite values.")
    scale = working_size / max(data.shape)
    shape = (max(8, round(data.shape[0] * scale)), max(8, round(data.shape[1] * scale)))
    # Float in, float out: resizing an integer image directly would round away 8-bit detail.
    return resize(data, shape, anti_aliasing=True) if shape != data.shape else data


def _saturated_fraction(image: np.ndarray) -> float:
    """Share of pixels at a clipped top value: the top of the bit depth in use (ints) or 1.0 (floats)."""
    top = float(np.max(image))
    if np.issubdtype(image.dtype, np.integer):
        # 2**k − 1 with k ≥ 8: the ceiling of an 8- to 16-bit converter (a small 2**k − 1 is just dim data)
        clipped = top >= 255 and (int(top) + 1) & int(top) == 0
    else:
        clipped = top == 1.0
    return float(np.mean(image == top)) if clipped else 0.0


def _moments(values: NDArray[np.float64]) -> tuple[float, float]:
    """Skewness and excess kurtosis; 0 for (near-)constant values, where they are undefined."""
    centred = values - values.mean()
    squared = centred * centred  # products, not powers: ** on arrays is several times slower
    var = float(np.mean(squared))
    if values.size < 3 or var <= 1e-12:
        return 0.0, 0.0
    return float(np.mean(squared * centred) / var**1.5), float(np.mean(squared * squared) / var**2 - 3.0)


def _intensity(unit: NDArray[np.float64], region: NDArray[np.bool_]) -> dict[str, float]:
    values = unit[region]
    mean, std = float(values.mean()), float(values.std())
    p10, p50, p90, p99 = np.percentile(values, [10, 50, 90, 99])
    skewness, kurtosis = _moments(values)
    return {
        "intensity_mean": mean,
        "intensity_std": std,
        "intensity_p10": float(p10),
        "intensity_p50": float(p50),
        "intensity_p90": float(p90),
        "intensity_p99": float(p99),
        "intensity_skewness": skewness,
        "intensity_kurtosis": kurtosis,
        "intensity_bright_fraction": float(np.mean(values > 0.5)),
        "intensity_coefficient_of_variation": std / mean if mean > 1e-12 else 0.0,
    }


def _bounding_box(region: NDArray[np.bool_], margin: int = 0) -> tuple[slice, slice]:
    rows, cols = np.nonzero(region)
    return (
        slice(max(rows.min() - margin, 0), rows.max() + 1 + margin),
        slice(max(cols.min() - margin, 0), cols.max() + 1 + margin),
    )


def _texture(unit: NDArray[np.float64], region: NDArray[np.bool_]) -> dict[str, float]:
    from skimage.feature import graycomatrix, graycoprops, local_binary_pattern

    box = unit[_bounding_box(region)]
    levels = np.minimum((box * _GLCM_LEVELS).astype(np.uint8), _GLCM_LEVELS - 1)
    glcm = graycomatrix(levels, _GLCM_DISTANCES, _GLCM_ANGLES, levels=_GLCM_LEVELS, symmetric=True, normed=True)
    out: dict[str, float] = {}
    for prop in _GLCM_PROPS:
        per_distance = graycoprops(glcm, prop).mean(axis=1)  # (distances, angles) → rotation-invariant
        for d, value in zip(_GLCM_DISTANCES, per_distance, strict=True):
            out[f"texture_glcm_{prop.lower()}_d{d}"] = float(value)
    # LBP on 8-bit codes: on floats, noise-level differences in flat areas would flip the binary pattern.
    # Only the cell's box plus a 1-px margin (the LBP radius) is coded: same codes, a fraction of the cost.
    rows, cols = _bounding_box(region, margin=1)
    codes = local_binary_pattern(
        np.round(unit[rows, cols] * 255).astype(np.uint8), _LBP_POINTS, 1, method="uniform"
    )
    counts = np.bincount(codes[region[rows, cols]].astype(np.intp), minlength=_LBP_POINTS + 2).astype(np.float64)
    fractions = counts / counts.sum()
    for k in range(_LBP_POINTS + 1):
        out[f"texture_lbp_u{k}"] = float(fractions[k])
    out["texture_lbp_nonuniform"] = float(fractions[_LBP_POINTS + 1])
    return out


def _orientation_measures(
    strength: NDArray[np.float64],
    orientation: NDArray[np.float64],
    region: NDArray[np.bool_],
    center: tuple[float, float],
) -> dict[str, float]:
    rows, cols = np.nonzero(region)  # only the cell votes; sparse coordinates halve the cost
    weight = strength[rows, cols]
    theta = orientation[rows, cols]
    hist, _ = np.histogram(theta, bins=_ORIENTATION_BINS, range=(-np.pi / 2, np.pi / 2), weights=weight)
    total = float(hist.sum())
    entropy = 0.0
    if total > 0:
        p = hist[hist > 0] / total
        entropy = float(-np.sum(p * np.log(p)) / np.log(_ORIENTATION_BINS))  # 1 = all directions equally
    # The ridge-weighted mean of cos 2(θ_filament − θ_radial), the definition of filaments.radial_order, split
    # at the median depth inside the cell: the outer half is where stabilised microtubules curl along the
    # cortex. Computed here from the shared ridge field because two radial_order calls would double the cost.
    dr, dc = rows - center[0], cols - center[1]
    alignment = np.cos(2.0 * (theta - np.arctan2(dr, dc)))
    votes = weight * (np.hypot(dr, dc) > max(3.0, 3.0 * _RIDGE_SIGMA))  # radial direction undefined at centre
    depth = ndi.distance_transform_edt(region)[rows, cols]
    split = float(np.median(depth))
    out = {"filament_orientation_entropy": entropy}
    for name, part in (("inner", depth > split), ("outer", depth <= split)):
        w = votes * part
        w_total = float(w.sum())
        out[f"filament_radial_order_{name}"] = float(np.sum(w * alignment) / w_total) if w_total > 0 else 0.0
    return out


def _ridges(
    scaled: NDArray[np.float64], strength: NDArray[np.float64], region: NDArray[np.bool_]
) -> dict[str, float]:
    from skimage.filters import threshold_otsu
    from skimage.morphology import skeletonize

    # Scale-normalised Hessian ridge strength, max over a filament scale and a bundle scale: a multi-scale
    # bright-line filter like skimage.filters.sato at a tenth of its cost (sato takes > 100 ms on 256 × 256).
    coarse = filaments.ridge_response(scaled, sigma=_BUNDLE_SIGMA)
    response = np.maximum(strength, coarse)
    values = response[region]
    area = float(region.sum())
    floor = 0.02  # a line of ~2 % of the image's range is noise, not a filament
    threshold = max(floor, float(threshold_otsu(values))) if np.ptp(values) > 0 else np.inf
    ridge = (response > threshold) & region
    skeleton = skeletonize(ridge)
    length = float(skeleton.sum())
    neighbours = ndi.convolve(skeleton.astype(np.uint8), np.ones((3, 3), np.uint8), mode="constant") - 1
    branches = float(np.sum(skeleton & (neighbours >= 3)))
    ends = float(np.sum(skeleton & (neighbours == 1)))
    return {
        "ridge_mean_response": float(values.mean()),
        "ridge_pixel_fraction": float(ridge.sum()) / area,
        "ridge_skeleton_length_per_area": length / area,
        "ridge_branch_points_per_length": branches / length if length > 0 else 0.0,
        "ridge_end_points_per_length": ends / length if length > 0 else 0.0,
        "ridge_mean_width": _line_width(strength[skeleton], coarse[skeleton]),
    }


def _line_width(fine: NDArray[np.float64], coarse: NDArray[np.float64]) -> float:
    """Median FWHM (working pixels) of the lines, from the ratio of the ridge responses at two scales.

    On the centre of a line with a Gaussian profile of width s, the scale-normalised response is
    ``R(σ) ∝ σ² / (s² + σ²)^1.5``, so ``R(σ₂)/R(σ₁)`` grows monotonically with s and can be inverted. Unlike
    "ridge area / skeleton length", this does not depend on where the ridge mask's threshold falls.
    """
    keep = fine > 0
    if not keep.any():
        return 0.0
    s1, s2 = _RIDGE_SIGMA, _BUNDLE_SIGMA
    # R(σ₂)/R(σ₁) = (σ₂/σ₁)² q^−1.5 with q = (s² + σ₁²)/(s² + σ₂²) in ((σ₁/σ₂)², 1),
    # so s² = (qσ₂² − σ₁²)/(1 − q).
    ratio = coarse[keep] / fine[keep]
    # Lines wider than ~2σ₂ cannot be told apart at these scales: cap s there (FWHM ≤ 14 px at σ₂ = 3).
    s_max = 2.0 * s2
    q = np.clip((ratio * (s1 / s2) ** 2) ** (2.0 / 3.0), (s1 / s2) ** 2, (s_max**2 + s1**2) / (s_max**2 + s2**2))
    profile_sigma = np.sqrt(np.maximum(s2**2 * q - s1**2, 0.0) / (1.0 - q))
    return float(2.355 * np.median(profile_sigma))


def _solidity(outline: NDArray[np.bool_], area: float) -> float:
    """Area over convex-hull area; the hull of the outline pixels' corners (regionprops' hull image is 20× slower)."""
    from scipy.spatial import ConvexHull, QhullError

    rows, cols = np.nonzero(outline)
    corners = np.concatenate([np.stack([rows + dr, cols + dc], axis=1) for dr in (0, 1) for dc in (0, 1)])
    try:
        hull_area = float(ConvexHull(corners.astype(np.float64)).volume)  # "volume" of a 2-D hull is its area
    except QhullError:  # all corners on a line cannot happen for pixels, but keep degenerate input finite
        return 1.0
    return min(1.0, area / hull_area)


def _eccentricity(mask: NDArray[np.bool_]) -> float:
    """Eccentricity of the ellipse with the mask's second moments (as skimage.measure.regionprops)."""
    rows, cols = np.nonzero(mask)
    cov = np.cov(np.stack([rows, cols]).astype(np.float64), bias=True)
    small, large = np.linalg.eigvalsh(cov)
    return float(np.sqrt(1.0 - small / large)) if large > 0 else 0.0


def _shape(unit: NDArray[np.float64], mask: NDArray[np.bool_]) -> dict[str, float]:
    out = {"shape_area_fraction": float(mask.mean())}
    if mask.any():
        # Outline pixels; with border_value=0 the pixels on the frame count as outline too.
        outline = mask & ~ndi.binary_erosion(mask, border_value=0)
        out["shape_solidity"] = _solidity(outline, float(mask.sum()))
        out["shape_eccentricity"] = _eccentricity(mask)
        edge = np.zeros_like(mask)
        edge[[0, -1], :] = True
        edge[:, [0, -1]] = True
        out["shape_border_fraction"] = float(np.sum(outline & edge) / np.sum(outline))
    else:
        out.update(shape_solidity=0.0, shape_eccentricity=0.0, shape_border_fraction=0.0)
    out["shape_focus_laplacian_var"] = float(np.var(ndi.laplace(unit)))
    # Share of the (non-DC) spectral power above half the Nyquist radius: blur removes exactly that part.
    power = np.abs(np.fft.rfft2(unit - unit.mean())) ** 2
    fr = np.fft.fftfreq(unit.shape[0])[:, None]
    fc = np.fft.rfftfreq(unit.shape[1])[None, :]
    total = float(power.sum())
    out["shape_focus_high_frequency_ratio"] = float(power[np.hypot(fr, fc) > 0.25].sum()) / total if total > 0 else 0.0
    return out


def extract_features(image: np.ndarray, *, working_size: int = 256) -> dict[str, float]:
    """Hand-crafted features of one single-cell image.

    Parameters
    ----------
    image : (M, N) or (M, N, C) ndarray
        Grayscale image of one cell, any integer or float dtype (channels are averaged by
        :func:`cytolens.data.io.to_grayscale`). At least 8 × 8 pixels, finite. Not modified.
    working_size : int, optional
        The image is resized (anti-aliased) so its longer side has this many pixels before measuring.

    Returns
    -------
    dict of str to float
        One finite value per name of :func:`feature_names`, in that order. Measures that are undefined for
        the image (a flat image, an empty cell mask, no ridges) are 0. If no cell is found, the whole frame
        is measured as the cell (shape measures stay 0).

    Raises
    ------
    OptionError
        If the image is not 2-D, not numeric, smaller than 8 × 8, not finite, or ``working_size`` < 16.
    """
    if isinstance(working_size, bool) or not isinstance(working_size, (int, np.integer)) or working_size < 16:
        raise OptionError(f"`working_size` must be an integer ≥ 16, got {working_size!r}.")
    raw = np.asarray(image)
    data = _prepare(raw, int(working_size))
    lo, hi = np.percentile(data, _PERCENTILES)
    span = hi - lo if hi > lo else 1.0  # a flat image has no contrast to stretch
    scaled = (data - lo) / span  # unclipped: keeps the absolute signal relative to the image's own range
    unit = np.clip(scaled, 0.0, 1.0)
    mask = filaments.cell_mask(scaled * _MASK_SCALE)
    region = mask if mask.any() else np.ones_like(mask)

    values: dict[str, float] = _intensity(unit, region)
    values["intensity_saturated_fraction"] = _saturated_fraction(to_grayscale(raw) if raw.ndim == 3 else raw)
    measured = filaments.filament_features(scaled, mask=region)
    background = measured["background"] * span + lo  # back to raw units (the estimate is a median: linear)
    cell_mean = float(data[region].mean())
    values["intensity_cell_to_background_ratio"] = cell_mean / background if background > 0 else 0.0
    values.update(_texture(unit, region))
    values.update({f"filament_{key}": measured[key] for key in _FILAMENT_KEYS})
    strength, orientation = filaments.ridge_field(scaled, sigma=_RIDGE_SIGMA)
    center = (measured["center_row"], measured["center_col"])
    values.update(_orientation_measures(strength, orientation, region, center))
    values.update(_ridges(scaled, strength, region))
    values.update(_shape(unit, mask))
    # NaN/inf only come from degenerate cases (documented above); 0 keeps the table usable.
    return {name: float(values[name]) if math.isfinite(values[name]) else 0.0 for name in _NAMES}


def feature_table(
    paths: Sequence[str],
    *,
    working_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Features of many image files, one row per file.

    Parameters
    ----------
    paths : sequence of str or Path
        Image files (TIFF, PNG, JPEG), read with :func:`cytolens.data.io.read_image` as grayscale.
    working_size : int, optional
        See :func:`extract_features`.
    progress : callable, optional
        Called with 1 after each image (drives a progress bar).

    Returns
    -------
    pandas.DataFrame
        Shape ``(len(paths), len(feature_names()))``, float64, index = the paths as given (as str), columns =
        :func:`feature_names`. ``attrs["features_version"]`` is :data:`FEATURES_VERSION`.

    Raises
    ------
    ImageReadError
        Naming the file, if one cannot be read.
    """
    rows = np.empty((len(paths), len(_NAMES)), dtype=np.float64)
    for i, path in enumerate(paths):
        features = extract_features(read_image(path, grayscale=True), working_size=working_size)
        rows[i] = [features[name] for name in _NAMES]
        if progress is not None:
            progress(1)
    table = pd.DataFrame(rows, index=pd.Index([str(p) for p in paths], name="path"), columns=list(_NAMES))
    table.attrs["features_version"] = FEATURES_VERSION
    return table
