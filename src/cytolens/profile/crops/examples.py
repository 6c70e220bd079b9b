"""A figure of example single-cell crops: one row per MOA (DMSO first), crops shown as RGB (DNA, tubulin, actin)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cytolens.profile.crops.cell_store import CellStore
from cytolens.report.figures import new_figure, save_figure

CONTROL = "DMSO"


def pick_examples(index: pd.DataFrame, *, per_moa: int = 8, seed: int = 0, strongest: bool = True
                  ) -> dict[str, list[int]]:
    """Rows of ``index`` to show for each MOA, DMSO first, then the MOAs in alphabetical order.

    With ``strongest``, treated cells are drawn from each compound's highest concentration, where a phenotype is
    most frequent (many cells of weaker treatments look like DMSO). Cells without an MOA are left out.
    """
    rng = np.random.default_rng(seed)
    table = index.reset_index(drop=True)
    moa = table["Metadata_MOA"]
    labelled = table[moa.notna() & (moa.astype(str) != "")]
    if strongest:
        top = labelled.groupby("Metadata_Compound")["Metadata_Concentration"].transform("max")
        labelled = labelled[(labelled["Metadata_Concentration"] == top) | (labelled["Metadata_MOA"] == CONTROL)]
    names = sorted(set(labelled["Metadata_MOA"].astype(str)) - {CONTROL})
    order = ([CONTROL] if (labelled["Metadata_MOA"] == CONTROL).any() else []) + names
    picks = {}
    for name in order:
        rows = labelled.index[labelled["Metadata_MOA"] == name].to_numpy()
        picks[name] = sorted(rng.choice(rows, size=min(per_moa, rows.size), replace=False).tolist())
    return picks


def plot_crop_examples(store: str | Path | CellStore, out: str | Path, *, per_moa: int = 8, seed: int = 0,
                       strongest: bool = True) -> Path:
    """Save a PNG grid of example crops from a cell store: one row per MOA, DMSO first.

    Parameters
    ----------
    store : str, Path or CellStore
        A complete cell store (``cytolens profile crop``).
    out : str or Path
        PNG file to write (its folder is created).
    per_moa : int
        Crops per row.
    seed : int
        Which cells are drawn.
    strongest : bool
        Draw treated cells from each compound's highest concentration (see :func:`pick_examples`).
    """
    cells = store if isinstance(store, CellStore) else CellStore(store)
    picks = pick_examples(cells.index, per_moa=per_moa, seed=seed, strongest=strongest)
    rows = len(picks)
    fig, axes = new_figure(rows, per_moa, figsize=(1.1 * per_moa + 1.9, 1.1 * rows + 0.4), squeeze=False)
    for r, (name, chosen) in enumerate(picks.items()):
        crops = cells.crops(chosen) if chosen else np.zeros((0, 1, 1, 3))
        for c in range(per_moa):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(crops):
                ax.imshow(np.clip(crops[c], 0, 1), interpolation="nearest")
            if c == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    height = 1.1 * rows + 0.4
    fig.suptitle("Single-cell crops (R = DNA, G = tubulin, B = actin)", fontsize=9, y=1 - 0.08 / height, va="top")
    fig.subplots_adjust(left=0.2, right=0.99, top=1 - 0.32 / height, bottom=0.01, wspace=0.04, hspace=0.04)
    out = Path(out)
    save_figure(fig, out, dpi=96, pil_kwargs={"optimize": True})
    return out
