"""DMSO normalisation and aggregation on a hand-computed example; whitening."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cytolens.core.errors import CytolensError
from cytolens.profile.dmso_normalisation import fit_whitening, plate_dmso_statistics
from cytolens.profile.profiles import build_profiles, read_well_means, write_profiles

# Feature f per cell, by plate and well. DMSO cells: P1 {1, 3, 1, 3} → mean 2, std 1; P2 {10, 14, 10, 14} →
# mean 12, std 2; P3 {0, 2, 0, 2} → mean 1, std 1. Treatment T (one well per plate, the replicates):
# P1 {4, 6} → mean 5 → z 3; P2 {16, 18} → 17 → z 2.5; P3 {1, 1} → 1 → z 0. Median over replicates: 2.5.
# CytoGAN's profile: mean of T's six cells = 46 / 6. Feature g = 10 everywhere except T on P1 (g = 20):
# constant over all DMSO cells, so its scale is 1: z(T, P1) = 10, the others 0 → median 0.
CELLS = {
    ("P1", "A01", "DMSO"): [1, 3],
    ("P1", "A02", "DMSO"): [1, 3],
    ("P1", "B01", "T"): [4, 6],
    ("P2", "A01", "DMSO"): [10, 14],
    ("P2", "A02", "DMSO"): [10, 14],
    ("P2", "B01", "T"): [16, 18],
    ("P3", "A01", "DMSO"): [0, 2],
    ("P3", "A02", "DMSO"): [0, 2],
    ("P3", "B01", "T"): [1, 1],
}


def single_cells() -> pd.DataFrame:
    rows = []
    for (plate, well, compound), values in CELLS.items():
        for value in values:
            rows.append({
                "Metadata_Plate": plate,
                "Metadata_Well": well,
                "Metadata_Replicate": int(plate[1]),
                "Metadata_Compound": compound,
                "Metadata_Concentration": 0.0 if compound == "DMSO" else 1.5,
                "Metadata_MOA": "DMSO" if compound == "DMSO" else "Actin disruptors",
                "Metadata_Batch": "Week1" if plate != "P3" else "Week2",
                "f": float(value),
                "g": 20.0 if (plate, compound) == ("P1", "T") else 10.0,
            })
    return pd.DataFrame(rows)


def test_well_means_and_dmso_cells() -> None:
    wells = read_well_means(single_cells())
    table = wells.table()
    row = table[(table["Metadata_Plate"] == "P2") & (table["Metadata_Well"] == "B01")].iloc[0]
    assert row["f"] == 17.0 and row["Metadata_Cell_Count"] == 2
    assert sorted(wells.dmso_cells) == ["P1", "P2", "P3"]
    assert wells.dmso_cells["P2"][:, 0].tolist() == [10, 14, 10, 14]


def test_dmso_normalisation_and_aggregation_by_hand() -> None:
    wells_table, treatments = build_profiles(read_well_means(single_cells()))
    normalised = wells_table[wells_table["Metadata_Normalization"] == "dmso"]
    normalised = normalised.set_index(["Metadata_Plate", "Metadata_Well"])
    assert normalised.loc[("P1", "B01"), "f"] == pytest.approx(3.0)
    assert normalised.loc[("P2", "B01"), "f"] == pytest.approx(2.5)
    assert normalised.loc[("P3", "B01"), "f"] == pytest.approx(0.0)
    assert normalised.loc[("P1", "A01"), "f"] == pytest.approx(0.0)  # a DMSO well is centred
    assert normalised.loc[("P1", "B01"), "g"] == pytest.approx(10.0)  # zero DMSO scale everywhere → scale 1

    by = treatments.set_index(["Metadata_Aggregation", "Metadata_Compound"])
    assert by.loc[("bbbc021", "T"), "f"] == pytest.approx(2.5)  # median of 3, 2.5, 0
    assert by.loc[("bbbc021", "T"), "g"] == pytest.approx(0.0)
    assert by.loc[("cytogan", "T"), "f"] == pytest.approx(46 / 6)
    assert by.loc[("cytogan", "T"), "g"] == pytest.approx(80 / 6)
    assert by.loc[("bbbc021", "T"), "Metadata_Well_Count"] == 3
    assert by.loc[("bbbc021", "T"), "Metadata_Cell_Count"] == 6
    assert by.loc[("bbbc021", "T"), "Metadata_Batch"] == "Week1|Week2"
    assert by.loc[("bbbc021", "T"), "Metadata_MOA"] == "Actin disruptors"
    # pycytominer's layout: Metadata_ columns first, then the features.
    assert list(treatments.columns[-2:]) == ["f", "g"]
    assert all(c.startswith("Metadata_") for c in treatments.columns[:-2])


def test_robust_normalisation_by_hand() -> None:
    _, treatments = build_profiles(read_well_means(single_cells()), normalization="robust")
    by = treatments.set_index(["Metadata_Aggregation", "Metadata_Compound"])
    # Medians 2, 12, 1; MADs 1, 2, 1 (× 1.4826): z = 3 / 1.4826, 5 / 2.9652, 0 → median 5 / 2.9652.
    assert by.loc[("bbbc021", "T"), "f"] == pytest.approx(5 / (2 * 1.4826))


def test_scale_falls_back_to_pooled_dmso() -> None:
    cells = {"P1": np.array([[5.0], [5.0]]), "P2": np.array([[0.0], [2.0]])}
    stats = plate_dmso_statistics(cells)
    # P1 has no spread: its scale is the pooled DMSO std of {5, 5, 0, 2} (mean 3, var (4+4+9+1)/4 = 4.5).
    assert stats["P1"][0][0] == 5.0
    assert stats["P1"][1][0] == pytest.approx(np.sqrt(4.5))
    assert stats["P2"][1][0] == pytest.approx(1.0)


def test_whitening_makes_dmso_white() -> None:
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(4000, 3)) @ np.array([[2.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.2]]) + 7.0
    mean, matrix = fit_whitening(samples, regularization=0.0)
    white = (samples - mean) @ matrix
    assert np.cov(white, rowvar=False) == pytest.approx(np.eye(3), abs=1e-6)
    assert np.allclose(matrix, matrix.T)  # ZCA


def test_whitened_aggregations() -> None:
    rng = np.random.default_rng(1)
    table = single_cells()
    table["g"] = table["g"] + rng.normal(size=len(table))  # give g some DMSO spread
    wells_table, treatments = build_profiles(read_well_means(table), whiten=True)
    assert set(treatments["Metadata_Aggregation"]) == {"cytogan", "bbbc021", "cytogan+whiten", "bbbc021+whiten"}
    assert set(wells_table["Metadata_Normalization"]) == {"raw", "dmso", "dmso+whiten"}
    assert np.isfinite(treatments[["f", "g"]].to_numpy()).all()


def test_missing_dmso_is_an_error() -> None:
    table = single_cells()
    table = table[~((table["Metadata_Plate"] == "P3") & (table["Metadata_Compound"] == "DMSO"))]
    with pytest.raises(CytolensError, match="P3"):
        build_profiles(read_well_means(table))


def test_write_profiles_streams_parquet(tmp_path) -> None:
    table = single_cells()
    table.to_parquet(tmp_path / "single_cells.parquet", index=False, row_group_size=5)
    paths = write_profiles(tmp_path, whiten=False)
    treatments = pd.read_parquet(paths["treatments"])
    value = treatments.set_index(["Metadata_Aggregation", "Metadata_Compound"]).loc[("bbbc021", "T"), "f"]
    assert value == pytest.approx(2.5)
    info = json.loads((tmp_path / "profile.json").read_text())
    assert info["aggregation"]["n_wells"] == 9 and info["aggregation"]["n_dmso_cells"] == 12
    # read in batches of 4 rows: the same well means
    wells = read_well_means(tmp_path / "single_cells.parquet", batch_rows=4)
    assert wells.table().set_index(["Metadata_Plate", "Metadata_Well"]).loc[("P1", "B01"), "f"] == 5.0
