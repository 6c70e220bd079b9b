"""Tiny synthetic single-cell crops and cell stores for the profile tests (not a test module)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cytolens.profile.crops.cell_store import CellStoreWriter


def draw_cells(
    n: int,
    rng: np.random.Generator,
    *,
    size: int = 96,
    nucleus: tuple[float, float] = (12.0, 9.0),
    cell: tuple[float, float] = (28.0, 20.0),
    actin_rim: float = 0.7,
) -> np.ndarray:
    """``n`` crops (n, size, size, 3) float32 in [0, 1]: an elliptical cell with a nucleus, centred."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.zeros((n, size, size, 3), np.float32)
    for i in range(n):
        centre = (size - 1) / 2 + rng.normal(0, 1.5, 2)
        angle = rng.uniform(0, np.pi)
        dy, dx = yy - centre[0], xx - centre[1]
        u = dy * np.cos(angle) + dx * np.sin(angle)
        v = -dy * np.sin(angle) + dx * np.cos(angle)
        r_nucleus = (u / (nucleus[0] * rng.uniform(0.9, 1.1))) ** 2 + (v / (nucleus[1] * rng.uniform(0.9, 1.1))) ** 2
        r_cell = (u / (cell[0] * rng.uniform(0.9, 1.1))) ** 2 + (v / (cell[1] * rng.uniform(0.9, 1.1))) ** 2
        dna = np.clip(1.2 - r_nucleus, 0, 1) * (r_nucleus < 1)
        tubulin = (r_cell < 1) * (0.4 + 0.6 * np.exp(-((np.sqrt(r_cell) - 0.55) ** 2) / 0.05))
        actin = (r_cell < 1) * ((1 - actin_rim) + actin_rim * np.exp(-((np.sqrt(r_cell) - 0.95) ** 2) / 0.01))
        image = np.clip(np.stack([dna, tubulin, actin], -1) + rng.normal(0, 0.02, (size, size, 3)), 0, None)
        out[i] = image / np.maximum(image.reshape(-1, 3).max(0), 1e-6)
    return out.astype(np.float32)


# Two MOAs with two compounds each, plus DMSO; phenotype = cell and nucleus size.
PHENOTYPES = {
    "DMSO": ("DMSO", (12.0, 9.0), (28.0, 20.0)),
    "big1": ("Big", (16.0, 12.0), (36.0, 28.0)),
    "big2": ("Big", (15.0, 12.0), (35.0, 27.0)),
    "small1": ("Small", (8.0, 6.0), (18.0, 14.0)),
    "small2": ("Small", (8.5, 6.5), (19.0, 14.0)),
}


def write_store(path: Path, *, cells_per_well: int = 3, plates: int = 2, seed: int = 0) -> Path:
    """A cell store: ``plates`` plates (weeks alternate), one well per compound per plate, 2 DMSO wells."""
    rng = np.random.default_rng(seed)
    writer = CellStoreWriter(path, crop_size=96, metadata={"source": "tests"})
    for p in range(plates):
        wells = [("DMSO", "A01"), ("DMSO", "A02"), ("big1", "B01"), ("big2", "B02"), ("small1", "C01"),
                 ("small2", "C02")]
        for compound, well in wells:
            moa, nucleus, cell = PHENOTYPES[compound]
            crops = draw_cells(cells_per_well, rng, nucleus=nucleus, cell=cell)
            rows = pd.DataFrame({
                "Metadata_Plate": f"Week{p + 1}_P{p}",
                "Metadata_Well": well,
                "Metadata_Site": 1,
                "Metadata_Replicate": p + 1,
                "Metadata_Compound": compound,
                "Metadata_Concentration": 0.0 if compound == "DMSO" else 1.0,
                "Metadata_MOA": moa,
                "Metadata_Batch": f"Week{p + 1}",
                "Metadata_ImageNumber": p * 10 + len(well),
                "Metadata_Cell_X": 100.0,
                "Metadata_Cell_Y": 120.0,
            }, index=range(cells_per_well))
            writer.append(crops, rows)
    return writer.close()
