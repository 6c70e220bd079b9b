"""Writing segmentations that other tools open: integer label TIFFs (Fiji, napari), probability stacks and
colour overlays for a quick look. Every file is written atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cytolens.core.errors import OptionError, check_choice
from cytolens.data.io import normalize_intensity, to_grayscale, write_png, write_tiff

__all__ = ["DEFAULT_CLASS_COLORS", "write_segmentation"]

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
