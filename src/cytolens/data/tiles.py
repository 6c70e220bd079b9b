"""Reading large images band by band, so that memory does not grow with the image.

:func:`open_image_rows` opens an image for reading rows ``y0 .. y1`` at a time, with the pixels
:func:`~cytolens.data.io.read_image` would return for those rows (same dtype, channels last, the same
``grayscale`` rule). How it reads depends on the file:

- an uncompressed, contiguous TIFF is memory-mapped for each band read: a band costs its own bytes only;
- any other TIFF whose first series is one 2-D plane, optionally with one channel or sample axis (tiled or
  striped, compressed or not), is read through tifffile's zarr interface, which decodes only the tiles or
  strips a band touches;
- PNG and JPEG files, TIFF layouts beyond that (several series stacked as channels, Z or T axes), and images of
  at most ``whole_below`` pixels are read whole with :func:`~cytolens.data.io.read_image` and served from
  memory. So small images take exactly today's path, and every problem ``read_image`` reports is reported.

:func:`band_percentiles` gives the per-channel percentiles of such an image without holding it: for integer
images of at most 16 bits from a histogram (exact, equal to ``numpy.percentile``'s linear method), for other
dtypes from the whole image (there is no exact bounded way).
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import numpy as np
import tifffile

from cytolens.core.errors import ImageReadError
from cytolens.data.io import _CHANNEL_AXES, _DECODER_ERRORS, _GENERIC_AXES, MAX_CHANNELS, detect_format, read_image, \
    to_grayscale

__all__ = ["ImageRows", "band_percentiles", "open_image_rows"]

#: Images of at most this many pixels are read whole: a 4-megapixel band reader would save nothing.
WHOLE_BELOW = 1 << 22


class _MappedSeries:
    """An uncompressed, contiguous TIFF series, memory-mapped anew for each read.

    A mapping that stays open keeps every page it has touched resident: reading a 10,000² image band by band
    through one map ends with the whole file in the process's resident set. Mapping per read and copying the
    band out releases each band's pages when the map closes.
    """

    def __init__(self, path: Path, dtype: np.dtype, offset: int, shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.offset, self.shape = path, dtype, offset, shape

    def __getitem__(self, index: tuple[int | slice, ...]) -> np.ndarray:
        count = int(np.prod(self.shape))
        with open(self.path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            series = np.frombuffer(mapped, dtype=self.dtype, count=count, offset=self.offset).reshape(self.shape)
            band = np.array(series[index])  # a copy: the map closes when the block ends
            del series  # the map cannot close while an array still refers to it
        return band


class ImageRows:
    """An image readable a band of rows at a time (see :func:`open_image_rows`); a context manager.

    Attributes
    ----------
    path : Path
    shape : tuple of int
        ``(H, W)`` or ``(H, W, C)``, as :func:`~cytolens.data.io.read_image` returns.
    dtype : numpy.dtype
    streamed : bool
        False when the image was read whole into memory.
    """

    def __init__(self, path: Path, *, grayscale: bool, whole_below: int) -> None:
        self.path = path
        self._grayscale = grayscale
        self._tif: tifffile.TiffFile | None = None
        self._whole: np.ndarray | None = None
        self._store: object = None
        self._axes = ""
        self._index: list[int | slice] = []
        self._row_axis = 0
        layout = self._stream_layout(whole_below) if detect_format(path) == "tiff" else None
        if layout is None:
            self.close()
            self._whole = read_image(path, grayscale=grayscale)
            self.shape: tuple[int, ...] = tuple(self._whole.shape)
            self.dtype = self._whole.dtype
            self.streamed = False
            return
        self.streamed = True
        height, width, channels, dtype = layout
        self.dtype = np.dtype(dtype)
        if grayscale or channels == 1:
            self.shape = (height, width)
        else:
            self.shape = (height, width, channels)
        if self.dtype.kind not in "uif":
            self.close()
            raise ImageReadError(f"unsupported pixel type {self.dtype}", path=path)

    def _stream_layout(self, whole_below: int) -> tuple[int, int, int, np.dtype] | None:
        """``(H, W, C, dtype)`` when the TIFF can be read in bands, else None (read it whole)."""
        try:
            tif = tifffile.TiffFile(self.path)
        except _DECODER_ERRORS:
            return None  # read_image phrases the problem
        self._tif = tif
        if len(tif.series) != 1:
            return None  # several series are stacked as channels by read_image: rare, keep its rule
        series = tif.series[0]
        keep = [(axis, n) for axis, n in zip(series.axes, series.shape) if n > 1 or axis in "YX"]
        axes = "".join(axis for axis, _ in keep)
        sizes = dict(keep)
        extra = [axis for axis in axes if axis not in "YX"]
        if "Y" not in axes or "X" not in axes or len(extra) > 1 or axes.index("Y") > axes.index("X"):
            return None
        if extra and (extra[0] not in _CHANNEL_AXES + _GENERIC_AXES or sizes[extra[0]] > MAX_CHANNELS):
            return None
        height, width = sizes["Y"], sizes["X"]
        if height * width <= whole_below:
            return None
        if axes not in ("YX", *(f"YX{e}" for e in extra), *(f"{e}YX" for e in extra)):
            return None
        self._axes = axes
        # Index of the full (unsqueezed) series that selects the band's rows: length-1 axes are dropped.
        self._index = [0 if n == 1 and axis not in "YX" else slice(None) for axis, n in zip(series.axes, series.shape)]
        self._row_axis = series.axes.index("Y")
        try:
            if series.dataoffset is not None:  # uncompressed and contiguous: map it
                size = int(series.dataoffset) + int(np.prod(series.shape)) * np.dtype(series.dtype).itemsize
                if self.path.stat().st_size < size:
                    return None  # truncated: read_image phrases the problem
                self._store = _MappedSeries(self.path, np.dtype(series.dtype).newbyteorder(tif.byteorder),
                                            int(series.dataoffset), tuple(series.shape))
            else:
                import zarr

                self._store = zarr.open(series.aszarr(), mode="r")
        except _DECODER_ERRORS:
            return None
        channels = sizes[extra[0]] if extra else 1
        return height, width, channels, series.dtype

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start .. stop`` (clipped to the image): ``(rows, W[, C])`` in the stored dtype.

        Raises
        ------
        ImageReadError
            If the rows cannot be decoded, or a float image holds NaN or infinite values there.
        """
        if self._whole is not None:
            return self._whole[start:stop]
        store = self._store
        try:
            index = list(self._index)
            index[self._row_axis] = slice(start, stop)
            band = np.asarray(store[tuple(index)])  # type: ignore[index]
            if self._axes[0] not in "YX":  # channels first (one page per channel): move them last
                band = np.moveaxis(band, 0, -1)
        except _DECODER_ERRORS as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ImageReadError(f"cannot be read, the file is truncated or corrupt ({detail})",
                                 path=self.path) from exc
        band = np.ascontiguousarray(band, dtype=band.dtype.newbyteorder("="))
        if band.dtype.kind == "f" and not np.isfinite(band).all():
            raise ImageReadError(f"holds invalid values (NaN or infinite pixels in rows {start}..{stop})",
                                 path=self.path)
        if self._grayscale and band.ndim == 3:
            band = to_grayscale(band)  # per band: identical channels stay exact, others average as read_image does
        return band

    def bands(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, pixels)`` for consecutive bands of ``rows`` rows, top to bottom."""
        for start in range(0, self.shape[0], rows):
            yield start, self.read(start, min(start + rows, self.shape[0]))

    def close(self) -> None:
        self._store = None
        if self._tif is not None:
            self._tif.close()
            self._tif = None

    def __enter__(self) -> ImageRows:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def open_image_rows(path: str | Path, *, grayscale: bool = False, whole_below: int | None = None) -> ImageRows:
    """Open an image for reading in bands of rows (see the module docstring for how each file is read).

    Parameters
    ----------
    path : str or Path
        A TIFF, PNG or JPEG file.
    grayscale : bool, default False
        Collapse channels as :func:`~cytolens.data.io.read_image` does.
    whole_below : int, optional
        Read images of at most this many pixels whole (default :data:`WHOLE_BELOW`, 4 Mi pixels, looked up at
        call time); 0 streams every TIFF it can.

    Returns
    -------
    ImageRows
        Use as a context manager; ``read(y0, y1)`` returns rows.

    Raises
    ------
    ImageReadError
        If the file is missing, of an unknown format, or (read whole) anything :func:`read_image` rejects.
    """
    return ImageRows(Path(path), grayscale=grayscale, whole_below=WHOLE_BELOW if whole_below is None else whole_below)


def _percentile_from_counts(counts: np.ndarray, offset: int, q: float) -> np.float32:
    """``numpy.percentile(values, q)`` (linear method) of float32 values given as a histogram of integers.

    ``counts[i]`` is the number of pixels of value ``offset + i``. numpy's arithmetic is repeated step by step
    (virtual index in float64, interpolation weight as a Python float, lerp in float32) so the result is equal,
    not merely close.
    """
    total = int(counts.sum())
    virtual = (total - 1) * (np.float64(q) / 100)
    below = int(np.floor(virtual))
    below = min(max(below, 0), total - 1)
    above = min(below + 1, total - 1)
    cumulative = np.cumsum(counts)
    a = np.float32(offset + int(np.searchsorted(cumulative, below, side="right")))
    b = np.float32(offset + int(np.searchsorted(cumulative, above, side="right")))
    t = float(virtual - np.floor(virtual))
    difference = b - a
    if t >= 0.5:
        return np.float32(b - difference * (1 - t))
    return np.float32(a + difference * t)


def band_percentiles(image: ImageRows, percentiles: tuple[float, float], *, rows: int = 512
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Low and high percentiles of each channel, shaped ``(1, 1[, C])`` float32 as ``normalize_intensity`` uses.

    Integer images of at most 16 bits are counted band by band into one histogram per channel, so memory stays
    at one band; other dtypes are gathered whole (documented as unbounded).
    """
    low, high = percentiles
    channels = 1 if len(image.shape) == 2 else image.shape[2]
    keep = (1, 1) if len(image.shape) == 2 else (1, 1, channels)
    dtype = image.dtype
    if dtype.kind in "ui" and dtype.itemsize <= 2:
        offset = int(np.iinfo(dtype).min)
        size = int(np.iinfo(dtype).max) - offset + 1
        counts = np.zeros((channels, size), dtype=np.int64)
        for _, band in image.bands(rows):
            flat = band.reshape(-1, channels)
            for c in range(channels):
                counts[c] += np.bincount((flat[:, c].astype(np.int64) - offset), minlength=size)
        lo = np.array([_percentile_from_counts(counts[c], offset, low) for c in range(channels)], np.float32)
        hi = np.array([_percentile_from_counts(counts[c], offset, high) for c in range(channels)], np.float32)
        return lo.reshape(keep), hi.reshape(keep)
    data = np.concatenate([band.astype(np.float32) for _, band in image.bands(rows)])
    lo = np.percentile(data, low, axis=(0, 1), keepdims=True).astype(np.float32)
    hi = np.percentile(data, high, axis=(0, 1), keepdims=True).astype(np.float32)
    return lo, hi
