"""Classical CellProfiler-like features of single-cell crops: the baseline every learned profile is compared with.

A crop (96 × 96 × 3, channels DNA, tubulin, actin in [0, 1], centred on one cell) becomes one row of named
numbers. Each crop is first segmented into nucleus, cell and cytoplasm (:mod:`cytolens.profile.crops.masks`).

Names follow CellProfiler, ``Compartment_Category_Feature[_Channel][_Parameter]``, with channels ``DNA``,
``Tubulin`` and ``Actin``:

``AreaShape`` (Nuclei, Cells)
    Area, Perimeter (skimage's 4-neighbourhood estimate), FormFactor = 4π·Area/Perimeter², Eccentricity,
    MajorAxisLength and MinorAxisLength (of the ellipse with the same second moments), Solidity (area over the
    area of the convex hull of the pixel squares), Extent (area over bounding-box area); plus
    ``Cytoplasm_AreaShape_Area``.
``Intensity`` (each compartment × channel)
    IntegratedIntensity, MeanIntensity, StdIntensity, MinIntensity, MaxIntensity, LowerQuartileIntensity,
    MedianIntensity, UpperQuartileIntensity, MADIntensity, MassDisplacement (distance in pixels between the
    intensity-weighted and the plain centroid).
``Texture`` (each compartment × channel)
    Haralick features of the grey-level co-occurrence matrix at 16 grey levels of the [0, 1] range, for
    distances 1 and 3 px, with the pairs of the four directions 0°, 45°, 90° and 135° pooled into one symmetric
    matrix (rotation-invariant; CellProfiler reports each direction) and only pairs whose two pixels lie in the
    compartment: AngularSecondMoment, Contrast, Correlation, InverseDifferenceMoment, Entropy. Named
    ``..._Texture_Contrast_DNA_3``.
``Granularity`` (Cells, each channel)
    ``Cells_Granularity_k_DNA``: at half resolution (2 × 2 means, as CellProfiler sub-samples), the percentage
    of the cell's intensity removed when the grey opening grows from a (2k−1)- to a (2k+1)-pixel square,
    k = 1..4 — a granularity spectrum without CellProfiler's background subtraction.
``RadialDistribution`` (Cells, each channel)
    Each cell pixel's normalised radius r = d_centre / (d_centre + d_edge), from the nucleus centroid to the cell
    border (d_edge: the mean of the chessboard and city-block distances, within 8 % of the Euclidean), in four
    bins: FracAtD (share of the cell's intensity in the bin) and MeanFrac (FracAtD over the share
    of the cell's pixels in the bin), named ``Cells_RadialDistribution_FracAtD_Tubulin_2of4``.
``Correlation`` (Cells)
    Pearson correlation of each pair of channels over the cell's pixels,
    ``Cells_Correlation_Correlation_DNA_Tubulin``.

Intensities are measured on the crop as stored (each channel scaled by its own maximum, as CytoGAN's crops
are), so they describe relative patterns within a cell. Degenerate cases (an empty cytoplasm, a flat channel)
give 0 instead of NaN, so every value is finite.

Everything is vectorised over a batch of crops (histograms and co-occurrence counts are single ``bincount``
calls over the batch); ``cytolens bench --only inference`` measures the throughput.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError

from cytolens.core.errors import OptionError
from cytolens.profile.crops.masks import CROSS, SQUARE, as_uint8_crops, safe_divide, segment_crops, segment_planes

__all__ = [
    "CHANNEL_NAMES",
    "FEATURES_VERSION",
    "classical_features",
    "feature_names",
    "feature_table",
    "segment_crops",
]

# Bump whenever a feature's definition changes, so stored profiles are not mixed with new ones.
FEATURES_VERSION = "1"

CHANNEL_NAMES = ("DNA", "Tubulin", "Actin")
COMPARTMENTS = ("Nuclei", "Cytoplasm", "Cells")
SHAPE_FEATURES = (
    "Area", "Perimeter", "FormFactor", "Eccentricity", "MajorAxisLength", "MinorAxisLength", "Solidity", "Extent",
)
INTENSITY_FEATURES = (
    "IntegratedIntensity", "MeanIntensity", "StdIntensity", "MinIntensity", "MaxIntensity",
    "LowerQuartileIntensity", "MedianIntensity", "UpperQuartileIntensity", "MADIntensity", "MassDisplacement",
)
TEXTURE_FEATURES = ("AngularSecondMoment", "Contrast", "Correlation", "InverseDifferenceMoment", "Entropy")
TEXTURE_DISTANCES = (1, 3)
TEXTURE_LEVELS = 16
GRANULARITY_SCALES = (1, 2, 3, 4)
RADIAL_BINS = 4

# Measures are computed on crops quantised to 0..255 (the cell store keeps uint8), so histogram quantiles are
# exact and co-occurrence levels are bit shifts.
_LEVELS = 256
# skimage.measure.perimeter (4-neighbourhood): weights of the border-pixel configurations (codes 0..49).
_PERIMETER_WEIGHTS = np.zeros(50, dtype=np.float64)
_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1.0
_PERIMETER_WEIGHTS[[21, 33]] = math.sqrt(2.0)
_PERIMETER_WEIGHTS[[13, 23]] = (1.0 + math.sqrt(2.0)) / 2.0
# Haralick directions 0°, 45°, 90°, 135° as (dy, dx) unit steps.
_DIRECTIONS = ((0, 1), (-1, 1), (-1, 0), (-1, -1))


def feature_names() -> list[str]:
    """The names of the columns :func:`classical_features` returns, in order."""
    names: list[str] = []
    for compartment in ("Nuclei", "Cells"):
        names += [f"{compartment}_AreaShape_{name}" for name in SHAPE_FEATURES]
    names.append("Cytoplasm_AreaShape_Area")
    for compartment in COMPARTMENTS:
        for channel in CHANNEL_NAMES:
            names += [f"{compartment}_Intensity_{name}_{channel}" for name in INTENSITY_FEATURES]
    for compartment in COMPARTMENTS:
        for channel in CHANNEL_NAMES:
            for distance in TEXTURE_DISTANCES:
                names += [f"{compartment}_Texture_{name}_{channel}_{distance}" for name in TEXTURE_FEATURES]
    for channel in CHANNEL_NAMES:
        names += [f"Cells_Granularity_{scale}_{channel}" for scale in GRANULARITY_SCALES]
    for channel in CHANNEL_NAMES:
        for kind in ("FracAtD", "MeanFrac"):
            names += [f"Cells_RadialDistribution_{kind}_{channel}_{b + 1}of{RADIAL_BINS}" for b in range(RADIAL_BINS)]
    for i, first in enumerate(CHANNEL_NAMES):
        for second in CHANNEL_NAMES[i + 1 :]:
            names.append(f"Cells_Correlation_Correlation_{first}_{second}")
    return names


# ------------------------------------------------------------------------------------------------ measurements


class _Geometry:
    """Per-pixel coordinates of a batch's crops as a design matrix: sums over pixels become one matrix product."""

    def __init__(self, height: int, width: int) -> None:
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
        # Centred coordinates keep the second moments' cancellation small.
        y, x = (yy - (height - 1) / 2).ravel(), (xx - (width - 1) / 2).ravel()
        self.height, self.width = height, width
        self.design = np.column_stack([np.ones_like(y), y, x, y * y, x * x, y * x])
        self.y, self.x = y.reshape(height, width), x.reshape(height, width)

    def moments(self, weights: np.ndarray, order: int = 2) -> NDArray[np.float64]:
        """Sums of 1, y, x (and y², x², xy with ``order`` 2) weighted by ``weights`` (m, H, W): (m, 3 or 6)."""
        columns = 6 if order == 2 else 3
        flat = weights.reshape(len(weights), -1)
        if flat.dtype != np.float64:
            flat = flat.astype(np.float64)
        return flat @ self.design[:, :columns]


def _erode_cross(masks: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Binary erosion of each mask by the 4-neighbourhood cross, pixels beyond the border counting as outside."""
    out = np.zeros_like(masks)
    out[:, 1:-1, 1:-1] = (
        masks[:, 1:-1, 1:-1] & masks[:, :-2, 1:-1] & masks[:, 2:, 1:-1] & masks[:, 1:-1, :-2] & masks[:, 1:-1, 2:]
    )
    return out


def _perimeter(masks: NDArray[np.bool_]) -> NDArray[np.float64]:
    """skimage.measure.perimeter(mask, neighborhood=4) of each mask of a batch."""
    n, height, width = masks.shape
    border = masks & ~_erode_cross(masks)
    # skimage convolves the border with [[10, 2, 10], [2, 1, 2], [10, 2, 10]] and weighs each border pixel by
    # its code; here the code is summed from the eight neighbours of the border pixels only.
    padded = np.pad(border, ((0, 0), (1, 1), (1, 1))).ravel()
    row = width + 2
    positions = np.flatnonzero(padded)
    codes = np.ones(len(positions), dtype=np.int32)
    neighbours = ((-row, 2), (row, 2), (-1, 2), (1, 2), (-row - 1, 10), (-row + 1, 10), (row - 1, 10), (row + 1, 10))
    for offset, weight in neighbours:
        codes += weight * padded[positions + offset]
    cell_of = positions // ((height + 2) * row)
    return np.bincount(cell_of, weights=_PERIMETER_WEIGHTS[codes], minlength=n)


def _shape(mask: NDArray[np.bool_], moments: NDArray[np.float64]) -> list[np.ndarray]:
    n = len(mask)
    area = moments[:, 0]
    perimeter = _perimeter(mask)
    form_factor = safe_divide(4.0 * math.pi * area, perimeter**2)
    cy, cx = safe_divide(moments[:, 1], area), safe_divide(moments[:, 2], area)
    syy = np.maximum(safe_divide(moments[:, 3], area) - cy**2, 0.0)
    sxx = np.maximum(safe_divide(moments[:, 4], area) - cx**2, 0.0)
    sxy = safe_divide(moments[:, 5], area) - cy * cx
    half_trace = (syy + sxx) / 2
    root = np.sqrt(((syy - sxx) / 2) ** 2 + sxy**2)
    major_var, minor_var = half_trace + root, np.maximum(half_trace - root, 0.0)
    # skimage's axis lengths: 4·sqrt of the inertia tensor's eigenvalues (no pixel-size correction).
    major, minor = 4.0 * np.sqrt(major_var), 4.0 * np.sqrt(minor_var)
    eccentricity = np.where(major_var > 0, np.sqrt(np.clip(1.0 - safe_divide(minor_var, major_var), 0.0, 1.0)), 0.0)

    rows_any, cols_any = mask.any(axis=2), mask.any(axis=1)
    height = np.where(area > 0, mask.shape[1] - np.argmax(rows_any[:, ::-1], axis=1) - np.argmax(rows_any, axis=1), 0)
    width = np.where(area > 0, mask.shape[2] - np.argmax(cols_any[:, ::-1], axis=1) - np.argmax(cols_any, axis=1), 0)
    extent = safe_divide(area, height * width)

    # Solidity: area over the area of the convex hull of the pixel squares. Only each row's outermost pixels
    # can be hull vertices; the hull of the squares is the hull of their centres grown by a unit square, whose
    # area is A + width + height + 1 (the Minkowski sum of a convex polygon and an axis-aligned unit square).
    leftmost = np.argmax(mask, axis=2)
    rightmost = mask.shape[2] - 1 - np.argmax(mask[:, :, ::-1], axis=2)
    solidity = np.zeros(n)
    for i in np.flatnonzero(area > 0):
        present = np.flatnonzero(rows_any[i])
        points = np.concatenate(
            [np.column_stack([present, leftmost[i, present]]), np.column_stack([present, rightmost[i, present]])]
        ).astype(np.float64)
        try:
            polygon_area = ConvexHull(points).volume  # the "volume" of a 2-d hull is its area
        except QhullError:  # all centres on one line
            polygon_area = 0.0
        spans = points.max(axis=0) - points.min(axis=0)
        solidity[i] = min(area[i] / (polygon_area + spans[0] + spans[1] + 1.0), 1.0)
    return [area, perimeter, form_factor, eccentricity, major, minor, solidity, extent]


def _quantiles(hist: NDArray[np.float64], fractions: tuple[float, ...]) -> list[np.ndarray]:
    """Quantiles (values in [0, 1]) of histogrammed levels: the lowest level whose cumulative count reaches it."""
    cumulative = np.cumsum(hist, axis=1)
    total = cumulative[:, -1:]
    out = []
    for fraction in fractions:
        target = np.maximum(np.ceil(fraction * total), 1.0)
        out.append(np.argmax(cumulative >= target, axis=1) / (_LEVELS - 1) * (total[:, 0] > 0))
    return out


def _intensity(
    planes: NDArray[np.uint8], mask: NDArray[np.bool_], mask_moments: NDArray[np.float64], geometry: _Geometry
) -> list[list[np.ndarray]]:
    """Intensity features of each channel inside ``mask``: [channel][feature]."""
    channels, n = planes.shape[:2]
    positions = np.flatnonzero(mask)
    offsets = (positions // (mask.shape[1] * mask.shape[2])).astype(np.int64) * _LEVELS
    values = np.arange(_LEVELS) / (_LEVELS - 1)
    # Intensity-weighted first moments of all channels at once, for the mass displacement.
    weighted = geometry.moments(np.where(mask[None], planes, 0).reshape(channels * n, *mask.shape[1:]), order=1)
    weighted = weighted.reshape(channels, n, 3) / (_LEVELS - 1)
    area = mask_moments[:, 0]
    cy, cx = safe_divide(mask_moments[:, 1], area), safe_divide(mask_moments[:, 2], area)
    out = []
    for c in range(channels):
        hist = np.bincount(offsets + planes[c].ravel()[positions], minlength=n * _LEVELS)
        hist = hist.reshape(n, _LEVELS).astype(np.float64)
        count = hist.sum(axis=1)
        integrated = hist @ values
        mean = safe_divide(integrated, count)
        variance = np.maximum(safe_divide(hist @ values**2, count) - mean**2, 0.0)
        present = hist > 0
        minimum = np.where(count > 0, np.argmax(present, axis=1), 0) / (_LEVELS - 1)
        maximum = np.where(count > 0, _LEVELS - 1 - np.argmax(present[:, ::-1], axis=1), 0) / (_LEVELS - 1)
        lower, median, upper = _quantiles(hist, (0.25, 0.5, 0.75))
        # Median absolute deviation from the histogram: the median of |level - median level|.
        median_level = np.rint(median * (_LEVELS - 1)).astype(np.int64)
        deviation = np.abs(np.arange(_LEVELS)[None, :] - median_level[:, None]) + np.arange(n)[:, None] * _LEVELS
        dev_hist = np.bincount(deviation.ravel(), weights=hist.ravel(), minlength=hist.size).reshape(hist.shape)
        (mad,) = _quantiles(dev_hist, (0.5,))
        icy, icx = safe_divide(weighted[c, :, 1], integrated), safe_divide(weighted[c, :, 2], integrated)
        displacement = np.where(integrated > 0, np.hypot(icy - cy, icx - cx), 0.0)
        out.append([integrated, mean, np.sqrt(variance), minimum, maximum, lower, median, upper, mad, displacement])
    return out


def _haralick(counts: NDArray[np.float64]) -> list[np.ndarray]:
    """Haralick features of co-occurrence counts (..., L, L), symmetrised and normalised here."""
    counts = counts + np.swapaxes(counts, -1, -2)
    p = safe_divide(counts, counts.sum(axis=(-1, -2), keepdims=True))
    levels = p.shape[-1]
    i = np.arange(levels, dtype=np.float64)
    difference = (i[:, None] - i[None, :]) ** 2
    asm = np.einsum("...ij,...ij->...", p, p)
    contrast = np.einsum("...ij,ij->...", p, difference)
    idm = np.einsum("...ij,ij->...", p, 1.0 / (1.0 + difference))
    entropy = -np.einsum("...ij,...ij->...", p, np.log2(np.where(p > 0, p, 1.0)))
    # Symmetric matrix: both marginals are equal, so σ_i σ_j is the variance of the marginal.
    marginal = p.sum(axis=-1)
    mean = marginal @ i
    variance = marginal @ i**2 - mean**2
    covariance = np.einsum("...ij,i,j->...", p, i, i) - mean**2
    correlation = np.where(variance > 1e-12, safe_divide(covariance, variance), 0.0)  # a flat region: none
    return [asm, contrast, correlation, idm, entropy]


# Pair class of two pixels from their classes (0 outside the cell, 1 nucleus, 2 cytoplasm): 0 both nucleus,
# 1 both cytoplasm, 2 one of each, 3 not a pair of the cell (counted, then ignored).
_PAIR_CLASS = np.array([[3, 3, 3], [3, 0, 2], [3, 2, 1]], dtype=np.int64)


def _texture(planes: NDArray[np.uint8], nuclei: NDArray[np.bool_], cells: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Haralick features, shape (distance, compartment (Nuclei, Cytoplasm, Cells), channel, feature, n)."""
    margin = max(TEXTURE_DISTANCES)
    # A background margin as wide as the longest distance: a cell pixel's partner is then always in the same
    # crop, at a fixed offset in the flattened batch.
    pad = ((0, 0), (margin, margin), (margin, margin))
    klass = np.pad(np.where(nuclei, 1, np.where(cells, 2, 0)).astype(np.int64), pad).ravel()
    channels, n = planes.shape[:2]
    height, width = nuclei.shape[1] + 2 * margin, nuclei.shape[2] + 2 * margin
    levels = TEXTURE_LEVELS
    grey = [np.pad(planes[c] >> 4, pad).astype(np.int64).ravel() for c in range(channels)]  # 16 levels of [0, 1]
    first = np.flatnonzero(klass)
    first_class = np.tile(klass[first] * 3, len(_DIRECTIONS))
    # Co-occurrence bins: (crop, pair class, first level, second level).
    cell_block = np.tile((first // (height * width)) * 4 * levels * levels, len(_DIRECTIONS))
    first_level = [np.tile(g[first] * levels, len(_DIRECTIONS)) for g in grey]
    out = np.empty((len(TEXTURE_DISTANCES), 3, channels, len(TEXTURE_FEATURES), n))
    for k, distance in enumerate(TEXTURE_DISTANCES):
        # All four directions pooled: the partner of each cell pixel at each offset.
        second = np.concatenate([first + (uy * distance * width + ux * distance) for uy, ux in _DIRECTIONS])
        block = cell_block + _PAIR_CLASS.ravel()[first_class + klass[second]] * (levels * levels)
        per_channel = []
        for c in range(channels):
            counts = np.bincount(block + first_level[c] + grey[c][second], minlength=n * 4 * levels * levels)
            counts = counts.reshape(n, 4, levels, levels)
            per_channel.append(np.stack([counts[:, 0], counts[:, 1], counts[:, :3].sum(axis=1)]))
        features = _haralick(np.stack(per_channel).astype(np.float64))  # each (channel, compartment, n)
        out[k] = np.stack(features, axis=2).transpose(1, 0, 2, 3)
    return out


def _square3(images: np.ndarray, reduce: np.ufunc) -> np.ndarray:
    """Grey erosion (``np.minimum``) or dilation (``np.maximum``) of non-negative images (..., H, W) by a 3 × 3
    square, pixels beyond the border counting as 0."""
    rows = images.copy()
    reduce(rows[..., 1:, :], images[..., :-1, :], out=rows[..., 1:, :])
    reduce(rows[..., :-1, :], images[..., 1:, :], out=rows[..., :-1, :])
    out = rows.copy()
    reduce(out[..., 1:], rows[..., :-1], out=out[..., 1:])
    reduce(out[..., :-1], rows[..., 1:], out=out[..., :-1])
    if reduce is np.minimum:  # the 0 beyond the border
        out[..., 0, :] = 0
        out[..., -1, :] = 0
        out[..., 0] = 0
        out[..., -1] = 0
    return out


def _granularity(planes: NDArray[np.uint8], cells: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Granularity spectrum, shape (channel, scale, n): percent of the cell's intensity removed per opening step.

    Measured at half resolution (2 × 2 means), as CellProfiler sub-samples by default; scale k opens with a
    (2k + 1)-square at that resolution.
    """
    channels, n, height, width = planes.shape
    h2, w2 = height // 2, width // 2
    masked = np.multiply(planes[:, :, : 2 * h2, : 2 * w2], cells[None, :, : 2 * h2, : 2 * w2], dtype=np.uint16)
    half = masked[..., 0::2, 0::2] + masked[..., 1::2, 0::2] + masked[..., 0::2, 1::2] + masked[..., 1::2, 1::2]
    quarter = cells[:, : 2 * h2, : 2 * w2].astype(np.uint8)
    inside = (quarter[:, 0::2, 0::2] + quarter[:, 1::2, 0::2] + quarter[:, 0::2, 1::2] + quarter[:, 1::2, 1::2]) >= 2
    weights = inside.reshape(n, -1).astype(np.float32)

    def inside_sum(values: np.ndarray) -> NDArray[np.float64]:
        # Sums of integers below 2**24 are exact in float32.
        return np.einsum("cnp,np->cn", values.reshape(channels, n, -1).astype(np.float32), weights).astype(np.float64)

    total = inside_sum(half)
    previous = total
    out = np.empty((channels, len(GRANULARITY_SCALES), n))
    eroded = half
    for k, scale in enumerate(GRANULARITY_SCALES):
        # A (2k + 1)-square is k 3 × 3 squares added up: erode once more, then dilate k times (zero beyond the
        # crop, as scipy's minimum/maximum filters with mode="constant", cval=0; several times faster).
        for _ in range(scale - (GRANULARITY_SCALES[k - 1] if k else 0)):
            eroded = _square3(eroded, np.minimum)
        opened = eroded
        for _ in range(scale):
            opened = _square3(opened, np.maximum)
        remaining = inside_sum(opened)
        out[:, k] = 100.0 * safe_divide(previous - remaining, total)
        previous = remaining
    return out


def _radial(
    planes: NDArray[np.uint8], nuclei_moments: NDArray[np.float64], cells: NDArray[np.bool_], geometry: _Geometry
) -> NDArray[np.float64]:
    """Radial distribution, shape (channel, FracAtD bins + MeanFrac bins, n)."""
    channels, n = planes.shape[:2]
    area = nuclei_moments[:, 0]
    cy, cx = safe_divide(nuclei_moments[:, 1], area), safe_divide(nuclei_moments[:, 2], area)
    positions = np.flatnonzero(cells)
    cell_of = positions // (geometry.height * geometry.width)
    pixel = positions % (geometry.height * geometry.width)
    to_centre = np.hypot(geometry.y.ravel()[pixel] - cy[cell_of], geometry.x.ravel()[pixel] - cx[cell_of])
    # Distance to the cell's edge: the mean of the in-plane chessboard and city-block distances (within 8 % of
    # the Euclidean one, and several times faster than an exact transform per crop).
    padded = np.pad(cells, ((0, 0), (1, 1), (1, 1)))
    chess = ndi.distance_transform_cdt(padded, metric=SQUARE)[:, 1:-1, 1:-1]
    block = ndi.distance_transform_cdt(padded, metric=CROSS)[:, 1:-1, 1:-1]
    to_edge = (chess.ravel()[positions] + block.ravel()[positions]) / 2.0
    radius = safe_divide(to_centre, to_centre + to_edge)
    index = cell_of * RADIAL_BINS + np.minimum((radius * RADIAL_BINS).astype(np.int64), RADIAL_BINS - 1)
    pixel_counts = np.bincount(index, minlength=n * RADIAL_BINS).reshape(n, RADIAL_BINS).astype(np.float64)
    pixel_share = safe_divide(pixel_counts, pixel_counts.sum(axis=1, keepdims=True))
    out = np.empty((channels, 2 * RADIAL_BINS, n))
    for c in range(channels):
        sums = np.bincount(index, weights=planes[c].ravel()[positions], minlength=n * RADIAL_BINS)
        frac = safe_divide(sums.reshape(n, RADIAL_BINS), sums.reshape(n, RADIAL_BINS).sum(axis=1, keepdims=True))
        out[c, :RADIAL_BINS] = frac.T
        out[c, RADIAL_BINS:] = safe_divide(frac, pixel_share).T
    return out


def _correlations(planes: NDArray[np.uint8], cells: NDArray[np.bool_]) -> list[np.ndarray]:
    """Pearson correlation of each pair of channels over each cell's pixels."""
    channels, n = planes.shape[:2]
    positions = np.flatnonzero(cells)
    cell_of = positions // (cells.shape[1] * cells.shape[2])
    values = [planes[c].ravel()[positions].astype(np.float64) for c in range(channels)]
    count = np.bincount(cell_of, minlength=n).astype(np.float64)
    sums = [np.bincount(cell_of, weights=v, minlength=n) for v in values]
    squares = [np.bincount(cell_of, weights=v * v, minlength=n) for v in values]
    out = []
    for a in range(channels):
        for b in range(a + 1, channels):
            products = np.bincount(cell_of, weights=values[a] * values[b], minlength=n)
            covariance = products - safe_divide(sums[a] * sums[b], count)
            var_a = np.maximum(squares[a] - safe_divide(sums[a] ** 2, count), 0.0)
            var_b = np.maximum(squares[b] - safe_divide(sums[b] ** 2, count), 0.0)
            out.append(np.clip(safe_divide(covariance, np.sqrt(var_a * var_b)), -1.0, 1.0))
    return out


def _features_batch(data: NDArray[np.uint8]) -> NDArray[np.float32]:
    planes = np.ascontiguousarray(np.moveaxis(data, -1, 0))  # (channel, n, H, W)
    nuclei, cells = segment_planes(planes)
    # Every measure is local to the cells and translation-invariant, so the batch is cut to the union of the
    # cells' bounding boxes (plus a margin of background): less work, same numbers whatever the batch. The cut
    # starts on an even pixel so the 2 × 2 blocks of the granularity keep their place on the crop's grid.
    rows, cols = np.flatnonzero(cells.any(axis=(0, 2))), np.flatnonzero(cells.any(axis=(0, 1)))
    ys = slice(max(int(rows[0]) - 2, 0) // 2 * 2, int(rows[-1]) + 2)
    xs = slice(max(int(cols[0]) - 2, 0) // 2 * 2, int(cols[-1]) + 2)
    planes = np.ascontiguousarray(planes[:, :, ys, xs])
    nuclei, cells = np.ascontiguousarray(nuclei[:, ys, xs]), np.ascontiguousarray(cells[:, ys, xs])
    cytoplasm = cells & ~nuclei
    geometry = _Geometry(*cells.shape[1:])
    masks = {"Nuclei": nuclei, "Cytoplasm": cytoplasm, "Cells": cells}
    moments = {name: geometry.moments(mask) for name, mask in masks.items()}

    columns: list[np.ndarray] = []
    columns += _shape(nuclei, moments["Nuclei"])
    columns += _shape(cells, moments["Cells"])
    columns.append(moments["Cytoplasm"][:, 0])
    for compartment in COMPARTMENTS:
        for per_channel in _intensity(planes, masks[compartment], moments[compartment], geometry):
            columns += per_channel
    texture = _texture(planes, nuclei, cells)  # (distance, compartment, channel, feature, n)
    for k in range(len(COMPARTMENTS)):
        for c in range(len(CHANNEL_NAMES)):
            for d in range(len(TEXTURE_DISTANCES)):
                columns += list(texture[d, k, c])
    columns += list(_granularity(planes, cells).reshape(-1, len(data)))
    columns += list(_radial(planes, moments["Nuclei"], cells, geometry).reshape(-1, len(data)))
    columns += _correlations(planes, cells)
    matrix = np.column_stack(columns)
    return np.nan_to_num(matrix, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def classical_features(
    crops: np.ndarray, *, batch_size: int = 128, progress: Callable[[int], None] | None = None
) -> NDArray[np.float32]:
    """Measure CellProfiler-like features of each crop.

    Parameters
    ----------
    crops : (n, H, W, 3) ndarray, uint8 or float in [0, 1]
        Single-cell crops centred on their cell, channels DNA, tubulin, actin (the cell store's layout).
    batch_size : int, default 128
        Crops measured together (vectorised); bounds the temporary memory (~60 MB per 128 crops of 96 × 96).
    progress : callable, optional
        Called with the number of crops finished after each batch.

    Returns
    -------
    (n, F) ndarray of float32
        Finite values; column ``k`` is ``feature_names()[k]``.
    """
    data = as_uint8_crops(crops)
    if int(batch_size) != batch_size or batch_size < 1:
        raise OptionError(f"`batch_size` must be a positive integer, got {batch_size!r}")
    out = np.empty((len(data), len(feature_names())), dtype=np.float32)
    for start in range(0, len(data), batch_size):
        stop = min(start + batch_size, len(data))
        out[start:stop] = _features_batch(data[start:stop])
        if progress is not None:
            progress(stop - start)
    return out


def feature_table(crops: np.ndarray, *, batch_size: int = 128) -> pd.DataFrame:
    """:func:`classical_features` as a DataFrame with the CellProfiler-style column names."""
    return pd.DataFrame(classical_features(crops, batch_size=batch_size), columns=feature_names())
