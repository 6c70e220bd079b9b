"""pycytominer's feature selection for the classical baseline: what it drops, and what happens without it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cytolens.profile.feature_selection import MISSING_PYCYTOMINER, select_features
from cytolens.profile.profiles import write_profiles

pytest.importorskip("pycytominer")


def wells() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(12, 3)), columns=["Cells_Area", "Nuclei_Area", "Cells_Texture"])
    table["Cells_Constant"] = 1.0  # variance 0
    table["Cells_Twice_Area"] = 2 * table["Cells_Area"] + 1  # correlation 1 with Cells_Area, which comes first
    table["Metadata_Plate"] = "P1"
    return table


FEATURES = ["Cells_Area", "Nuclei_Area", "Cells_Texture", "Cells_Constant", "Cells_Twice_Area"]


def test_drops_a_constant_and_a_duplicate_column() -> None:
    table = wells()
    selection = select_features(table, FEATURES)
    assert selection.applied and selection.tool.startswith("pycytominer")
    assert selection.features == ["Cells_Area", "Nuclei_Area", "Cells_Texture"]
    assert selection.dropped == ["Cells_Constant", "Cells_Twice_Area"]
    assert table.columns.tolist() == FEATURES + ["Metadata_Plate"]  # the input is not modified
    record = selection.record()
    assert record["n_features_before"] == 5 and record["n_features_after"] == 3


def test_without_pycytominer_keeps_every_feature(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pycytominer", None)  # import fails as in a base install
    selection = select_features(wells(), FEATURES)
    assert not selection.applied and selection.features == FEATURES
    assert selection.tool == MISSING_PYCYTOMINER and "pip install 'cytolens[eval]'" in selection.tool


def single_cells() -> pd.DataFrame:
    """Two plates of 3 DMSO and 3 treated wells, 4 cells each; a constant and a duplicated feature."""
    rng = np.random.default_rng(1)
    rows = []
    for plate in ("P1", "P2"):
        for w in range(6):
            compound = "DMSO" if w < 3 else f"C{w}"
            for _ in range(4):
                area = rng.normal(100 + 10 * w, 5)
                rows.append({"Metadata_Plate": plate, "Metadata_Well": f"A{w:02d}", "Metadata_Compound": compound,
                             "Metadata_Concentration": 0.0 if compound == "DMSO" else 1.0,
                             "Cells_AreaShape_Area": area, "Cells_Intensity_Mean_DNA": rng.normal(0.5, 0.1),
                             "Cells_AreaShape_Constant": 7.0, "Nuclei_AreaShape_Area": area / 2})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("kind, selected", [("classical", True), ("gan", False)])
def test_write_profiles_selects_classical_features(tmp_path: Path, kind: str, selected: bool) -> None:
    single_cells().to_parquet(tmp_path / "single_cells.parquet", index=False)
    (tmp_path / "profile.json").write_text(json.dumps({"kind": kind}))
    paths = write_profiles(tmp_path)
    treatments = pd.read_parquet(paths["treatments"])
    info = json.loads((tmp_path / "profile.json").read_text())["aggregation"]["feature_selection"]
    if selected:
        assert info["applied"] and set(info["dropped"]) == {"Cells_AreaShape_Constant", "Nuclei_AreaShape_Area"}
        assert "Nuclei_AreaShape_Area" not in treatments and "Cells_AreaShape_Area" in treatments
    else:
        assert not info["applied"] and "Nuclei_AreaShape_Area" in treatments
    assert paths["feature_selection"] == info
