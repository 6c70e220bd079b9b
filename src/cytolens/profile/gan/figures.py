"""Figures of GAN runs: sample grids, loss curves, and labelled image strips (interpolation, vector algebra)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cytolens.data.io import write_png
from cytolens.report.figures import new_figure, save_figure

__all__ = ["image_grid", "plot_gan_losses", "plot_image_strips", "save_image_grid"]


def image_grid(images: np.ndarray, *, columns: int | None = None, gap: int = 2) -> np.ndarray:
    """Tile ``images`` (n, S, S, 3) in [0, 1] into one uint8 RGB image, row by row, with white gaps.

    ``columns`` defaults to the ceiling of √n (a square-ish grid).
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"`images` must have shape (n, S, S, C) with n >= 1, got {images.shape}")
    n, height, width, channels = images.shape
    columns = int(columns or int(np.ceil(np.sqrt(n))))
    rows = -(-n // columns)
    grid = np.ones((rows * height + (rows - 1) * gap, columns * width + (columns - 1) * gap, channels), np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * (height + gap) : r * (height + gap) + height, c * (width + gap) : c * (width + gap) + width] = image
    return np.round(np.clip(grid, 0.0, 1.0) * 255).astype(np.uint8)


def save_image_grid(images: np.ndarray, path: str | Path, *, columns: int | None = None) -> Path:
    """Write :func:`image_grid` of ``images`` as a PNG (atomically); pixels are the crops' own, unstretched."""
    return write_png(path, image_grid(images, columns=columns))


def plot_gan_losses(history: pd.DataFrame, path: str | Path, *, title: str | None = None) -> Path:
    """Loss curves of a GAN run: D and G losses, the discriminator's mean outputs, seconds per step.

    ``history`` has one row per logged step with columns ``step``, ``d_loss``, ``g_loss``, ``d_real``,
    ``d_fake`` and ``seconds_per_step`` (``wasserstein`` and ``gradient_penalty`` for WGAN-GP, when present).
    """

    fig, axes = new_figure(1, 3, figsize=(14, 3.8), constrained_layout=True)
    steps = history["step"]
    axes[0].plot(steps, history["d_loss"], label="discriminator")
    axes[0].plot(steps, history["g_loss"], label="generator")
    axes[0].set_ylabel("loss")
    second = ("d_real", "d_fake") + (("wasserstein",) if "wasserstein" in history else ())
    for column in second:
        if column in history and history[column].notna().any():
            axes[1].plot(steps, history[column], label=column.replace("_", " "))
    axes[1].set_ylabel("discriminator output (mean)")
    axes[2].plot(steps, history["seconds_per_step"], color="C3")
    axes[2].set_ylabel("seconds per step")
    axes[2].set_ylim(bottom=0)
    for ax in axes:
        ax.set_xlabel("generator step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    path = Path(path)
    save_figure(fig, path, dpi=110)
    return path


def plot_image_strips(
    strips: Sequence[np.ndarray],
    path: str | Path,
    *,
    column_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    cell_labels: Sequence[Sequence[str]] | None = None,
    title: str | None = None,
) -> Path:
    """Rows of images, each (k, S, S, 3) in [0, 1], with optional column, row and per-image labels.

    The images are tiled into one picture drawn in a single axes (one matplotlib axes per image is ~50 times
    slower to lay out); labels are text around and below the tiles.
    """

    rows, columns = len(strips), max(len(s) for s in strips)
    size = int(strips[0].shape[1])
    gap_x, gap_y = 4, 16 if cell_labels is not None else 4
    height, width = rows * (size + gap_y), columns * (size + gap_x) - gap_x
    canvas = np.ones((height, width, 3), np.float32)
    for r, strip in enumerate(strips):
        for c, image in enumerate(strip):
            y, x = r * (size + gap_y), c * (size + gap_x)
            canvas[y : y + size, x : x + size] = np.clip(image[..., :3], 0, 1)
    scale = 1.45 / size  # inches per pixel: a 96-px cell is 1.45 in wide
    left = 1.1 if row_labels is not None else 0.15
    top = 0.55 + (0.25 if column_labels is not None else 0.0)
    fig, _ = new_figure(0, figsize=(width * scale + left + 0.15, height * scale + top + 0.1))
    fig_w, fig_h = fig.get_size_inches()
    ax = fig.add_axes((left / fig_w, 0.1 / fig_h, width * scale / fig_w, height * scale / fig_h))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    for c in range(columns):
        centre = c * (size + gap_x) + size / 2
        if column_labels is not None and c < len(column_labels):
            ax.text(centre, -4, column_labels[c], ha="center", va="bottom", fontsize=8)
    for r in range(rows):
        y = r * (size + gap_y)
        if row_labels is not None:
            ax.text(-6, y + size / 2, row_labels[r], ha="right", va="center", fontsize=8)
        if cell_labels is not None:
            for c, text in enumerate(cell_labels[r]):
                ax.text(c * (size + gap_x) + size / 2, y + size + 2, text, ha="center", va="top", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.08 / fig_h, va="top")
    path = Path(path)
    save_figure(fig, path, dpi=100)
    return path
