"""Intensity normalisation of single-cell crops: CytoGAN's per-crop maximum, per-plate percentiles, or
CellProfiler-style illumination correction followed by per-plate percentiles.

``crop_max`` (CytoGAN)
    Each channel of each crop is divided by its own maximum, so every crop spans [0, 1] whatever the plate's
    brightness. Needs nothing beyond the crop.
``plate_percentile``
    Each channel is mapped linearly from its plate's low to its high percentile (default 1 and 99.9) to [0, 1] and
    clipped. The percentiles come from a first pass over a sample of the plate's fields, so brightness differences
    *between cells* survive while those between plates (weeks, stain batches) are removed.
``illumination``
    First divide each field by its plate's illumination function (per channel: the mean of the sampled fields,
    smoothed heavily and scaled to median 1, as CellProfiler's CorrectIlluminationCalculate does), then map by the
    percentiles of the corrected sample. This also removes uneven illumination within the field.

Plate statistics are computed once per plate and cached (``PlateStatistics.save``/``load``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage as ndi

NORMALISATIONS: tuple[str, ...] = ("crop_max", "plate_percentile", "illumination")
PERCENTILES: tuple[float, float] = (1.0, 99.9)
#: The illumination function is smoothed on a grid this many times coarser than the field (speed and memory).
_ILLUMINATION_BIN = 8


@dataclass
class PlateStatistics:
    """Per-channel statistics of one plate: ``low``/``high`` percentiles (3,) and an optional coarse
    illumination function ``illumination`` (3, h, w) with median 1 (None for ``plate_percentile``)."""

    low: NDArray[np.float64]
    high: NDArray[np.float64]
    illumination: NDArray[np.float32] | None = None

    def save(self, path: Path) -> None:
        from cytolens.core.atomic import atomic_path

        arrays = {"low": self.low, "high": self.high}
        if self.illumination is not None:
            arrays["illumination"] = self.illumination
        with atomic_path(path) as tmp:
            with tmp.open("wb") as handle:
                np.savez(handle, **arrays)

    @classmethod
    def load(cls, path: Path) -> PlateStatistics:
        with np.load(path) as data:
            illumination = data["illumination"] if "illumination" in data.files else None
            return cls(data["low"], data["high"], illumination)

    def illumination_at(self, shape: tuple[int, int]) -> NDArray[np.float32]:
        """The illumination function (3, H, W) at a field's full size."""
        assert self.illumination is not None
        coarse = self.illumination
        zoom = (1, shape[0] / coarse.shape[1], shape[1] / coarse.shape[2])
        full = ndi.zoom(coarse, zoom, order=1, mode="nearest", grid_mode=True)
        return np.maximum(full[:, : shape[0], : shape[1]], np.float32(1e-3)).astype(np.float32)


def _binned(image: NDArray[np.float32], factor: int) -> NDArray[np.float32]:
    height, width = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    view = image[:height, :width].reshape(height // factor, factor, width // factor, factor)
    return view.mean(axis=(1, 3), dtype=np.float32)


def plate_statistics(
    fields: Sequence[Callable[[], NDArray[np.float32]]],
    *,
    illumination: bool,
    percentiles: tuple[float, float] = PERCENTILES,
) -> PlateStatistics:
    """Compute a plate's statistics from a sample of its fields.

    Parameters
    ----------
    fields : sequence of callables
        Each returns one field as (3, H, W) float32 (DNA, tubulin, actin); called once or twice (fields are read
        lazily so that memory holds one field at a time).
    illumination : bool
        Also compute the illumination function, and take the percentiles after correcting by it.
    percentiles : (float, float)
        Low and high percentiles.
    """
    correction = None
    if illumination:
        total: NDArray[np.float64] | None = None
        for load in fields:
            binned = np.stack([_binned(channel, _ILLUMINATION_BIN) for channel in load()]).astype(np.float64)
            total = binned if total is None else total + binned[:, : total.shape[1], : total.shape[2]]
        assert total is not None
        mean = (total / len(fields)).astype(np.float32)
        # Smooth over about a sixth of the field: cells vanish, the optics' slow fall-off stays.
        sigma = max(mean.shape[1:]) / 6.0
        smooth = np.stack([ndi.gaussian_filter(channel, sigma, mode="nearest") for channel in mean])
        smooth /= np.median(smooth, axis=(1, 2), keepdims=True)
        correction = smooth.astype(np.float32)
    samples: list[NDArray[np.float32]] = []
    stats = PlateStatistics(np.zeros(3), np.ones(3), correction)
    for load in fields:
        image = load()
        if correction is not None:
            image = image / stats.illumination_at(image.shape[1:])
        samples.append(image[:, ::4, ::4].reshape(3, -1))
    pixels = np.concatenate(samples, axis=1)
    low, high = np.percentile(pixels, percentiles, axis=1)
    stats.low, stats.high = low.astype(np.float64), np.maximum(high, low + 1e-6).astype(np.float64)
    return stats


def normalise_field(image: NDArray[np.float32], stats: PlateStatistics) -> NDArray[np.float32]:
    """Apply a plate's normalisation to a field (3, H, W): illumination correction if any, then percentiles."""
    if stats.illumination is not None:
        image = image / stats.illumination_at(image.shape[1:])
    low = stats.low.astype(np.float32)[:, None, None]
    span = (stats.high - stats.low).astype(np.float32)[:, None, None]
    return np.clip((image - low) / span, 0.0, 1.0).astype(np.float32)


def crop_maximum(crops: NDArray[np.float32]) -> NDArray[np.float32]:
    """CytoGAN's normalisation: divide each channel of each crop (n, S, S, 3) by its maximum (0 stays 0)."""
    peak = crops.max(axis=(1, 2), keepdims=True)
    return np.divide(crops, peak, out=np.zeros_like(crops), where=peak > 0)
