"""Figures shared by the commands, written atomically and drawn without pyplot.

Figures are :class:`matplotlib.figure.Figure` objects on an Agg canvas (:func:`new_figure`): importing cytolens
never switches the backend of a notebook user's pyplot, and nothing is registered with pyplot's figure manager,
so nothing needs closing and nothing leaks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import io

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cytolens.core.atomic import atomic_path
from cytolens.data.io import normalize_intensity, read_image, to_grayscale

#: Keyword arguments of :func:`new_figure` that belong to the figure, not to its grid of axes.
_FIGURE_OPTIONS = ("figsize", "dpi", "layout", "constrained_layout", "facecolor")


def new_figure(nrows: int = 1, ncols: int = 1, **options: Any) -> tuple[Figure, Any]:
    """A figure and its axes, like ``pyplot.subplots`` but outside pyplot (see the module docstring).

    Parameters
    ----------
    nrows, ncols : int, default 1
        The grid of axes; ``nrows=0`` gives a figure without axes (``axes`` is None).
    **options
        ``figsize``, ``dpi``, ``layout``, ``constrained_layout`` and ``facecolor`` go to the figure; the rest
        (``squeeze``, ``sharex``, ``gridspec_kw``, ...) to :meth:`matplotlib.figure.Figure.subplots`.

    Returns
    -------
    (Figure, Axes or ndarray of Axes or None)
    """
    figure_options = {key: options.pop(key) for key in _FIGURE_OPTIONS if key in options}
    fig = Figure(**figure_options)
    FigureCanvasAgg(fig)  # attaches itself to the figure: savefig renders with Agg, whatever pyplot's backend
    axes = fig.subplots(nrows, ncols, **options) if nrows else None
    return fig, axes


def figure_png(fig: Figure, *, dpi: int = 110, **savefig_options: Any) -> bytes:
    """The figure as PNG bytes (for a report that embeds it without writing a file)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, **savefig_options)
    return buffer.getvalue()


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


def class_montage_figure(
    samples: pd.DataFrame,
    classes: Sequence[str],
    *,
    per_class: int = 4,
    seed: int = 0,
    title: str | None = None,
    row_label: str = "class {name}",
) -> Figure:
    """A grid of example images, one row per class.

    Parameters
    ----------
    samples : pandas.DataFrame
        A manifest (columns ``path`` and ``class``).
    classes : sequence of str
        Rows, in this order.
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
    matplotlib.figure.Figure
    """
    rng = np.random.default_rng(seed)
    fig, axes = new_figure(
        len(classes), per_class, figsize=(2.2 * per_class, 2.3 * len(classes)), squeeze=False, constrained_layout=True
    )
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
    return fig


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
    """Save :func:`class_montage_figure` as a PNG (atomically) and return its path; the options are the same."""
    fig = class_montage_figure(samples, classes, per_class=per_class, seed=seed, title=title, row_label=row_label)
    return save_figure(fig, out_path, dpi=110)
