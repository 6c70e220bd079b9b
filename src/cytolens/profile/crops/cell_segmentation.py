"""Find nuclei and cells in a three-channel field (DNA, tubulin, actin), the way CellProfiler pipelines do.

Classical method (the default; CellProfiler's IdentifyPrimaryObjects + IdentifySecondaryObjects in spirit):

* **Nuclei**: the DNA image is smoothed (Gaussian, ``sigma``), thresholded by Otsu's method (a field whose
  threshold is not clearly above the background noise has no nuclei), holes are filled, small objects dropped,
  and touching nuclei are split by a watershed on the distance transform seeded by its h-maxima (so an
  elongated nucleus stays whole while two round ones that touch are cut at the neck).
* **Cells**: tubulin and actin, each scaled by its own robust range, are summed and smoothed; the foreground is
  Otsu's threshold on the log of that signal; a watershed on the inverted signal, seeded by the nuclei and
  limited to the foreground, gives every nucleus its cell (the borders fall along the dimmest path between cells).
  Cell ``k`` has nucleus ``k``.

``segment:RUN`` uses a trained ``cytolens segment`` run instead: the run's network predicts background / nucleus /
cytoplasm from the first ``in_chans`` channels of (DNA, tubulin, actin), normalised as the run's config says, and
:func:`cytolens.segment.cells.split_cells` splits the cell mask into one cell per nucleus.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

from cytolens.core.errors import OptionError

Labels = NDArray[np.int32]
Segmenter = Callable[[NDArray, NDArray, NDArray], tuple[Labels, Labels]]
SEGMENTATION_METHODS: tuple[str, ...] = ("classical", "segment:RUN")


def _robust_noise(image: NDArray[np.float32]) -> tuple[float, float]:
    """Median and a noise level (scaled median absolute deviation) of an image's darker half."""
    sample = image[::2, ::2].ravel()
    median = float(np.median(sample))
    low = sample[sample <= median]
    mad = float(np.median(median - low)) * 1.4826 if low.size else 0.0
    return median, max(mad, 1e-6)


def segment_nuclei(dna: NDArray, *, sigma: float = 1.5, min_area: int = 30, split_h: float = 1.5) -> Labels:
    """Label nuclei in a DNA image.

    Parameters
    ----------
    dna : (H, W) ndarray
        DNA stain, any numeric dtype; not modified.
    sigma : float
        Gaussian smoothing before thresholding (px).
    min_area : int
        Objects smaller than this (px) are dropped (debris, noise).
    split_h : float
        Depth (px of distance) a dip between two distance-transform peaks needs for the nuclei to be split.

    Returns
    -------
    (H, W) ndarray of int32
        0 background, 1..N nuclei.
    """
    from skimage.filters import threshold_otsu
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    smooth = ndi.gaussian_filter(np.asarray(dna, dtype=np.float32), sigma)
    background, noise = _robust_noise(smooth)
    if float(smooth.max()) <= background + 8 * noise:
        return np.zeros(smooth.shape, dtype=np.int32)
    threshold = max(float(threshold_otsu(smooth)), background + 5 * noise)
    components, count = ndi.label(_fill_holes(smooth > threshold))
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    keep = sizes >= min_area
    keep[0] = False
    components[~keep[components]] = 0
    if not keep.any():
        return np.zeros(smooth.shape, dtype=np.int32)
    labels = components.astype(np.int32)
    # Only an object much larger than the disc its thickest point spans can be several touching nuclei (two
    # touching discs: twice; an oval nucleus: 1.1-1.4 times). Those are split one at a time inside their bounding
    # boxes, a fraction of the cost of a whole-field h-maxima transform.
    thickness = ndi.maximum(ndi.distance_transform_edt(components > 0), components, np.arange(count + 1))
    elongated = sizes > 1.5 * np.pi * np.square(np.asarray(thickness, dtype=float))
    next_id = count + 1
    for index, box in enumerate(ndi.find_objects(components), start=1):
        if box is None or not keep[index] or not elongated[index]:
            continue
        padded = tuple(slice(max(s.start - 2, 0), s.stop + 2) for s in box)
        mask = components[padded] == index
        distance = ndi.gaussian_filter(ndi.distance_transform_edt(mask).astype(np.float32), 1.0)
        markers, found = ndi.label(h_maxima(distance, split_h) & mask)
        if found < 2:
            continue
        parts = watershed(-distance, markers, mask=mask)
        # Watershed can leave a sliver without a seed of its own; fragments below the minimum size are dropped.
        part_sizes = np.bincount(parts.ravel(), minlength=found + 1)
        region = labels[padded]
        region[mask] = 0
        for part in range(1, found + 1):
            if part_sizes[part] >= min_area:
                region[parts == part] = next_id
                next_id += 1
    return _relabel(labels)


def _fill_holes(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """``mask`` with its holes filled: background components that do not touch the border (faster than
    :func:`scipy.ndimage.binary_fill_holes` on a whole field)."""
    background, _ = ndi.label(~mask)
    outside = np.unique(np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]]))
    hole = np.ones(int(background.max()) + 1, dtype=bool)
    hole[outside] = False
    hole[0] = False
    return mask | hole[background]


def _relabel(labels: NDArray[np.integer]) -> Labels:
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lookup = np.zeros(int(labels.max(initial=0)) + 1, dtype=np.int32)
    lookup[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
    return lookup[labels]


def _scaled(image: NDArray) -> NDArray[np.float32]:
    image = np.asarray(image, dtype=np.float32)
    low, high = np.percentile(image[::2, ::2], (1.0, 99.5))
    return (image - np.float32(low)) / np.float32(max(high - low, 1e-6))


def segment_cells(nuclei: Labels, tubulin: NDArray, actin: NDArray, *, sigma: float = 2.0) -> Labels:
    """Grow each nucleus into its cell on the tubulin + actin signal (ids as in ``nuclei``).

    Parameters
    ----------
    nuclei : (H, W) ndarray of int
        Nucleus labels from :func:`segment_nuclei`.
    tubulin, actin : (H, W) ndarray
        The cytoplasmic stains; not modified.
    sigma : float
        Smoothing of the summed signal (px).

    Returns
    -------
    (H, W) ndarray of int32
        0 background, ``k`` for the cell of nucleus ``k``.
    """
    from skimage.filters import threshold_otsu
    from skimage.segmentation import watershed

    if nuclei.max(initial=0) == 0:
        return np.zeros(nuclei.shape, dtype=np.int32)
    signal = ndi.gaussian_filter(_scaled(tubulin) + _scaled(actin), sigma)
    logged = np.log(np.maximum(signal - float(signal.min()), 0) + np.float32(0.05))
    foreground = logged > threshold_otsu(logged[::2, ::2])
    foreground = _fill_holes(foreground | (nuclei > 0))
    cells = watershed(-signal, np.asarray(nuclei, dtype=np.int32), mask=foreground)
    return cells.astype(np.int32)


def classical_segmenter(*, nucleus_sigma: float = 1.5, min_nucleus_area: int = 30) -> Segmenter:
    """The classical segmenter: ``segmenter(dna, tubulin, actin) -> (nuclei, cells)``."""

    def segment(dna: NDArray, tubulin: NDArray, actin: NDArray) -> tuple[Labels, Labels]:
        nuclei = segment_nuclei(dna, sigma=nucleus_sigma, min_area=min_nucleus_area)
        return nuclei, segment_cells(nuclei, tubulin, actin)

    return segment


def run_segmenter(run: str | Path) -> Segmenter:
    """A segmenter from a trained ``cytolens segment`` run (classes must include nucleus and cytoplasm).

    The network sees the first ``in_chans`` of (DNA, tubulin, actin), each normalised by the run's intensity
    setting; its prediction is split into cells by :func:`cytolens.segment.cells.split_cells`, and each cell's
    nucleus is the nucleus-class pixels inside it.
    """
    from cytolens.core.errors import CytolensError
    from cytolens.segment import cell_segmenter

    segmenter = cell_segmenter(run)
    if not 1 <= segmenter.in_chans <= 3:
        raise CytolensError(f"the run expects {segmenter.in_chans} input channels; a BBBC021 field has 3", path=run)

    def segment(dna: NDArray, tubulin: NDArray, actin: NDArray) -> tuple[Labels, Labels]:
        channels = [dna, tubulin, actin][: segmenter.in_chans]
        stack = np.stack(channels, axis=-1) if segmenter.in_chans > 1 else channels[0]
        return segmenter(segmenter.normalise(stack))

    return segment


def make_segmenter(method: str) -> Segmenter:
    """``"classical"`` or ``"segment:RUN"`` (a ``cytolens segment train`` run folder) → a segmenter."""
    if method == "classical":
        return classical_segmenter()
    if method.startswith("segment:") and len(method) > len("segment:"):
        return run_segmenter(method.split(":", 1)[1])
    raise OptionError(
        f"`segmentation` must be 'classical' or 'segment:RUN' (RUN a 'cytolens segment train' folder), got {method!r}."
    )
