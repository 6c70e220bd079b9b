"""From image files to network input: grayscale, resize, optional sharpening, intensity scaling.

The same :func:`preprocess_image` runs in training, evaluation and ``classify predict``, so a trained run
sees new images exactly as it saw its training data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from cytolens.classify.config import ClassifyConfig, SharpenConfig
from cytolens.data.intensity import IntensityConfig
from cytolens.data.io import normalize_intensity, read_image
from cytolens.data.transforms import resize, rotate90, sharpen, unsharp_mask


def preprocess_image(
    image: np.ndarray,
    *,
    input_size: int,
    intensity: IntensityConfig,
    sharpening: SharpenConfig | None = None,
) -> np.ndarray:
    """Turn one raw image into a ``(input_size, input_size)`` float32 network input in ``[0, 1]``.

    Parameters
    ----------
    image : (H, W) or (H, W, C) ndarray
        Any dtype; multi-channel images are reduced to grayscale.
    input_size : int
        Side of the square network input; anti-aliased resizing.
    intensity : IntensityConfig
        How intensities are scaled to ``[0, 1]``.
    sharpening : SharpenConfig, optional
        Sharpen after resizing (the +S variant), in the image's own dtype so 16-bit data is not clipped.

    Returns
    -------
    (input_size, input_size) ndarray of float32
    """
    from cytolens.data.io import to_grayscale

    gray = to_grayscale(image)
    small = resize(gray, input_size)
    if sharpening is not None:
        # Sharpen at the network's scale: the kernel should accent lines as wide as the network sees them.
        if sharpening.filter == "sharpen":
            small = sharpen(small)
        else:
            small = unsharp_mask(
                small, radius=sharpening.radius, percent=sharpening.percent, threshold=sharpening.threshold
            )
    return normalize_intensity(
        small, method=intensity.method, bit_depth=intensity.bit_depth, percentiles=intensity.percentiles
    )


def load_inputs(
    paths: Sequence[str],
    config: ClassifyConfig,
    *,
    sharpened: bool,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Read and preprocess images into an ``(N, 1, S, S)`` float32 array.

    Parameters
    ----------
    paths : sequence of str
        Image files.
    config : ClassifyConfig
        Input size, intensity scaling and the sharpening filter.
    sharpened : bool
        Apply the +S variant's sharpening.
    progress : callable, optional
        Called with 1 per image.
    """
    out = np.empty((len(paths), 1, config.input_size, config.input_size), dtype=np.float32)
    for i, path in enumerate(paths):
        out[i, 0] = preprocess_image(
            read_image(path, grayscale=True),
            input_size=config.input_size,
            intensity=config.intensity,
            sharpening=config.sharpen if sharpened else None,
        )
        if progress is not None:
            progress(1)
    return out


def add_rotations(
    inputs: np.ndarray, labels: np.ndarray, angles: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Append clockwise-rotated copies of every input (the +T variant; training data only).

    Parameters
    ----------
    inputs : (N, C, S, S) ndarray
    labels : (N,) ndarray
    angles : sequence of int
        Multiples of 90 degrees (the paper: 90, 180, 270).

    Returns
    -------
    inputs : (N * (1 + len(angles)), C, S, S) ndarray
    labels : (N * (1 + len(angles)),) ndarray
    source : (N * (1 + len(angles)),) ndarray of int
        Index of the original each row came from, so copies can be traced to their group.
    """
    copies = [inputs]
    for angle in angles:
        # rotate90 works on (H, W[, C]); move channels last and back.
        rotated = np.stack([np.moveaxis(rotate90(np.moveaxis(x, 0, -1), angle // 90), -1, 0) for x in inputs])
        copies.append(rotated)
    n = len(inputs)
    source = np.tile(np.arange(n), len(copies))
    return np.concatenate(copies), np.tile(labels, len(copies)), source
