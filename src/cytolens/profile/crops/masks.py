"""Nucleus and cell masks of single-cell crops: the segmentation the classical features measure.

A crop (n, H, W, 3; channels DNA, tubulin, actin) is segmented so:

- **Nuclei**: Otsu threshold of the DNA channel (after a 3 × 3 binomial smoothing), the connected component
  nearest the crop centre (the one containing it when there is one), holes filled. A crop without any DNA
  signal gets a 3 × 3 nucleus at its centre so every measure is defined.
- **Cells**: the connected component of the Otsu foreground of the smoothed mean of tubulin and actin that holds
  the nucleus. When it holds other nuclei too (touching neighbours: crops keep their neighbours by default),
  a watershed of the inverted image seeded by every nucleus splits it along the dim valleys between the cells
  (CellProfiler's secondary objects, simplified) and the cell is the nucleus's region; holes filled. A cell
  always contains its nucleus.
- **Cytoplasm**: the cell less the nucleus (may be empty).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

from cytolens.core.errors import OptionError

__all__ = ["as_uint8_crops", "safe_divide", "segment_crops", "segment_planes"]

# In-plane neighbourhoods for a batch (n, H, W): nothing connects two crops of the batch.
CROSS = np.zeros((3, 3, 3), dtype=bool)
CROSS[1] = ndi.generate_binary_structure(2, 1)
SQUARE = np.zeros((3, 3, 3), dtype=bool)
SQUARE[1] = True


def as_uint8_crops(crops: np.ndarray) -> NDArray[np.uint8]:
    """Crops (n, H, W, 3) as uint8: uint8 as they are, floats in [0, 1] scaled to 0..255.

    Raises
    ------
    OptionError
        If the shape or dtype is not that of crops.
    """
    array = np.asarray(crops)
    if array.ndim != 4 or array.shape[-1] != 3 or array.shape[1] < 8 or array.shape[2] < 8:
        raise OptionError(f"`crops` must have shape (n, H, W, 3) with H, W >= 8, got {array.shape}")
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise OptionError(f"`crops` must be uint8 or float in [0, 1], got dtype {array.dtype}")
    return np.round(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)


def safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` elementwise, 0 where the denominator is 0 (degenerate cells give 0, not NaN)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    shape = np.broadcast_shapes(numerator.shape, denominator.shape)
    return np.divide(numerator, denominator, out=np.zeros(shape), where=denominator != 0)


def _otsu_thresholds(images: NDArray[np.float32], bins: int = 128) -> NDArray[np.float64]:
    """Otsu's threshold of each image of a batch (n, H, W) with values in [0, 1], from a ``bins`` histogram."""
    n = len(images)
    levels = np.minimum((images.reshape(n, -1) * bins).astype(np.int32), bins - 1)
    levels += (np.arange(n, dtype=np.int32) * bins)[:, None]
    hist = np.bincount(levels.ravel(), minlength=n * bins).reshape(n, bins).astype(np.float64)
    centres = (np.arange(bins) + 0.5) / bins
    weight0 = np.cumsum(hist, axis=1)
    weight1 = weight0[:, -1:] - weight0
    sum0 = np.cumsum(hist * centres, axis=1)
    mean0 = safe_divide(sum0, weight0)
    mean1 = safe_divide(sum0[:, -1:] - sum0, weight1)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    # The threshold lies between bin k and k + 1: pixels with level <= k are background.
    best = np.argmax(between[:, :-1], axis=1)
    return (best + 1) / bins


def _foreground(image: NDArray[np.float32]) -> NDArray[np.bool_]:
    """Otsu foreground of each image; an image without contrast has none."""
    n = len(image)
    flat = image.reshape(n, -1)
    has_signal = flat.max(axis=1) > flat.min(axis=1)
    thresholds = _otsu_thresholds(image).astype(np.float32)
    return (image > thresholds[:, None, None]) & has_signal[:, None, None]


def _fill_holes(masks: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Fill each mask's holes: background components (4-connected) that do not touch the crop's border."""
    labels, count = ndi.label(~masks, structure=CROSS)
    outside = np.zeros(count + 1, dtype=bool)
    for edge in (labels[:, 0, :], labels[:, -1, :], labels[:, :, 0], labels[:, :, -1]):
        outside[edge.ravel()] = True
    outside[0] = True  # label 0 is the mask itself
    return ~outside[labels] | masks


def _smooth(images: NDArray[np.uint16]) -> NDArray[np.uint16]:
    """16 × the 3 × 3 binomial smoothing ([1, 2, 1] ⊗ [1, 2, 1] / 16) of each image, edges repeated (integers)."""
    out = images.astype(np.uint16, copy=True)
    for axis in (1, 2):
        padded = np.concatenate([out.take([0], axis=axis), out, out.take([-1], axis=axis)], axis=axis)
        size = out.shape[axis]
        before = padded.take(np.arange(0, size), axis=axis)
        after = padded.take(np.arange(2, size + 2), axis=axis)
        out = 2 * out + before + after
    return out


def segment_planes(planes: NDArray[np.uint8]) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Nuclei and cells of channel-first crops (3, n, H, W) uint8; see :func:`segment_crops`."""
    _, n, height, width = planes.shape
    dna = _smooth(planes[0].astype(np.uint16)) * np.float32(1 / 255 / 16)
    cyto = _smooth(planes[1].astype(np.uint16) + planes[2]) * np.float32(1 / 510 / 16)

    foreground = _foreground(dna)
    labels, count = ndi.label(foreground, structure=SQUARE)
    yy, xx = np.mgrid[0:height, 0:width]
    distance = ((yy - (height - 1) / 2) ** 2 + (xx - (width - 1) / 2) ** 2).astype(np.float32).ravel()
    nearest = np.argmin(np.where(foreground.reshape(n, -1), distance, np.float32(np.inf)), axis=1)
    chosen = labels.reshape(n, -1)[np.arange(n), nearest]  # 0 where a crop has no foreground
    missing = np.flatnonzero(chosen == 0)
    if len(missing):
        # No DNA signal: a 3 × 3 nucleus at the centre, with a label of its own.
        cy, cx = height // 2, width // 2
        chosen[missing] = count + 1 + np.arange(len(missing))
        labels[missing, cy - 1 : cy + 2, cx - 1 : cx + 2] = chosen[missing][:, None, None]
    nuclei = _fill_holes(labels == chosen[:, None, None])

    # Cells: CellProfiler's secondary objects, simplified. The cell is the component of the tubulin + actin
    # foreground that holds the chosen nucleus. Where that component holds other nuclei too (touching
    # neighbours), every nucleus seeds a watershed of the inverted image inside it, splitting the cells along
    # the dim valleys between them, and the cell is the chosen nucleus's region.
    from skimage.segmentation import watershed

    markers = np.where(nuclei, chosen[:, None, None], labels)
    components, _ = ndi.label(_foreground(cyto) | (markers > 0), structure=SQUARE)
    first_pixel = np.argmax(nuclei.reshape(n, -1), axis=1)
    cells = components == components.reshape(n, -1)[np.arange(n), first_pixel][:, None, None]
    crowded = np.flatnonzero((cells & (markers > 0) & ~nuclei).any(axis=(1, 2)))
    for i in crowded:
        rows, cols = np.flatnonzero(cells[i].any(axis=1)), np.flatnonzero(cells[i].any(axis=0))
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))  # the component's bounding box
        region = watershed(-cyto[i][box], markers=markers[i][box], mask=cells[i][box])
        cells[i][box] = region == chosen[i]
    return nuclei, _fill_holes(cells | nuclei)


def segment_crops(crops: np.ndarray) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Segment the centred cell of each crop into nucleus and whole cell.

    Parameters
    ----------
    crops : (n, H, W, 3) ndarray, uint8 or float in [0, 1]
        Channels DNA, tubulin, actin.

    Returns
    -------
    nuclei, cells : (n, H, W) ndarray of bool
        The nucleus and the whole cell (which contains the nucleus) of each crop; see the module docstring.
    """
    data = as_uint8_crops(crops)
    if len(data) == 0:
        empty = np.zeros(data.shape[:3], dtype=bool)
        return empty, empty.copy()
    return segment_planes(np.ascontiguousarray(np.moveaxis(data, -1, 0)))
