"""Figures shared by the commands. Matplotlib runs headless (Agg); every figure is written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cytolens.core.atomic import atomic_path  # noqa: E402
from cytolens.data.io import normalize_intensity, read_image, to_grayscale  # noqa: E402


def save_figure(fig: Any, path: str | Path, *, dpi: int = 110, **savefig_options: Any) -> Path:
    """Write a matplotlib figure as PNG atomically (the caller still owns and closes ``fig``)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, **savefig_options)
    return path


def display_image(image: np.ndarray, *, percentiles: tuple[float, float] = (0.5, 99.8)) -> np.ndarray:
    """Stretch an image for display: grayscale float in ``[0, 1]`` by per-image percentiles.

    Parameters
    ----------
    image : (H, W) or (H, W, C) ndarray
        Any dtype; multi-channel images are shown as the mean of their channels.
    percentiles : (float, float)
        Intensities mapped to black and white.
    """
    return normalize_intensity(to_grayscale(image), method="percentile", percentiles=percentiles)


def class_montage(
    samples: pd.DataFrame,
    classes: Sequence[str],
    out_path: str | Path,
    *,
    per_class: int = 4,
    seed: int = 0,
    title: str | None = None,
    row_label: str = "class {name}",
) -> Path:
    """Save a grid of example images, one row per class.

    Parameters
    ----------
    samples : pandas.DataFrame
        A manifest (columns ``path`` and ``class``).
    classes : sequence of str
        Rows, in this order.
    out_path : str or Path
        PNG file to write.
    per_class : int, default 4
        Images per row, drawn at random (seeded) from each class.
    seed : int, default 0
        Which images are drawn.
    title : str, optional
        Figure title.
    row_label : str, default "class {name}"
        Format of each row's label.

    Returns
    -------
    Path
        The written file.
    """
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(
        len(classes), per_class, figsize=(2.2 * per_class, 2.3 * len(classes)), squeeze=False, constrained_layout=True
    )
    out_path = Path(out_path)
    try:  # a bad image must not leave the figure open
        for row, name in enumerate(classes):
            paths = samples.loc[samples["class"] == name, "path"].to_numpy()
            chosen = rng.choice(paths, size=min(per_class, len(paths)), replace=False) if len(paths) else []
            for col in range(per_class):
                ax = axes[row, col]
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if col < len(chosen):
                    ax.imshow(display_image(read_image(chosen[col], grayscale=True)), cmap="gray", vmin=0, vmax=1)
                    ax.set_title(Path(chosen[col]).name, fontsize=7)
                if col == 0:
                    ax.set_ylabel(row_label.format(name=name), fontsize=10)
        if title:
            fig.suptitle(title)
        save_figure(fig, out_path, dpi=110)
    finally:
        plt.close(fig)
    return out_path
