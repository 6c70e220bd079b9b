"""From image files to network input: grayscale, resize, optional sharpening, intensity scaling.

The same :func:`preprocess_image` runs in training, evaluation and ``classify predict``, so a trained run
sees new images exactly as it saw its training data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from cytolens.classify.config import ClassifyConfig, SharpenConfig
from cytolens.data.intensity import IntensityConfig
from cytolens.core.errors import OptionError
from cytolens.data.io import normalize_intensity, read_image
from cytolens.data.transforms import resize, rotate90, sharpen, unsharp_mask


def slug(text: str) -> str:
    """A file-name-safe form of a task or method name (``"0 vs 0.1"`` → ``"0_vs_0.1"``, ``"CNN+T"`` → ``"CNNpT"``)."""
    return text.replace(" ", "_").replace("/", "-").replace("+", "p")


@dataclass(frozen=True)
class Task:
    """One classification task: a name and the classes it separates (in label order)."""

    name: str
    classes: tuple[str, ...]

    @property
    def slug(self) -> str:
        """A file-name-safe form of the name (``"0 vs 0.1"`` → ``"0_vs_0.1"``)."""
        return slug(self.name)


def build_tasks(classes: Sequence[str], requested: Sequence[str]) -> list[Task]:
    """Expand task requests into tasks.

    Parameters
    ----------
    classes : sequence of str
        The dataset's classes in label order.
    requested : sequence of str
        ``"all"`` (one task over every class, named ``"<K> classes"``), ``"pairwise"`` (one task per pair,
        named ``"<a> vs <b>"``) or explicit names such as ``"0 vs 1"``.

    Returns
    -------
    list of Task
        In request order, without duplicates.
    """
    if len(classes) < 2:
        raise OptionError(f"classification needs at least 2 classes, got {list(classes)}")
    tasks: list[Task] = []
    pairs = [Task(f"{a} vs {b}", (a, b)) for a, b in combinations(classes, 2)]
    for request in requested:
        if request == "all":
            new = [Task(f"{len(classes)} classes", tuple(classes))]
        elif request == "pairwise":
            new = pairs if len(classes) > 2 else []
        else:
            parts = [p.strip() for p in request.split(" vs ")]
            if len(parts) != 2 or any(p not in classes for p in parts) or parts[0] == parts[1]:
                valid = ", ".join(["all", "pairwise", *(t.name for t in pairs)])
                raise OptionError(f"unknown task {request!r}; valid: {valid}")
            ordered = tuple(c for c in classes if c in parts)
            new = [Task(f"{ordered[0]} vs {ordered[1]}", ordered)]
        tasks.extend(t for t in new if t not in tasks)
    return tasks


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
