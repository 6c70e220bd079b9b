"""Multiscale (pyramid) arrays written a band of rows at a time, with memory bounded by one row of chunks per level.

:class:`PyramidWriter` is the storage-independent half of the OME-Zarr writer
(:mod:`cytolens.segment.ome_zarr`): it creates one Zarr array per level in a group, fills level 0 from the bands
it is given and every coarser level from the rows of the level above (:func:`downsample`, 2×2 mean for
intensities and probabilities, nearest for labels), so a pyramid needs no second pass over the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from cytolens.core.errors import OptionError

__all__ = ["Downsampling", "PyramidWriter", "downsample", "pyramid_shapes"]

Downsampling = Literal["mean", "nearest"]


def pyramid_shapes(height: int, width: int, *, top: int) -> list[tuple[int, int]]:
    """The ``(height, width)`` of every pyramid level: halved (rounding up) until the longest side is at most
    ``top``.

    Examples
    --------
    >>> pyramid_shapes(10_000, 10_000, top=1024)
    [(10000, 10000), (5000, 5000), (2500, 2500), (1250, 1250), (625, 625)]
    """
    if height < 1 or width < 1:
        raise OptionError(f"an image needs at least one pixel, got {height} × {width}")
    shapes = [(height, width)]
    while max(shapes[-1]) > top:
        h, w = shapes[-1]
        shapes.append((-(-h // 2), -(-w // 2)))
    return shapes


def downsample(rows: np.ndarray, method: Downsampling) -> np.ndarray:
    """Rows ``(..., 2n, W)`` downsampled 2×2 into ``(..., n, ceil(W / 2))``, in their own dtype.

    ``"nearest"`` keeps every second pixel (labels keep their values); ``"mean"`` averages each 2×2 block (an
    odd last column is averaged with itself), rounded to the nearest integer for integer dtypes.
    """
    if rows.shape[-2] % 2:
        raise OptionError(f"`rows` must be an even number of rows, got {rows.shape[-2]}")
    if method == "nearest":
        return np.ascontiguousarray(rows[..., ::2, ::2])
    if rows.shape[-1] % 2:
        rows = np.concatenate([rows, rows[..., -1:]], axis=-1)
    blocks = rows.reshape(*rows.shape[:-2], rows.shape[-2] // 2, 2, rows.shape[-1] // 2, 2)
    mean = blocks.mean(axis=(-3, -1), dtype=np.float64 if rows.dtype.itemsize > 2 else np.float32)
    if rows.dtype.kind in "iu":
        info = np.iinfo(rows.dtype)
        return np.clip(np.rint(mean), info.min, info.max).astype(rows.dtype)
    return mean.astype(rows.dtype, copy=False)


class _Level:
    """One pyramid level: its array, a row of chunks being filled, and the unpaired row of the level above."""

    def __init__(self, array: Any, shape: tuple[int, ...], chunk_rows: int, dtype: np.dtype) -> None:
        self.array = array
        self.buffer = np.zeros(shape[:-2] + (chunk_rows, shape[-1]), dtype)
        self.fill = 0  # rows of the buffer holding data
        self.written = 0  # rows already in the array
        self.height = shape[-2]

    def flush(self) -> None:
        if self.fill:
            leading = (slice(None),) * (self.buffer.ndim - 2)
            self.array[leading + (slice(self.written, self.written + self.fill), slice(None))] = \
                self.buffer[..., : self.fill, :]
            self.written += self.fill
            self.fill = 0


class PyramidWriter:
    """A multiscale array written a band of rows at a time, top to bottom.

    Level 0 receives the rows; level ``l + 1`` receives level ``l``'s rows downsampled 2×2 (:func:`downsample`)
    as soon as they pair up. Each level writes whole rows of chunks from a buffer of its own, so memory is one
    row of chunks per level whatever the image's height.

    Parameters
    ----------
    group : zarr.Group
        Where the levels are created, as arrays ``"0"``, ``"1"``, ...
    shapes : list of (height, width)
        Per level (:func:`pyramid_shapes`).
    dtype : numpy dtype
    channels : int, optional
        Arrays are ``(channels, H, W)`` with one channel per chunk; ``(H, W)`` without.
    method : {"mean", "nearest"}
    dimension_names : sequence of str
        The Zarr v3 ``dimension_names`` (NGFF 0.5 asks for the axes' names).
    chunk : int
        Chunk side: the arrays' chunks are ``chunk × chunk`` (smaller where a level is smaller).
    """

    def __init__(self, group: Any, shapes: Sequence[tuple[int, int]], *, dtype: np.dtype | type,
                 channels: int | None, method: Downsampling, dimension_names: Sequence[str],
                 chunk: int) -> None:
        self.dtype = np.dtype(dtype)
        self.method = method
        self.channels = channels
        self.levels: list[_Level] = []
        self._carry: list[np.ndarray | None] = [None] * len(shapes)
        lead = () if channels is None else (channels,)
        for index, (height, width) in enumerate(shapes):
            shape = lead + (height, width)
            chunks = (1,) * len(lead) + (min(chunk, height), min(chunk, width))
            array = group.create_array(str(index), shape=shape, dtype=self.dtype, chunks=chunks, fill_value=0,
                                       dimension_names=list(dimension_names))
            self.levels.append(_Level(array, shape, chunks[-2], self.dtype))

    def add(self, rows: np.ndarray) -> None:
        """Append rows ``(rows, W)`` (``(channels, rows, W)`` with channels) below those already added."""
        self._add(0, np.asarray(rows, dtype=self.dtype))

    def _add(self, index: int, rows: np.ndarray) -> None:
        level = self.levels[index]
        count = rows.shape[-2]
        if rows.shape[:-2] != level.buffer.shape[:-2] or rows.shape[-1] != level.buffer.shape[-1] \
                or level.written + level.fill + count > level.height:
            raise OptionError(f"rows of shape {rows.shape} do not continue level {index} of shape "
                              f"{level.buffer.shape[:-2] + (level.height, level.buffer.shape[-1])}")
        done = 0
        while done < count:
            take = min(count - done, level.buffer.shape[-2] - level.fill)
            level.buffer[..., level.fill : level.fill + take, :] = rows[..., done : done + take, :]
            level.fill += take
            done += take
            if level.fill == level.buffer.shape[-2]:
                level.flush()
        if index + 1 == len(self.levels) or count == 0:
            return
        carry = self._carry[index]
        if carry is not None:  # the unpaired last row of the previous band pairs with this band's first
            self._carry[index] = None
            self._add(index + 1, downsample(np.concatenate([carry, rows[..., :1, :]], axis=-2), self.method))
            rows = rows[..., 1:, :]
        paired = rows.shape[-2] // 2 * 2
        if paired:
            self._add(index + 1, downsample(rows[..., :paired, :], self.method))
        if paired < rows.shape[-2]:
            self._carry[index] = np.array(rows[..., paired:, :])  # a copy: the band's buffer is reused

    def close(self) -> None:
        """Write what the buffers hold; an image of odd height sends its unpaired last row down alone."""
        for index, level in enumerate(self.levels):
            carry = self._carry[index]
            if carry is not None:
                self._carry[index] = None
                self._add(index + 1, downsample(np.concatenate([carry, carry], axis=-2), self.method))
            level.flush()
            if level.written != level.height:
                raise OptionError(f"level {index} received {level.written} of its {level.height} rows")
