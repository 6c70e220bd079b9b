"""Evaluation figures: confusion matrix, reliability diagram, learning curves, accuracy with intervals.

Each function writes one PNG atomically (see :func:`cytolens.core.atomic.atomic_path`), closes its figure and
returns the written path. Inputs come from :mod:`cytolens.evaluation.stats` or from a training history table.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cytolens.core.errors import OptionError
from cytolens.report.figures import new_figure, save_figure

__all__ = ["plot_accuracy_table", "plot_confusion_matrix", "plot_learning_curves", "plot_reliability_diagram"]

HISTORY_COLUMNS = ("fold", "epoch", "train_loss", "val_loss", "train_accuracy", "val_accuracy")
TABLE_COLUMNS = ("task", "method", "accuracy", "ci_low", "ci_high")


def _save(fig: Figure, out_path: str | Path) -> Path:
    return save_figure(fig, out_path, dpi=110)


def _require_columns(table: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise OptionError(f"`{name}` is missing columns {missing}; it has {list(table.columns)}")
    if table.empty:
        raise OptionError(f"`{name}` has no rows")


def plot_confusion_matrix(
    matrix: Any,
    class_names: Sequence[str],
    out_path: str | Path,
    *,
    title: str | None = None,
    normalize: bool = False,
) -> Path:
    """Save a confusion matrix as an annotated heatmap.

    Parameters
    ----------
    matrix : (K, K) array-like of int
        Counts with rows = true class, columns = predicted class (see :func:`cytolens.evaluation.stats.confusion_matrix`).
    class_names : sequence of str
        K names, used for both axes.
    out_path : str or Path
        PNG file to write.
    title : str, optional
        Axes title.
    normalize : bool, default False
        Colour by the fraction of each true class (row percentages, printed under the counts) instead of by
        raw counts. Rows with no items stay at 0 %.

    Returns
    -------
    Path
        The written file.
    """
    counts = np.asarray(matrix)
    names = [str(name) for name in class_names]
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(names):
        raise OptionError(f"`matrix` must be square with one row per class name, got {counts.shape}, {len(names)}")
    row_totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, row_totals, out=np.zeros(counts.shape, dtype=float), where=row_totals > 0)
    shown = fractions if normalize else counts.astype(float)
    vmax = 1.0 if normalize else max(float(shown.max()), 1.0)

    size = 1.2 + 0.9 * len(names)
    fig, ax = new_figure(figsize=(size + 1.2, size), constrained_layout=True)
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=vmax)
    fig.colorbar(image, ax=ax, label="fraction of true class" if normalize else "count", shrink=0.8)
    for i in range(len(names)):
        for j in range(len(names)):
            text = f"{counts[i, j]:d}\n({100 * fractions[i, j]:.0f}%)" if normalize else f"{counts[i, j]:d}"
            dark = shown[i, j] > 0.6 * vmax  # white text on dark cells for contrast
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color="white" if dark else "black")
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, names)
    ax.set_yticks(ticks, names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if title:
        ax.set_title(title)
    return _save(fig, out_path)


def plot_reliability_diagram(
    curve: pd.DataFrame,
    out_path: str | Path,
    *,
    ece: float | None = None,
    title: str | None = None,
) -> Path:
    """Save a reliability diagram: accuracy per confidence bin against the diagonal, with bin counts below.

    Parameters
    ----------
    curve : pandas.DataFrame
        Output of :func:`cytolens.evaluation.calibration.reliability_curve` (columns ``bin_lower``, ``bin_upper``, ``count``,
        ``mean_confidence``, ``accuracy``).
    out_path : str or Path
        PNG file to write.
    ece : float, optional
        Expected calibration error, printed in the legend.
    title : str, optional
        Figure title.

    Returns
    -------
    Path
        The written file.
    """
    _require_columns(curve, ("bin_lower", "bin_upper", "count", "mean_confidence", "accuracy"), "curve")
    lower = curve["bin_lower"].to_numpy(dtype=float)
    width = curve["bin_upper"].to_numpy(dtype=float) - lower
    filled = curve["count"].to_numpy() > 0

    fig, (top, bottom) = new_figure(
        2, 1, figsize=(4.8, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}, constrained_layout=True
    )
    top.plot([0, 1], [0, 1], linestyle="--", color="0.5", linewidth=1, label="perfect calibration")
    top.bar(
        lower[filled], curve["accuracy"].to_numpy(dtype=float)[filled], width=width[filled], align="edge",
        color="C0", edgecolor="black", linewidth=0.6, label="accuracy",
    )  # fmt: skip
    top.plot(
        curve["mean_confidence"].to_numpy(dtype=float)[filled], curve["accuracy"].to_numpy(dtype=float)[filled],
        "o", color="C3", markersize=3, label="mean confidence",
    )  # fmt: skip
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize=8, title=None if ece is None else f"ECE = {ece:.3f}", title_fontsize=8)
    bottom.bar(lower, curve["count"].to_numpy(), width=width, align="edge", color="0.6", edgecolor="black",
               linewidth=0.4)  # fmt: skip
    bottom.set_xlabel("confidence (top-label probability)")
    bottom.set_ylabel("count")
    if title:
        fig.suptitle(title)
    return _save(fig, out_path)


def plot_learning_curves(history: pd.DataFrame, out_path: str | Path, *, title: str | None = None) -> Path:
    """Save loss and accuracy per epoch: one thin line per fold, the mean over folds in bold.

    Parameters
    ----------
    history : pandas.DataFrame
        One row per fold and epoch with columns ``fold``, ``epoch``, ``train_loss``, ``val_loss``,
        ``train_accuracy`` and ``val_accuracy``. Folds may have different numbers of epochs (early stopping);
        the mean at an epoch is over the folds that reached it.
    out_path : str or Path
        PNG file to write.
    title : str, optional
        Figure title.

    Returns
    -------
    Path
        The written file.
    """
    _require_columns(history, HISTORY_COLUMNS, "history")
    folds = list(pd.unique(history["fold"]))
    fig, axes = new_figure(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for split, colour in (("train", "C0"), ("val", "C1")):
            column = f"{split}_{metric}"
            if len(folds) > 1:
                for fold in folds:
                    rows = history[history["fold"] == fold].sort_values("epoch")
                    ax.plot(rows["epoch"], rows[column], color=colour, linewidth=0.7, alpha=0.45)
            mean = history.groupby("epoch")[column].mean().sort_index()
            label = f"{split} (mean of {len(folds)} folds)" if len(folds) > 1 else split
            ax.plot(mean.index, mean.to_numpy(), color=colour, linewidth=2.2, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, out_path)


def plot_accuracy_table(
    table: pd.DataFrame,
    out_path: str | Path,
    *,
    title: str | None = None,
    ylabel: str = "accuracy",
) -> Path:
    """Save a grouped bar chart of accuracy with interval error bars, one group per task.

    Parameters
    ----------
    table : pandas.DataFrame
        Long table with columns ``task``, ``method``, ``accuracy``, ``ci_low``, ``ci_high`` (one row per task
        and method; e.g. Wilson intervals from :func:`cytolens.evaluation.stats.proportion_interval`). Tasks and methods
        keep their order of first appearance; a missing (task, method) pair leaves a gap.
    out_path : str or Path
        PNG file to write.
    title : str, optional
        Axes title.
    ylabel : str, default "accuracy"
        Label of the y axis (the values are plotted as given, fractions or percentages).

    Returns
    -------
    Path
        The written file.
    """
    _require_columns(table, TABLE_COLUMNS, "table")
    if table.duplicated(["task", "method"]).any():
        raise OptionError("`table` has more than one row for some (task, method) pair")
    values = table[["accuracy", "ci_low", "ci_high"]].to_numpy(dtype=float)
    if not ((values[:, 1] <= values[:, 0]) & (values[:, 0] <= values[:, 2])).all():
        raise OptionError("`table` must satisfy ci_low <= accuracy <= ci_high on every row")
    tasks, methods = list(pd.unique(table["task"])), list(pd.unique(table["method"]))
    width = 0.8 / len(methods)
    positions = np.arange(len(tasks))
    fig, ax = new_figure(figsize=(max(5.0, 1.1 * len(tasks) * max(len(methods), 2) * 0.6), 4), layout="constrained")
    for k, method in enumerate(methods):
        rows = table[table["method"] == method].set_index("task").reindex(tasks)
        accuracy = rows["accuracy"].to_numpy(dtype=float)
        errors = np.vstack([accuracy - rows["ci_low"].to_numpy(dtype=float),
                            rows["ci_high"].to_numpy(dtype=float) - accuracy])  # fmt: skip
        ax.bar(positions - 0.4 + width * (k + 0.5), accuracy, width=width, yerr=errors, capsize=2,
               color=f"C{k % 10}", edgecolor="black", linewidth=0.5, label=str(method))  # fmt: skip
    ax.set_xticks(positions, [str(task) for task in tasks])
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=min(len(methods), 3))
    if title:
        ax.set_title(title)
    return _save(fig, out_path)
