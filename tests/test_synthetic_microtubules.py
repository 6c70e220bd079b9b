"""The microtubule single-cell simulator: image format, determinism, data set layout, biology, validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from cytolens.core.errors import OptionError
from cytolens.classify.filaments import filament_features
from cytolens.synthetic import MICROTUBULE_CLASSES, simulate_cell, simulate_microtubule_dataset
from cytolens.synthetic.microtubules.simulate import cell_rng, draw_cell_parameters

HIDDEN = {
    "sensitivity", "stabilisation", "n_microtubules", "n_tracks", "polymer_mass_um", "mean_mt_length_um",
    "bundling_fraction", "mean_bundle_size", "curl", "persistence_length_um", "radial_disorder", "free_tubulin",
    "out_of_focus", "defocus_sigma_px", "frame_cut", "exposure", "background", "offset", "gain", "read_noise_e",
}


@pytest.mark.parametrize("size", [64, 96])
@pytest.mark.parametrize("dose", [0.0, 0.1, 1.0])
def test_cell_is_14_bit_uint16_of_requested_size(size: int, dose: float) -> None:
    image, params = simulate_cell(np.random.default_rng(1), dose=dose, size=size)
    assert image.shape == (size, size)
    assert image.dtype == np.uint16
    assert int(image.max()) <= 16383
    # A cell, not an empty frame: the brightest pixels stand well above the camera offset.
    assert np.percentile(image, 99) > params["offset"] + 300
    assert HIDDEN <= params.keys()
    assert all(isinstance(v, (float, int, bool, str)) for v in params.values())


def test_same_generator_state_gives_same_cell_and_different_seeds_differ() -> None:
    a, pa = simulate_cell(cell_rng(3, 1, 0), dose=0.1, size=64)
    b, pb = simulate_cell(cell_rng(3, 1, 0), dose=0.1, size=64)
    c, _ = simulate_cell(cell_rng(4, 1, 0), dose=0.1, size=64)
    np.testing.assert_array_equal(a, b)
    assert pa == pb
    assert not np.array_equal(a, c)


def test_dataset_layout_table_and_byte_identical_files(tmp_path: Path) -> None:
    calls: list[int] = []
    table = simulate_microtubule_dataset(tmp_path / "a", per_class=2, size=64, seed=5, progress=calls.append)
    assert calls == [1] * 6
    assert sorted(p.name for p in (tmp_path / "a").iterdir() if p.is_dir()) == ["0", "0.1", "1"]
    on_disk = pd.read_csv(tmp_path / "a" / "cells.csv", dtype={"class": str})
    assert len(on_disk) == len(table) == 6
    assert {"path", "class", "dose", "seed"} | HIDDEN <= set(on_disk.columns)
    assert list(on_disk["path"]) == list(table["path"])
    assert sorted(on_disk["class"].unique()) == sorted(MICROTUBULE_CLASSES)
    files = sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*.tif"))
    assert files == sorted(on_disk["path"])
    for row in on_disk.itertuples():
        assert row.path.startswith(f"{row._2}/")  # the class column names the folder
        assert float(row.dose) == float(row._2)
        image = tifffile.imread(tmp_path / "a" / row.path)
        assert image.dtype == np.uint16 and image.shape == (64, 64) and image.max() <= 16383
    assert not list((tmp_path / "a").rglob("*.tmp*"))  # atomic writes leave no temporaries

    simulate_microtubule_dataset(tmp_path / "b", per_class=2, size=64, seed=5)
    simulate_microtubule_dataset(tmp_path / "c", per_class=1, size=64, seed=5)
    simulate_microtubule_dataset(tmp_path / "d", per_class=1, size=64, seed=6)
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # Cell k of a class does not depend on per_class, so a run can be extended; another seed differs.
    first = "0.1/cell_0000.tif"
    assert (tmp_path / "a" / first).read_bytes() == (tmp_path / "c" / first).read_bytes()
    assert (tmp_path / "a" / first).read_bytes() != (tmp_path / "d" / first).read_bytes()
    assert (tmp_path / "a" / "cells.csv").read_bytes() == (tmp_path / "b" / "cells.csv").read_bytes()


def test_filament_measures_and_polymer_move_with_dose() -> None:
    """Measured on rendered 128-px images, class means order 0 → 0.1 → 1 (effects subtle at 0.1)."""
    means = {}
    for class_index, name in enumerate(MICROTUBULE_CLASSES):
        rows = []
        for k in range(24):
            image, params = simulate_cell(cell_rng(11, class_index, k), dose=float(name), size=128)
            features = filament_features(image)
            rows.append((features["radial_order"], features["bundling_index"], params["polymer_mass_um"]))
        means[name] = np.nanmean(np.array(rows), axis=0)
    radial = [means[c][0] for c in MICROTUBULE_CLASSES]
    bundling = [means[c][1] for c in MICROTUBULE_CLASSES]
    polymer = [means[c][2] for c in MICROTUBULE_CLASSES]
    # Over seeds 11-18: radial ≈ 0.48 / 0.20 / 0.01, bundling ≈ 0.17 / 0.27 / 0.42, polymer ≈ 2850 / 4400 /
    # 6600 µm; per-class standard errors ≈ 0.02-0.03. The margins below are several standard errors.
    assert radial[0] > radial[1] + 0.08 and radial[1] > radial[2] + 0.08, radial
    assert bundling[0] + 0.03 < bundling[1] and bundling[1] + 0.06 < bundling[2], bundling
    assert polymer[0] * 1.15 < polymer[1] and polymer[1] * 1.15 < polymer[2], polymer


def test_nuisance_shares_are_plausible() -> None:
    rng = np.random.default_rng(2024)
    draws = [draw_cell_parameters(rng, dose=float(MICROTUBULE_CLASSES[i % 3]), size=128) for i in range(240)]
    out_of_focus = np.mean([d["out_of_focus"] for d in draws])
    frame_cut = np.mean([d["frame_cut"] for d in draws])
    assert 0.05 <= out_of_focus <= 0.22
    assert 0.04 <= frame_cut <= 0.18



def test_frame_cut_cells_reach_the_border_and_others_do_not() -> None:
    border = np.ones((64, 64), bool)
    border[2:-2, 2:-2] = False
    seen = {True: 0, False: 0}
    for k in range(60):
        image, params = simulate_cell(cell_rng(8, 0, k), dose=0.0, size=64)
        if params["out_of_focus"] or seen[bool(params["frame_cut"])] >= 3:
            continue
        seen[bool(params["frame_cut"])] += 1
        # Signal on the frame's edge: well above the camera offset plus background only for cut cells.
        edge_signal = np.percentile(image[border], 95) - params["offset"]
        assert (edge_signal > 250) == params["frame_cut"], (k, edge_signal)
    assert seen == {True: 3, False: 3}


def test_difficulty_zero_is_clean_and_difficulty_spreads_sensitivity() -> None:
    rng = np.random.default_rng(0)
    clean = [draw_cell_parameters(rng, dose=1.0, size=64, difficulty=0.0) for _ in range(40)]
    assert not any(d["out_of_focus"] or d["frame_cut"] for d in clean)
    assert len({round(float(d["stabilisation"]), 9) for d in clean}) == 1
    hard = [draw_cell_parameters(rng, dose=1.0, size=64, difficulty=3.0) for _ in range(200)]
    easy = [draw_cell_parameters(rng, dose=1.0, size=64, difficulty=1.0) for _ in range(200)]
    assert np.std(np.log([d["sensitivity"] for d in hard])) > 2 * np.std(np.log([d["sensitivity"] for d in easy]))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"per_class": 0}, "per_class"),
        ({"per_class": 1, "size": 32}, "size"),
        ({"per_class": 1, "size": 64.5}, "size"),
        ({"per_class": 1, "difficulty": 3.5}, "difficulty"),
        ({"per_class": 1, "difficulty": -0.1}, "difficulty"),
        ({"per_class": 1, "seed": -1}, "seed"),
    ],
)
def test_dataset_rejects_bad_arguments(tmp_path: Path, kwargs: dict, name: str) -> None:
    with pytest.raises(OptionError, match=f"`{name}`"):
        simulate_microtubule_dataset(tmp_path, **kwargs)
    assert not (tmp_path / "cells.csv").exists()


def test_cell_rejects_bad_arguments() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(OptionError, match="`dose`"):
        simulate_cell(rng, dose=-1.0)
    with pytest.raises(OptionError, match="`size`"):
        simulate_cell(rng, dose=0.0, size=16)
    with pytest.raises(OptionError, match="`difficulty`"):
        simulate_cell(rng, dose=0.0, difficulty=5)
