"""The BBBC021-layout simulator: files and tables as BBBC021's, the screen's design, and each MOA's biology."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage as ndi

from cytolens.data.bbbc021 import IMAGE_COLUMNS, MOA_COLUMNS
from cytolens.core.errors import OptionError
from cytolens.synthetic.cellpainting.simulate import simulate_cellpainting_dataset
from cytolens.synthetic.cellpainting.cells import render_field
from cytolens.synthetic.cellpainting.phenotypes import CompoundResponse, draw_compound_response
from cytolens.data.bbbc021 import MOAS
from cytolens.synthetic.cellpainting.plan import (
    COMPOUNDS, DMSO_WELLS, SCALES, WELLS, assign_weeks, moa_table, plan_experiment, planned_fields,
)

FILE_NAME = re.compile(r"^(Week\d+)_\d{6}_([B-G]\d{2})_s(\d+)_w([124])[0-9A-F]{8}(-[0-9A-F]{4}){3}-[0-9A-F]{12}\.tif$")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bbbc021") / "tiny"
    simulate_cellpainting_dataset(root, scale="tiny", seed=3)
    return root


def test_files_follow_bbbc021_naming_and_format(tiny: Path) -> None:
    images = pd.read_csv(tiny / "BBBC021_v1_image.csv")
    plates = sorted(p.name for p in tiny.iterdir() if p.is_dir())
    assert plates == sorted(images["Image_Metadata_Plate_DAPI"].unique())
    assert all(re.fullmatch(r"Week\d+_\d{5}", p) for p in plates)
    for row in images.head(6).itertuples(index=False):
        for channel, wavelength in (("DAPI", "1"), ("Tubulin", "2"), ("Actin", "4")):
            name, folder = getattr(row, f"Image_FileName_{channel}"), getattr(row, f"Image_PathName_{channel}")
            match = FILE_NAME.match(name)
            assert match and match.group(4) == wavelength, name
            assert match.group(1) == folder.split("_")[0] and match.group(2) == row.Image_Metadata_Well_DAPI
            image = tifffile.imread(tiny / folder / name)
            assert image.dtype == np.uint16 and image.shape == (256, 256)
            assert 100 < np.median(image) < 2000 and image.max() < 65535
    assert len(list(tiny.glob("Week*/*.tif"))) == 3 * len(images)


def test_tables_have_exactly_bbbc021s_columns(tiny: Path) -> None:
    images = pd.read_csv(tiny / "BBBC021_v1_image.csv")
    assert tuple(images.columns) == IMAGE_COLUMNS
    assert images["ImageNumber"].is_unique
    moa = pd.read_csv(tiny / "BBBC021_v1_moa.csv")
    assert tuple(moa.columns) == MOA_COLUMNS
    assert set(moa["moa"]) - {"DMSO"} <= set(MOAS)
    assert ((moa["compound"] == "DMSO") & (moa["concentration"] == 0.0) & (moa["moa"] == "DMSO")).sum() == 1
    # The simulator's truth is beside BBBC021's files, never inside them.
    truth = pd.read_csv(tiny / "cells.csv")
    assert {"ImageNumber", "x", "y", "nucleus_area", "cell_area", "response"} <= set(truth.columns)
    assert not {"response", "x", "cell_area"} & set(images.columns)
    assert set(truth["ImageNumber"]) <= set(images["ImageNumber"])


def test_screen_design_compounds_weeks_and_controls(tiny: Path) -> None:
    images = pd.read_csv(tiny / "BBBC021_v1_image.csv")
    images["week"] = images["Image_PathName_DAPI"].str.split("_").str[0]
    positive = (images["Image_Metadata_Compound"] == "taxol") & (images["Image_Metadata_Concentration"] == 10.0)
    treated = images[(images["Image_Metadata_Compound"] != "DMSO") & ~positive]
    assert treated.groupby("Image_Metadata_Compound")["week"].nunique().max() == 1
    moa = pd.read_csv(tiny / "BBBC021_v1_moa.csv")
    for plate, rows in images.groupby("Image_Metadata_Plate_DAPI"):
        compounds = set(rows["Image_Metadata_Compound"])
        assert {"DMSO", "taxol"} <= compounds, plate
        assert (rows["Image_Metadata_Compound"] == "DMSO").sum() == 2
        control = rows[rows["Image_Metadata_Compound"] == "taxol"]["Image_Metadata_Concentration"]
        assert (control == 10.0).sum() == 1
    # The positive control's dose is outside taxol's annotated series: annotated treatments stay in one week.
    assert not ((moa["compound"] == "taxol") & (moa["concentration"] == 10.0)).any()
    annotated = images.merge(moa, left_on=["Image_Metadata_Compound", "Image_Metadata_Concentration"],
                             right_on=["compound", "concentration"])
    annotated = annotated[annotated["compound"] != "DMSO"]
    assert annotated.groupby(["compound", "concentration"])["week"].nunique().max() == 1
    # Every treatment has its replicates on different plates.
    replicates = treated.groupby(["Image_Metadata_Compound", "Image_Metadata_Concentration"])
    assert (replicates["Image_Metadata_Plate_DAPI"].nunique() == 2).all()
    assert images["week"].nunique() == 2


def test_batch_effects_differ_between_weeks(tiny: Path) -> None:
    summary = json.loads((tiny / "simulation.json").read_text())
    weeks = summary["weeks"]
    assert weeks["Week1"]["gains"] != weeks["Week2"]["gains"]
    assert weeks["Week1"]["vignetting"] != weeks["Week2"]["vignetting"]
    assert weeks["Week1"]["density"] != weeks["Week2"]["density"]


def test_full_scale_matches_bbbc021s_design() -> None:
    full = SCALES["full"]
    table = moa_table(full)
    treatments = table[table["compound"] != "DMSO"]
    assert len(treatments) == 103 and treatments["compound"].nunique() == 38
    assert set(treatments["moa"]) == set(MOAS)
    # NSCB drops the two MOAs that live in one week each: 103 - 11 = 92 treatments remain.
    assert treatments["moa"].isin(["Cholesterol-lowering", "Kinase inhibitors"]).sum() == 11
    weeks = assign_weeks(full)
    for moa in ("Cholesterol-lowering", "Kinase inhibitors"):
        assert len({weeks[c] for c, (m, _) in COMPOUNDS.items() if m == moa}) == 1
    for moa in ("Microtubule destabilizers", "DNA damage", "Protein degradation"):
        assert len({weeks[c] for c, (m, _) in COMPOUNDS.items() if m == moa}) > 1
    wells = plan_experiment(full, np.random.default_rng(0))
    assert wells["plate"].nunique() == 55 and wells["batch"].nunique() == 10
    per_plate = wells.groupby("plate")
    assert per_plate.size().max() <= len(WELLS)
    assert (per_plate.apply(lambda w: (w["compound"] == "DMSO").sum()) == 6).all()
    assert set(wells.loc[wells["compound"] == "DMSO", "well"]) == set(DMSO_WELLS)
    assert (per_plate.apply(lambda w: ((w["compound"] == "taxol") & (w["concentration"] == 10.0)).sum()) == 1).all()


def test_small_scale_keeps_every_moa_and_two_compounds_where_bbbc021_has_them() -> None:
    small = plan_experiment(SCALES["small"], np.random.default_rng(0))
    annotated = small[small["annotated"] & (small["compound"] != "DMSO")]
    per_moa = annotated.groupby("moa")["compound"].nunique()
    assert set(per_moa.index) == set(MOAS) and per_moa.min() >= 2


def test_demo_scale_has_every_compound_once_with_other_week_neighbours_for_nscb() -> None:
    demo = plan_experiment(SCALES["demo"], np.random.default_rng(0))
    annotated = demo[demo["annotated"] & (demo["compound"] != "DMSO")]
    assert annotated["compound"].nunique() == 38 and annotated.groupby("compound")["concentration"].nunique().max() == 1
    weeks = assign_weeks(SCALES["demo"])
    for moa in set(MOAS) - {"DMSO", "Cholesterol-lowering", "Kinase inhibitors"}:
        assert len({weeks[c] for c, (m, _) in COMPOUNDS.items() if m == moa}) > 1, moa
    assert planned_fields("demo", seed=0) == len(plan_experiment(SCALES["demo"], np.random.default_rng([0, 0])))


def test_options_are_validated(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="Did you mean 'small'"):
        simulate_cellpainting_dataset(tmp_path, scale="smal")
    with pytest.raises(OptionError, match="seed"):
        simulate_cellpainting_dataset(tmp_path, scale="tiny", seed=-1)


def test_rendering_is_deterministic() -> None:
    response = draw_compound_response(np.random.default_rng(1), "DNA damage", (1.0, 10.0))
    a = render_field(np.random.default_rng(7), height=128, width=160, response=response, concentration=10.0)
    b = render_field(np.random.default_rng(7), height=128, width=160, response=response, concentration=10.0)
    assert np.array_equal(a.signal, b.signal) and a.cells.equals(b.cells)


def _population(moa: str | None, concentration: float, fields: int = 6, seed: int = 0) -> list:
    """Rendered fields of one treatment (None = DMSO), with a fixed, fully potent compound."""
    response = None
    if moa is not None:
        response = CompoundResponse(moa=moa, effect=dict(draw_compound_response(np.random.default_rng(seed), moa,
                                                                                (1.0,)).effect), ec50=1.0, hill=1.5)
    return [render_field(np.random.default_rng([seed, k]), height=256, width=320, response=response,
                         concentration=concentration) for k in range(fields)]


def _interior(fields: list) -> pd.DataFrame:
    cells = pd.concat([f.cells for f in fields], ignore_index=True)
    return cells[~cells["touches_border"]]


def _tubulin_texture(fields: list) -> float:
    """Mean fine-scale tubulin texture inside cells, relative to the mean tubulin: filaments make it high."""
    values = []
    for field in fields:
        tubulin = ndi.gaussian_filter(field.signal[1], 0.7)
        detail = np.abs(tubulin - ndi.gaussian_filter(tubulin, 2.0))  # the scale of single microtubules
        # Inside cells, away from their borders (where the diffuse signal itself steps down).
        borders = ndi.morphological_gradient(field.instances.astype(np.int32), size=3) > 0
        inside = (field.instances > 0) & ~ndi.binary_dilation(borders, iterations=3)
        values.append(detail[inside].mean() / tubulin[inside].mean())
    return float(np.mean(values))


def test_destabilisers_dissolve_the_microtubule_network_and_round_cells() -> None:
    dmso, treated = _population(None, 0.0), _population("Microtubule destabilizers", 30.0)
    assert _tubulin_texture(treated) < 0.7 * _tubulin_texture(dmso)
    assert _interior(treated)["cell_area"].median() < _interior(dmso)["cell_area"].median()
    assert (_interior(treated)["mitosis"] == "scattered").mean() > 0.1


def test_stabilisers_bundle_microtubules_and_arrest_mitosis() -> None:
    dmso, treated = _population(None, 0.0), _population("Microtubule stabilizers", 30.0)
    assert _interior(treated)["mitosis"].isin(["multipolar"]).mean() > 0.1
    assert _interior(dmso)["mitosis"].fillna("").ne("").mean() < 0.08
    # Bundles are brighter cables than single microtubules: the brightest tubulin rises.
    peak = lambda fields: np.mean([np.percentile(f.signal[1][f.instances > 0], 99.5) for f in fields])  # noqa: E731
    assert peak(treated) > 1.3 * peak(dmso)


def test_dna_damage_and_aurora_inhibitors_enlarge_nuclei() -> None:
    dmso = _interior(_population(None, 0.0))
    damage = _interior(_population("DNA damage", 30.0))
    aurora = _interior(_population("Aurora kinase inhibitors", 30.0))
    interphase = lambda cells: cells[cells["mitosis"].fillna("") == ""]  # noqa: E731
    assert interphase(damage)["nucleus_area"].median() > 1.3 * interphase(dmso)["nucleus_area"].median()
    assert (interphase(aurora)["nuclei"] > 1).mean() > 0.3 > (interphase(dmso)["nuclei"] > 1).mean()
    assert interphase(aurora)["cell_area"].median() > 1.3 * interphase(dmso)["cell_area"].median()


def test_eg5_inhibitors_give_monopolar_mitoses() -> None:
    treated = _interior(_population("Eg5 inhibitors", 30.0))
    assert (treated["mitosis"] == "monopolar").mean() > 0.3


def test_effect_grows_with_dose_and_many_treated_cells_look_normal() -> None:
    strengths, areas = [], []
    for concentration in (0.1, 1.0, 10.0):
        cells = _interior(_population("DNA damage", concentration, fields=4))
        strengths.append(cells["response"].mean())
        areas.append(cells["nucleus_area"].median())
    assert strengths[0] < strengths[1] < strengths[2]
    assert areas[0] < areas[2]
    top = _interior(_population("DNA damage", 1.0, fields=4))
    assert 0.1 < (top["response"] == 0).mean() < 0.9
