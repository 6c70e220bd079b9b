"""Writing segmentations that other tools open: integer label TIFFs (Fiji, napari), probability stacks and
colour overlays for a quick look. Every file is written atomically.

:func:`write_segmentation` writes arrays held in memory; :class:`SegmentationWriter` writes the same files
band by band while an image is predicted, so memory does not grow with the image: the TIFFs are created
uncompressed with tifffile and each band is written through a memory map of its own rows only, and the overlay
is a preview whose longest side is at most ``overlay_max_side`` pixels (every ``step``-th row and column,
:func:`overlay_step`), built as the bands pass. An image whose longest side fits is overlaid at full size,
exactly as :func:`write_segmentation` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
import tifffile

from cytolens.core.atomic import atomic_path, reserve

from cytolens.core.errors import OptionError, check_choice
from cytolens.data.io import normalize_intensity, to_grayscale, write_png, write_tiff

__all__ = ["DEFAULT_CLASS_COLORS", "OVERLAY_MAX_SIDE", "OverlayPreview", "SegmentationWriter", "check_band", "check_cells",
           "overlay_step", "write_segmentation"]

#: Overlay colours (RGB) per class; ``None`` is transparent. Background, nucleus (magenta), cytoplasm (green).
DEFAULT_CLASS_COLORS: tuple[tuple[int, int, int] | None, ...] = (
    None,
    (255, 0, 255),
    (0, 255, 0),
    (0, 128, 255),
    (255, 160, 0),
    (255, 255, 0),
    (0, 255, 255),
    (255, 64, 64),
)
_OVERLAY_ALPHA = 0.45
#: Longest side of the overlay preview that :class:`SegmentationWriter` writes (a 10,000² full-size overlay
#: would be a 300 MB array for a quick look).
OVERLAY_MAX_SIDE = 2048


def _overlay(image: np.ndarray, labels: np.ndarray, colors: Sequence[tuple[int, int, int] | None]) -> np.ndarray:
    gray = normalize_intensity(to_grayscale(np.asarray(image)), method="percentile")
    rgb = np.repeat((gray * 255.0)[..., np.newaxis], 3, axis=2)
    for k, color in enumerate(colors):
        if color is None:
            continue
        mask = labels == k
        rgb[mask] = (1.0 - _OVERLAY_ALPHA) * rgb[mask] + _OVERLAY_ALPHA * np.asarray(color, dtype=np.float32)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def write_segmentation(
    out_dir: str | Path,
    stem: str,
    labels: np.ndarray,
    *,
    probabilities: np.ndarray | None = None,
    image: np.ndarray | None = None,
    class_colors: Sequence[tuple[int, int, int] | None] | None = None,
    class_names: Sequence[str] | None = None,
    probability_dtype: str = "float32",
) -> dict[str, Path]:
    """Write a segmentation as files that Fiji, napari and image viewers open.

    Parameters
    ----------
    out_dir : str or Path
        Output folder (created if needed).
    stem : str
        File name stem.
    labels : (H, W) integer ndarray
        Class per pixel; written to ``<stem>.tif`` as a plain 2-D grayscale (minisblack) TIFF of uint8, or
        uint16 when a label exceeds 255.
    probabilities : (K, H, W) float ndarray, optional
        Written to ``<stem>_prob.tif`` as a K-page stack (axes CYX): float32 values in [0, 1] by default, or
        uint16 scaled by 65535 with ``probability_dtype="uint16"`` (a quarter of the size of float64, half of
        float32, opens in every viewer).
    image : (H, W[, C]) ndarray, optional
        The input image; if given, ``<stem>_overlay.png`` shows it percentile-stretched (1–99.8 %) in gray
        with the classes coloured semi-transparently (RGB, uint8).
    class_colors : sequence of (r, g, b) or None, optional
        Overlay colour of each class; ``None`` leaves a class transparent. Default
        :data:`DEFAULT_CLASS_COLORS`: background transparent, nucleus magenta, cytoplasm green.
    class_names : sequence of str, optional
        Names of the K classes, stored as channel names (OME metadata) of the probability stack.
    probability_dtype : {"float32", "uint16"}, optional

    Returns
    -------
    dict of str to Path
        ``"labels"`` and, when written, ``"probabilities"`` and ``"overlay"``. Every file is written atomically.
    """
    check_choice("probability_dtype", probability_dtype, ("float32", "uint16"))
    out_dir = Path(out_dir)
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "iu":
        raise OptionError(f"`labels` must be a 2-D integer array, got shape {labels.shape} and dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > 65535):
        raise OptionError(f"`labels` must lie in 0..65535, got {labels.min()}..{labels.max()}")
    top = int(labels.max()) if labels.size else 0
    stored_labels = labels.astype(np.uint8 if top <= 255 else np.uint16, copy=False)
    written = {"labels": write_tiff(out_dir / f"{stem}.tif", stored_labels)}

    if probabilities is not None:
        if probabilities.ndim != 3 or probabilities.shape[1:] != labels.shape:
            raise OptionError(
                f"`probabilities` must have shape (K, {labels.shape[0]}, {labels.shape[1]}), got {probabilities.shape}"
            )
        if class_names is not None and len(class_names) != probabilities.shape[0]:
            raise OptionError(f"`class_names` has {len(class_names)} names for {probabilities.shape[0]} classes")
        if probability_dtype == "uint16":
            stack = np.rint(np.clip(probabilities, 0.0, 1.0) * 65535.0).astype(np.uint16)
        else:
            stack = np.asarray(probabilities, dtype=np.float32)
        # write_tiff takes channels last and stores them as pages (CYX); moveaxis is a view, not a copy.
        written["probabilities"] = write_tiff(
            out_dir / f"{stem}_prob.tif", np.moveaxis(stack, 0, -1), channel_names=class_names
        )

    if image is not None:
        image = np.asarray(image)
        if image.shape[:2] != labels.shape:
            raise OptionError(f"`image` has shape {image.shape}, but `labels` has shape {labels.shape}")
        colors = DEFAULT_CLASS_COLORS if class_colors is None else class_colors
        if top >= len(colors):
            raise OptionError(f"`class_colors` has {len(colors)} colours, but labels go up to {top}")
        written["overlay"] = write_png(out_dir / f"{stem}_overlay.png", _overlay(image, labels, colors))
    return written


def overlay_step(height: int, width: int, max_side: int = OVERLAY_MAX_SIDE) -> int:
    """The preview keeps every ``step``-th row and column: the smallest step whose preview fits ``max_side``."""
    return max(1, -(-max(height, width) // max_side))


def check_band(labels: np.ndarray, start: int, next_row: int, shape: tuple[int, int], num_classes: int) -> np.ndarray:
    """``labels`` as an array, once it is checked to be the next band of rows of a band writer's image.

    Parameters
    ----------
    labels : (rows, W) integer array-like
    start : int
        The band's first row.
    next_row : int
        The row the writer expects next.
    shape : (H, W)
        The image's size.
    num_classes : int

    Raises
    ------
    OptionError
        If the band does not start at ``next_row``, does not fit the image, or holds values outside
        ``0 .. num_classes - 1``.
    """
    labels = np.asarray(labels)
    rows = labels.shape[0] if labels.ndim else 0
    if start != next_row or labels.ndim != 2 or labels.shape[1] != shape[1] or start + rows > shape[0]:
        raise OptionError(f"a band of labels of shape {labels.shape} at row {start} does not continue the "
                          f"{shape} image written up to row {next_row}")
    if labels.dtype.kind not in "iu" or (labels.size and (labels.min() < 0 or labels.max() >= num_classes)):
        raise OptionError(f"`labels` must be integers in 0..{num_classes - 1}")
    return labels


def check_cells(instances: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.dtype]:
    """Cell ids ``(H, W)`` checked against the image's ``shape``, and the dtype they are stored in: uint16, or
    uint32 beyond 65,535 cells (the ids are not converted here: a writer may convert them a piece at a time).

    Raises
    ------
    OptionError
        If ``instances`` are not integers of ``shape``.
    """
    instances = np.asarray(instances)
    if instances.shape != shape or instances.dtype.kind not in "iu":
        raise OptionError(f"`instances` must be integers of shape {shape}, got {instances.dtype} {instances.shape}")
    return instances, np.dtype(np.uint16 if int(instances.max(initial=0)) <= 65535 else np.uint32)


class OverlayPreview:
    """The overlay preview of an image written band by band: every ``step``-th row and column of the input
    (in gray) and of the labels are kept as the bands pass, and :meth:`write` draws them as ``path``.

    Shared by the band writers (:class:`SegmentationWriter`, the OME-Zarr writer), so every output format gets
    the same ``<stem>_overlay.png``.

    Parameters
    ----------
    path : Path
        The PNG to write.
    height, width : int
        Size of the image.
    colors : sequence of (r, g, b) or None
        Colour of each class (see :func:`write_segmentation`).
    max_side : int, optional
        Longest side of the preview (default :data:`OVERLAY_MAX_SIDE`).
    """

    def __init__(self, path: Path, height: int, width: int, colors: Sequence[tuple[int, int, int] | None],
                 max_side: int = OVERLAY_MAX_SIDE) -> None:
        self.path = path
        self.colors = colors
        self.step = overlay_step(height, width, max_side)
        self.gray: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []

    def add(self, start: int, labels: np.ndarray, image: np.ndarray | None) -> None:
        """Keep the preview's rows of a band: ``labels`` ``(rows, W)`` and ``image`` ``(rows, W[, C])`` from
        row ``start``."""
        if image is None or np.shape(image)[:2] != labels.shape:
            raise OptionError(f"`image` rows {start}..{start + labels.shape[0]} must have shape {labels.shape}[, C]")
        first = -start % self.step  # the first row of this band on the preview's grid
        # Copies: a strided view would keep the whole band alive, so every band would stay in memory.
        self.gray.append(np.array(to_grayscale(np.asarray(image)[first :: self.step, :: self.step])))
        self.labels.append(np.array(labels[first :: self.step, :: self.step]))

    def write(self) -> Path:
        """Draw the kept rows (:func:`write_segmentation`'s overlay) into ``path``, atomically."""
        return _write_preview_png(self.path, _overlay(np.concatenate(self.gray), np.concatenate(self.labels),
                                                      self.colors))


class SegmentationWriter:
    """Write ``<stem>.tif``, optionally ``<stem>_prob.tif``, and ``<stem>_overlay.png`` band by band, and
    ``<stem>_cells.tif`` from :meth:`add_cells`.

    The files are those of :func:`write_segmentation` (same names, dtypes, layouts and metadata), except that
    the overlay is a preview of at most ``overlay_max_side`` pixels on its longest side, and labels are uint16
    whenever ``num_classes`` > 256 (the value range is not known before the last band). Use as a context
    manager and call :meth:`add` for consecutive bands of rows; the files appear, each atomically, when the
    ``with`` block ends without an error, and not at all otherwise.

    Parameters
    ----------
    out_dir : str or Path
    stem : str
    height, width : int
        Size of the image.
    num_classes : int
    probabilities : bool, default False
        Also write the float32 probability stack (OME channel names from ``class_names``).
    overlay : bool, default True
        Write the overlay preview; :meth:`add` then needs the band's ``image`` rows.
    class_colors, class_names
        As :func:`write_segmentation`.
    overlay_max_side : int, optional
        Longest side of the preview (default :data:`OVERLAY_MAX_SIDE`).
    """

    def __init__(self, out_dir: str | Path, stem: str, height: int, width: int, num_classes: int, *,
                 probabilities: bool = False, overlay: bool = True,
                 class_colors: Sequence[tuple[int, int, int] | None] | None = None,
                 class_names: Sequence[str] | None = None, overlay_max_side: int = OVERLAY_MAX_SIDE) -> None:
        out_dir = Path(out_dir)
        if class_names is not None and len(class_names) != num_classes:
            raise OptionError(f"`class_names` has {len(class_names)} names for {num_classes} classes")
        self.colors = DEFAULT_CLASS_COLORS if class_colors is None else class_colors
        if overlay and num_classes > len(self.colors):
            raise OptionError(f"`class_colors` has {len(self.colors)} colours for {num_classes} classes")
        self.shape = (height, width)
        self.num_classes = num_classes
        self.label_dtype = np.dtype(np.uint8 if num_classes <= 256 else np.uint16)
        self.overlay = overlay
        self.paths = {"labels": out_dir / f"{stem}.tif"}
        self._stack = contextlib.ExitStack()
        try:
            self._tmp = {"labels": self._stack.enter_context(atomic_path(self.paths["labels"]))}
            self._offsets = {"labels": self._create(self._tmp["labels"], (height, width), self.label_dtype, None)}
            if probabilities:
                self.paths["probabilities"] = out_dir / f"{stem}_prob.tif"
                self._tmp["probabilities"] = self._stack.enter_context(atomic_path(self.paths["probabilities"]))
                self._offsets["probabilities"] = self._create(
                    self._tmp["probabilities"], (num_classes, height, width), np.dtype(np.float32), class_names)
        except BaseException as exc:
            # No ``with`` block runs yet: hand the error to atomic_path here, so the temporary files go and a
            # full disk is reported as such.
            if not self._stack.__exit__(type(exc), exc, exc.__traceback__):
                raise
        self.preview = OverlayPreview(out_dir / f"{stem}_overlay.png", height, width, self.colors,
                                      overlay_max_side)
        if overlay:
            self.paths["overlay"] = self.preview.path
        self._next_row = 0

    @staticmethod
    def _create(path: Path, shape: tuple[int, ...], dtype: np.dtype, names: Sequence[str] | None) -> int:
        """Create an uncompressed contiguous TIFF of ``shape`` and return the byte offset of its pixels."""
        ome = names is not None
        metadata = {"axes": "CYX", "Channel": {"Name": list(names)}} if names is not None else None
        mapped = tifffile.memmap(path, shape=shape, dtype=dtype, photometric="minisblack", ome=ome,
                                 metadata=metadata)
        offset = int(mapped.offset)
        del mapped  # unmapped at once: bands are written through maps of their own rows
        with open(path, "r+b") as handle:  # the pixels' blocks now: a full disk is an error here, not a SIGBUS
            reserve(handle.fileno(), offset + int(np.prod(shape)) * dtype.itemsize)
        return offset

    def _write_rows(self, name: str, start: int, rows: np.ndarray, planes: int | None) -> None:
        height, width = self.shape
        if planes is None:
            offset = self._offsets[name] + start * width * rows.itemsize
            target = np.memmap(self._tmp[name], mode="r+", dtype=rows.dtype, offset=offset, shape=rows.shape)
            target[...] = rows
            target.flush()
            del target
            return
        for k in range(planes):  # one page per class, so each band is K runs of rows
            offset = self._offsets[name] + (k * height + start) * width * rows.itemsize
            target = np.memmap(self._tmp[name], mode="r+", dtype=rows.dtype, offset=offset, shape=rows.shape[1:])
            target[...] = rows[k]
            target.flush()
            del target

    def add(self, start: int, labels: np.ndarray, probabilities: np.ndarray | None = None,
            image: np.ndarray | None = None) -> None:
        """Write rows ``start .. start + len(labels)``: ``labels`` ``(rows, W)`` integers, ``probabilities``
        ``(K, rows, W)`` (when written) and ``image`` ``(rows, W[, C])``, the input rows (for the overlay).

        Raises
        ------
        OptionError
            If bands are not consecutive, or their shapes or values do not fit the image.
        """
        labels = check_band(labels, start, self._next_row, self.shape, self.num_classes)
        rows = labels.shape[0]
        self._write_rows("labels", start, labels.astype(self.label_dtype, copy=False), None)
        if "probabilities" in self.paths:
            if probabilities is None or probabilities.shape != (self.num_classes, rows, self.shape[1]):
                raise OptionError(f"`probabilities` of rows {start}..{start + rows} must have shape "
                                  f"{(self.num_classes, rows, self.shape[1])}")
            self._write_rows("probabilities", start, np.asarray(probabilities, dtype=np.float32), self.num_classes)
        if self.overlay:
            self.preview.add(start, labels, image)
        self._next_row = start + rows

    def add_cells(self, instances: np.ndarray) -> None:
        """Write ``<stem>_cells.tif``: cell ids ``(H, W)`` (uint16, or uint32 beyond 65,535 cells), appearing
        with the other files when the ``with`` block ends without an error."""
        instances, dtype = check_cells(instances, self.shape)
        self.paths["cells"] = self.paths["labels"].with_name(self.paths["labels"].stem + "_cells.tif")
        tmp = self._stack.enter_context(atomic_path(self.paths["cells"]))
        write_tiff(tmp, instances.astype(dtype, copy=False))

    def __enter__(self) -> SegmentationWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if kind is not None:  # the error reaches atomic_path: temporary files are removed, nothing appears
            self._stack.__exit__(kind, value, traceback)
            return
        with self._stack:  # a problem here also reaches atomic_path, so no file appears
            if self._next_row != self.shape[0]:
                raise OptionError(f"only rows 0..{self._next_row} of {self.shape[0]} were written")
            if self.overlay:
                self.preview.write()


def _write_preview_png(path: Path, rgb: np.ndarray) -> Path:
    """An 8-bit RGB PNG at zlib level 1: a quick look need not be small, and level 6 (the default) spends
    seconds on a few megapixels. Same pixels as :func:`~cytolens.data.io.write_png`."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(rgb, mode="RGB").save(tmp, format="PNG", compress_level=1)
    return path
