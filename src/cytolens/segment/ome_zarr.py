"""Segmentations as OME-Zarr (NGFF 0.5, Zarr v3) images, written band by band with bounded memory.

One input image ``<stem>`` becomes one OME-Zarr image that napari (napari-ome-zarr), OMERO, MoBIE and
Fiji's N5/OME-Zarr readers open with its labels::

    <stem>.ome.zarr/              the input image as the network saw it: a multiscale image, axes (y, x) or
        zarr.json                 (c, y, x), the pixel size as each level's scale, ``omero`` channel names
        0/ 1/ ...                 pyramid levels, 2x2 mean downsampling
        labels/
            zarr.json             ``labels: ["classes", "cells"]``
            classes/              uint8 class map (uint16 beyond 256 classes), nearest downsampling,
                                  ``image-label`` colours and properties naming the classes
            cells/                cell ids (``--cells``): uint16, or uint32 beyond 65,535 cells
    <stem>_prob.ome.zarr/         (``--prob``) float32 class probabilities, axes (c, y, x), one channel per
                                  class named after it, 2x2 mean downsampling

The probabilities are an image of their own rather than a group inside ``<stem>.ome.zarr``: NGFF 0.5 gives a
container one image (plus its labels), and a reader that opens the container would not find a second one; as
a sibling image it opens in every viewer, and shares the first one's coordinates.

Memory: every pyramid level of every array holds one row of chunks of its own (``chunk`` rows × its width),
filled by the bands as they pass and written as whole chunks (a band written straight into the store would
rewrite every chunk it half covers, once per band); each coarser level is fed from the finer one's rows
(:class:`~cytolens.segment.pyramid.PyramidWriter`), so the pyramid needs no second pass over the image.
Nothing grows with the image's height. Each OME-Zarr folder is written to a temporary folder and renamed into
place only when complete (:func:`~cytolens.core.atomic.atomic_directory`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from cytolens.core.atomic import atomic_directory
from cytolens.core.errors import OptionError
from cytolens.data.pixel_size import PixelSize
from cytolens.segment.outputs import DEFAULT_CLASS_COLORS, OVERLAY_MAX_SIDE, OverlayPreview, check_band, check_cells
from cytolens.segment.pyramid import Downsampling, PyramidWriter, pyramid_shapes

__all__ = ["NGFF_VERSION", "OME_ZARR_CHUNK", "OmeZarrSegmentationWriter"]

#: The OME-Zarr (NGFF) version written: Zarr v3 stores, OME metadata under ``attributes["ome"]``.
NGFF_VERSION = "0.5"
#: Side of the square chunks of every level (channels are chunked one by one); levels are added until the
#: coarsest fits one chunk.
OME_ZARR_CHUNK = 1024


def _axes(channels: bool, pixel_size: PixelSize | None) -> list[dict[str, str]]:
    """NGFF axes: ``c`` (channel) when there are channels, then ``y`` and ``x`` in micrometres when known."""
    axes = [{"name": "c", "type": "channel"}] if channels else []
    for name in ("y", "x"):
        axes.append({"name": name, "type": "space"} | ({"unit": "micrometer"} if pixel_size is not None else {}))
    return axes


def _multiscales(name: str, shapes: Sequence[tuple[int, int]], *, channels: bool, pixel_size: PixelSize | None,
                 method: Downsampling) -> list[dict[str, Any]]:
    """The ``multiscales`` entry: each level's scale is the pixel size (1 when unknown) times 2**level."""
    size_y, size_x = (pixel_size.y_um, pixel_size.x_um) if pixel_size is not None else (1.0, 1.0)
    datasets = []
    for index in range(len(shapes)):
        scale = [1.0] * channels + [size_y * 2**index, size_x * 2**index]
        datasets.append({"path": str(index), "coordinateTransformations": [{"type": "scale", "scale": scale}]})
    return [{
        "name": name, "axes": _axes(channels, pixel_size), "datasets": datasets, "type": method,
        "metadata": {"description": f"2x2 {method} downsampling", "method": "cytolens.segment.ome_zarr.downsample"},
    }]


def _hex(color: tuple[int, int, int] | None) -> str:
    return "FFFFFF" if color is None else "".join(f"{c:02X}" for c in color)


def _omero(names: Sequence[str], colors: Sequence[str], windows: Sequence[tuple[float, float, float, float]]
           ) -> dict[str, Any]:
    """The (transitional) ``omero`` rendering metadata: channel names, colours and display windows."""
    channels = [{"label": name, "color": color, "active": True, "coefficient": 1, "family": "linear",
                 "inverted": False, "window": {"min": lo, "max": hi, "start": start, "end": end}}
                for name, color, (lo, hi, start, end) in zip(names, colors, windows)]
    return {"channels": channels, "rdefs": {"model": "color" if len(names) > 1 else "greyscale"}}


def _dtype_range(dtype: np.dtype) -> tuple[float, float]:
    if dtype.kind in "iu":
        return float(np.iinfo(dtype).min), float(np.iinfo(dtype).max)
    return 0.0, 1.0


def _default_channel_names(stem: str, channels: int) -> list[str]:
    if channels == 1:
        return [stem]
    if channels == 3:
        return ["red", "green", "blue"]
    return [f"channel {k}" for k in range(channels)]


class OmeZarrSegmentationWriter:
    """Write ``<stem>.ome.zarr`` (image + ``labels/classes``), optionally ``<stem>_prob.ome.zarr`` and
    ``labels/cells``, and ``<stem>_overlay.png``, band by band (see the module docstring for the layout).

    The band interface of :class:`~cytolens.segment.outputs.SegmentationWriter`: use as a context manager, call
    :meth:`add` for consecutive bands of rows and :meth:`add_cells` once for the cell ids; the outputs appear,
    each atomically, when the ``with`` block ends without an error, and not at all otherwise.

    Parameters
    ----------
    out_dir : str or Path
    stem : str
    height, width : int
        Size of the image.
    num_classes : int
    channels : int
        Channels of the input image rows given to :meth:`add` (1 for ``(rows, W)`` rows).
    image_dtype : numpy dtype
        The input image's dtype, kept in the OME-Zarr image.
    probabilities : bool, default False
        Also write ``<stem>_prob.ome.zarr`` (float32, one channel per class).
    overlay : bool, default True
        Write the overlay preview (as :class:`~cytolens.segment.outputs.SegmentationWriter` does).
    class_names : sequence of str, optional
        Names of the classes: label properties and probability channel names (default ``class 0``, ...).
    class_colors : sequence of (r, g, b) or None, optional
        Colour of each class (default :data:`~cytolens.segment.outputs.DEFAULT_CLASS_COLORS`); ``None`` is
        transparent in the label colours.
    channel_names : sequence of str, optional
        Names of the input image's channels (default: the stem for one channel, red/green/blue for three).
    pixel_size : PixelSize, optional
        The physical pixel size: the scale of every level, with ``"micrometer"`` on the spatial axes; without
        it the scale is 1 and the axes have no unit.
    chunk : int, optional
        Chunk side (default :data:`OME_ZARR_CHUNK`); levels are halved until the coarsest fits one chunk.
    overlay_max_side : int, optional
        Longest side of the overlay preview.
    """

    def __init__(self, out_dir: str | Path, stem: str, height: int, width: int, num_classes: int, *,
                 channels: int = 1, image_dtype: np.dtype | type = np.uint16, probabilities: bool = False,
                 overlay: bool = True, class_names: Sequence[str] | None = None,
                 class_colors: Sequence[tuple[int, int, int] | None] | None = None,
                 channel_names: Sequence[str] | None = None, pixel_size: PixelSize | None = None,
                 chunk: int | None = None, overlay_max_side: int = OVERLAY_MAX_SIDE) -> None:
        import zarr

        out_dir = Path(out_dir)
        self.class_names = list(class_names) if class_names is not None else [f"class {k}" for k in
                                                                               range(num_classes)]
        if len(self.class_names) != num_classes:
            raise OptionError(f"`class_names` has {len(self.class_names)} names for {num_classes} classes")
        self.channel_names = list(channel_names) if channel_names is not None else \
            _default_channel_names(stem, channels)
        if len(self.channel_names) != channels:
            raise OptionError(f"`channel_names` has {len(self.channel_names)} names for {channels} channels")
        self.colors = DEFAULT_CLASS_COLORS if class_colors is None else class_colors
        if overlay and num_classes > len(self.colors):
            raise OptionError(f"`class_colors` has {len(self.colors)} colours for {num_classes} classes")
        self.stem = stem
        self.shape = (height, width)
        self.num_classes = num_classes
        self.channels = channels
        self.pixel_size = pixel_size
        self.label_dtype = np.dtype(np.uint8 if num_classes <= 256 else np.uint16)
        self.image_dtype = np.dtype(image_dtype)
        self.overlay = overlay
        self.chunk = chunk if chunk is not None else OME_ZARR_CHUNK  # read now, so a test can shrink it
        self.levels = pyramid_shapes(height, width, top=self.chunk)
        self.paths = {"image": out_dir / f"{stem}.ome.zarr"}
        self.paths["labels"] = self.paths["image"] / "labels" / "classes"
        self.preview = OverlayPreview(out_dir / f"{stem}_overlay.png", height, width, self.colors, overlay_max_side)
        if overlay:
            self.paths["overlay"] = self.preview.path
        self._stack = contextlib.ExitStack()
        self._minimum = np.full(channels, np.inf)
        self._maximum = np.full(channels, -np.inf)
        self._next_row = 0
        self._cells_written = False
        try:
            self._root = zarr.open_group(self._stack.enter_context(atomic_directory(self.paths["image"])),
                                         mode="w", zarr_format=3)
            self._labels = self._root.create_group("labels")
            self._image = self._pyramid(self._root, self.image_dtype, channels if channels > 1 else None, "mean")
            self._classes = self._pyramid(self._labels.create_group("classes"), self.label_dtype, None, "nearest")
            self._probabilities: PyramidWriter | None = None
            if probabilities:
                self.paths["probabilities"] = out_dir / f"{stem}_prob.ome.zarr"
                self._prob_root = zarr.open_group(
                    self._stack.enter_context(atomic_directory(self.paths["probabilities"])), mode="w",
                    zarr_format=3)
                self._probabilities = self._pyramid(self._prob_root, np.float32, num_classes, "mean")
        except BaseException as exc:
            # No ``with`` block runs yet: hand the error to atomic_directory, so the temporary folders go.
            if not self._stack.__exit__(type(exc), exc, exc.__traceback__):
                raise

    def _pyramid(self, group: Any, dtype: np.dtype | type, channels: int | None,
                 method: Downsampling) -> PyramidWriter:
        names = (["c"] if channels is not None else []) + ["y", "x"]
        return PyramidWriter(group, self.levels, dtype=dtype, channels=channels, method=method,
                             dimension_names=names, chunk=self.chunk)

    def add(self, start: int, labels: np.ndarray, probabilities: np.ndarray | None = None,
            image: np.ndarray | None = None) -> None:
        """Write rows ``start .. start + len(labels)``: ``labels`` ``(rows, W)`` integers, ``probabilities``
        ``(K, rows, W)`` (when written) and ``image`` ``(rows, W[, C])``, the input rows.

        Raises
        ------
        OptionError
            If bands are not consecutive, or their shapes or values do not fit the image.
        """
        labels = check_band(labels, start, self._next_row, self.shape, self.num_classes)
        rows = labels.shape[0]
        expected = (rows, self.shape[1]) + ((self.channels,) if self.channels > 1 else ())
        if image is None or np.shape(image) != expected:
            raise OptionError(f"`image` rows {start}..{start + rows} must have shape {expected}")
        image = np.asarray(image)
        if self._probabilities is not None:
            if probabilities is None or probabilities.shape != (self.num_classes, rows, self.shape[1]):
                raise OptionError(f"`probabilities` of rows {start}..{start + rows} must have shape "
                                  f"{(self.num_classes, rows, self.shape[1])}")
            self._probabilities.add(probabilities)
        self._classes.add(labels)
        # Channels last in, channels first in the store (moveaxis is a view; the level buffer copies).
        self._image.add(np.moveaxis(image, -1, 0) if self.channels > 1 else image)
        if image.size:
            flat = image.reshape(-1, self.channels)
            self._minimum = np.minimum(self._minimum, flat.min(axis=0))
            self._maximum = np.maximum(self._maximum, flat.max(axis=0))
        if self.overlay:
            self.preview.add(start, labels, image)
        self._next_row = start + rows

    def add_cells(self, instances: np.ndarray) -> None:
        """Write ``labels/cells``: cell ids ``(H, W)``, 0 background (uint16, or uint32 beyond 65,535 cells)."""
        instances, dtype = check_cells(instances, self.shape)
        pyramid = self._pyramid(self._labels.create_group("cells"), dtype, None, "nearest")
        for first in range(0, self.shape[0], self.chunk):  # converted a chunk row at a time, not as a whole copy
            pyramid.add(instances[first : first + self.chunk])
        pyramid.close()
        self.paths["cells"] = self.paths["image"] / "labels" / "cells"
        self._cells_written = True

    def _write_metadata(self) -> None:
        """The NGFF attributes of every group, written last: the display windows need every band's values."""
        size = self.pixel_size
        low, high = _dtype_range(self.image_dtype)
        finite = np.isfinite(self._minimum)
        windows = [(low, high, float(lo) if ok else low, float(hi) if ok else high)
                   for lo, hi, ok in zip(self._minimum, self._maximum, finite)]
        colors = ["FF0000", "00FF00", "0000FF"] if self.channels == 3 else ["FFFFFF"] * self.channels
        self._root.attrs["ome"] = {
            "version": NGFF_VERSION,
            "multiscales": _multiscales(self.stem, self.levels, channels=self.channels > 1, pixel_size=size,
                                        method="mean"),
            "omero": _omero(self.channel_names, colors, windows),
        }
        names = ["classes"] + (["cells"] if self._cells_written else [])
        self._labels.attrs["ome"] = {"version": NGFF_VERSION, "labels": names}
        label_colors = [{"label-value": k, "rgba": [*color, 255] if color is not None else [0, 0, 0, 0]}
                        for k, color in enumerate(self.colors[: self.num_classes])]
        properties = [{"label-value": k, "class": name} for k, name in enumerate(self.class_names)]
        source = {"image": "../../"}
        self._labels["classes"].attrs["ome"] = {
            "version": NGFF_VERSION,
            "multiscales": _multiscales(f"{self.stem} classes", self.levels, channels=False, pixel_size=size,
                                        method="nearest"),
            "image-label": {"version": NGFF_VERSION, "colors": label_colors, "properties": properties,
                            "source": source},
        }
        if self._cells_written:
            self._labels["cells"].attrs["ome"] = {
                "version": NGFF_VERSION,
                "multiscales": _multiscales(f"{self.stem} cells", self.levels, channels=False, pixel_size=size,
                                            method="nearest"),
                # No colours, so viewers colour the cells themselves (napari-ome-zarr would draw every id not
                # listed transparent); an empty list rather than none, which ome-zarr-models 1.6 rejects.
                "image-label": {"version": NGFF_VERSION, "colors": [], "source": source},
            }
        if self._probabilities is not None:
            self._prob_root.attrs["ome"] = {
                "version": NGFF_VERSION,
                "multiscales": _multiscales(f"{self.stem} probabilities", self.levels, channels=True,
                                            pixel_size=size, method="mean"),
                "omero": _omero(self.class_names, [_hex(c) for c in self.colors[: self.num_classes]]
                                if len(self.colors) >= self.num_classes else ["FFFFFF"] * self.num_classes,
                                [(0.0, 1.0, 0.0, 1.0)] * self.num_classes),
            }

    def __enter__(self) -> OmeZarrSegmentationWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if kind is not None:  # the error reaches atomic_directory: temporary folders go, nothing appears
            self._stack.__exit__(kind, value, traceback)
            return
        with self._stack:  # a problem here also reaches atomic_directory, so no folder appears
            if self._next_row != self.shape[0]:
                raise OptionError(f"only rows 0..{self._next_row} of {self.shape[0]} were written")
            for pyramid in (self._image, self._classes, self._probabilities):
                if pyramid is not None:
                    pyramid.close()
            self._write_metadata()
            if self.overlay:
                self.preview.write()

