"""Training curves of segmentation runs side by side, against the number of training patches seen.

Runs with different schedules (patches per epoch, time budgets) compare fairly only on a common axis: the
number of patches a network has trained on. :func:`training_curves` reads every trained fold's
``folds/fold<k>/history.csv`` and :func:`plot_training_curves` draws training loss and validation mean dice.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from cytolens.core.atomic import atomic_path
from cytolens.core.errors import LayoutError
from cytolens.report.figures import new_figure, save_figure


def training_curves(runs: Mapping[str, str | Path]) -> pd.DataFrame:
    """One row per run, fold and epoch: ``run``, ``fold``, ``epoch``, ``patches``, ``train_loss``,
    ``val_mean_dice`` (NaN where the epoch was not validated) and ``hours`` (cumulative training time).

    Parameters
    ----------
    runs : mapping of str to path
        A label for each run folder written by ``cytolens segment train``.

    Raises
    ------
    CytolensError
        If a folder is not a segmentation run (:func:`cytolens.engine.load_run`).
    LayoutError
        If a folder has no trained fold yet.
    """
    from cytolens.engine import load_run
    from cytolens.segment.config import SegmentConfig

    tables = []
    for label, folder in runs.items():
        # The config, not a finished fold, is all a curve needs: a run still training can be watched.
        config = load_run(folder, "segment", SegmentConfig).config
        histories = sorted(Path(folder).glob("folds/fold*/history.csv"))
        if not histories:
            raise LayoutError(f"{folder}: no folds/fold<k>/history.csv yet (has training started?)")
        for path in histories:
            history = pd.read_csv(path)
            history.insert(0, "fold", int(path.parent.name.removeprefix("fold")))
            history.insert(0, "run", label)
            history["patches"] = history["epoch"] * config.patches_per_epoch
            history["hours"] = history["seconds"].cumsum() / 3600.0
            tables.append(history[["run", "fold", "epoch", "patches", "train_loss", "val_mean_dice", "hours"]])
    return pd.concat(tables, ignore_index=True)


def draw_training_curves(curves: pd.DataFrame, *, title: str | None = None) -> Figure:
    """Training loss and validation mean dice against patches seen, one colour per run (fold 0 solid, others dotted).

    Parameters
    ----------
    curves : pandas.DataFrame
        The table of :func:`training_curves`.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        Drawn outside pyplot, so the caller saves or embeds it.
    """
    fig, (loss_ax, dice_ax) = new_figure(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for i, (label, rows) in enumerate(curves.groupby("run", sort=False)):
        for fold, fold_rows in rows.groupby("fold"):
            style = "-" if fold == rows["fold"].min() else ":"
            name = label if style == "-" else None
            loss_ax.plot(fold_rows["patches"], fold_rows["train_loss"], style, color=f"C{i}", label=name)
            validated = fold_rows.dropna(subset=["val_mean_dice"])
            dice_ax.plot(validated["patches"], validated["val_mean_dice"], style, marker="o", color=f"C{i}",
                         label=name)
    loss_ax.set_ylabel("training cross-entropy")
    dice_ax.set_ylabel("validation mean dice")
    for ax in (loss_ax, dice_ax):
        ax.set_xlabel("training patches seen")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def plot_training_curves(curves: pd.DataFrame, out_path: str | Path, *, title: str | None = None) -> Path:
    """Write :func:`draw_training_curves` as a PNG (atomically) and the table beside it as CSV.

    Parameters
    ----------
    curves : pandas.DataFrame
        The table of :func:`training_curves`.
    out_path : str or Path
        PNG file to write; the table goes to the same name with ``.csv``.
    title : str, optional
        Figure title.

    Returns
    -------
    Path
        The PNG written.
    """
    out_path = Path(out_path)
    with atomic_path(out_path.with_suffix(".csv")) as tmp:
        curves.to_csv(tmp, index=False)
    save_figure(draw_training_curves(curves, title=title), out_path, dpi=120)
    return out_path
