"""Tests of the hand-crafted features and the XGBoost baseline (tiny seeded images, tmp_path only)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from cytolens.classify.baseline import XGBoostBaseline, feature_importance, fit_xgboost
from cytolens.classify.config import XGBoostConfig
from cytolens.classify.features import FEATURES_VERSION, extract_features, feature_names, feature_table
from cytolens.core.errors import OptionError
from cytolens.data.io import write_tiff

# A small working size keeps every test fast; the measures are scale-normalised.
SIZE = 96


def _blob_cell(shape: tuple[int, int] = (80, 80), seed: int = 0) -> np.ndarray:
    """A bright disc with a few random lines and noise, float64 in about [0, 1]."""
    rng = np.random.default_rng(seed)
    rows, cols = np.indices(shape)
    cr, cc = shape[0] / 2, shape[1] / 2
    image = 0.3 * (np.hypot(rows - cr, cols - cc) < 0.35 * min(shape))
    for _ in range(6):
        angle = rng.uniform(0, np.pi)
        t = np.linspace(-0.3, 0.3, 200) * min(shape)
        r = np.clip((cr + t * np.sin(angle)).astype(int), 0, shape[0] - 1)
        c = np.clip((cc + t * np.cos(angle)).astype(int), 0, shape[1] - 1)
        image[r, c] = 1.0
    image = ndi.gaussian_filter(image, 1.0)
    return image + 0.02 * rng.standard_normal(shape)


def _lines_image(kind: str, size: int = 96, width: float = 0.8, brightness: float = 1.0) -> np.ndarray:
    """Radial spokes or concentric rings around the centre on a dim disc, blurred to width ``width``."""
    rows, cols = np.indices((size, size), dtype=np.float64)
    c = (size - 1) / 2
    radius = np.hypot(rows - c, cols - c)
    angle = np.arctan2(rows - c, cols - c)
    disc = radius < 0.42 * size
    if kind == "radial":
        lines = np.abs(np.sin(8 * angle)) < 0.08 * (size / 4) / np.maximum(radius, 1.0)
        lines &= radius > 4
    else:
        lines = np.abs(((radius + 3) % 8) - 4) < 0.6
    image = 0.1 * disc + brightness * (lines & disc)
    return ndi.gaussian_filter(image.astype(np.float64), width)


def _parallel_lines(width_px: int, size: int = 96, spacing: int = 12) -> np.ndarray:
    image = np.zeros((size, size))
    image[16:-16, 16:-16] = 0.1
    for col in range(20, size - 20, spacing):
        image[16:-16, col : col + width_px] = 1.0
    return ndi.gaussian_filter(image, 0.7)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_keys_finite_and_input_unchanged(dtype: type) -> None:
    cell = _blob_cell()
    if np.issubdtype(dtype, np.integer):
        top = 255 if dtype == np.uint8 else 16383
        image = np.clip(cell / cell.max() * top, 0, top).astype(dtype)
    else:
        image = cell.astype(dtype)
    before = image.copy()
    features = extract_features(image, working_size=SIZE)
    assert list(features) == feature_names()
    assert all(isinstance(v, float) and math.isfinite(v) for v in features.values())
    np.testing.assert_array_equal(image, before)
    assert extract_features(image, working_size=SIZE) == features  # deterministic


def test_names_are_unique_grouped_snake_case() -> None:
    names = feature_names()
    assert len(names) == len(set(names)) > 50
    groups = ("intensity_", "texture_", "filament_", "ridge_", "shape_")
    assert all(name.startswith(groups) and name == name.lower() for name in names)
    assert not any("center" in name or "centre" in name for name in names)
    assert isinstance(FEATURES_VERSION, str)


@pytest.mark.parametrize("value", [0, 7, 65535])
def test_constant_image_is_finite_without_warnings(value: int) -> None:
    image = np.full((64, 64), value, dtype=np.uint16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        features = extract_features(image, working_size=SIZE)
    assert all(math.isfinite(v) for v in features.values())
    assert features["ridge_pixel_fraction"] == 0.0
    assert features["intensity_saturated_fraction"] == (1.0 if value == 65535 else 0.0)


def test_rgb_image_is_read_as_grayscale() -> None:
    gray = (np.clip(_blob_cell(), 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    assert extract_features(rgb, working_size=SIZE) == extract_features(gray, working_size=SIZE)


@pytest.mark.parametrize(
    ("image", "working_size"),
    [(np.zeros((4, 40)), 96), (np.zeros((2, 3, 4, 5)), 96), (np.zeros((32, 32)), 8), (np.zeros((32, 32)), 64.0)],
)
def test_bad_input_is_rejected(image: np.ndarray, working_size: int) -> None:
    with pytest.raises(OptionError):
        extract_features(image, working_size=working_size)


def test_nan_input_is_rejected() -> None:
    image = np.zeros((32, 32))
    image[3, 3] = np.nan
    with pytest.raises(OptionError, match="NaN"):
        extract_features(image)


def test_pixel_count_barely_matters() -> None:
    """The same cell at two camera resolutions gives close features (the working scale is fixed)."""
    small = _lines_image("radial", size=96)
    large = ndi.zoom(small, 2, order=1)
    a = extract_features(small, working_size=SIZE)
    b = extract_features(large, working_size=SIZE)
    for name in ("filament_radial_order", "shape_area_fraction", "intensity_mean"):
        assert a[name] == pytest.approx(b[name], abs=0.1)


def test_radial_spokes_are_more_radial_than_rings() -> None:
    radial = extract_features(_lines_image("radial"), working_size=SIZE)
    rings = extract_features(_lines_image("rings"), working_size=SIZE)
    for name in ("filament_radial_order", "filament_radial_order_inner", "filament_radial_order_outer"):
        # The outer half also holds the disc's edge, which runs tangentially, so spokes score lower there.
        assert radial[name] > 0.15 and rings[name] < -0.5, name
    assert radial["filament_radial_order_inner"] > radial["filament_radial_order_outer"]


def test_thick_lines_are_wider_than_thin_lines() -> None:
    thin = extract_features(_parallel_lines(1), working_size=SIZE)
    thick = extract_features(_parallel_lines(4), working_size=SIZE)
    assert thick["ridge_mean_width"] > 1.3 * thin["ridge_mean_width"]
    # Parallel lines: one direction only, so the orientation histogram is far from uniform.
    assert thin["filament_orientation_entropy"] < 0.5


def test_bright_bundles_raise_the_bundling_index() -> None:
    singles = _lines_image("radial")
    bundled = singles.copy()
    bundles = _parallel_lines(3) > 0.5
    bundled[bundles] += 3.0
    bundled = ndi.gaussian_filter(bundled, 0.5)
    a = extract_features(ndi.gaussian_filter(singles, 0.5), working_size=SIZE)
    b = extract_features(bundled, working_size=SIZE)
    assert b["filament_bundling_index"] > a["filament_bundling_index"]


def test_blur_lowers_the_focus_measures() -> None:
    sharp = _blob_cell(seed=3)
    blurred = ndi.gaussian_filter(sharp, 2.5)
    a = extract_features(sharp, working_size=SIZE)
    b = extract_features(blurred, working_size=SIZE)
    assert b["shape_focus_laplacian_var"] < a["shape_focus_laplacian_var"]
    assert b["shape_focus_high_frequency_ratio"] < a["shape_focus_high_frequency_ratio"]


def test_frame_cut_cell_touches_the_border() -> None:
    centred = _blob_cell(seed=4)
    shifted = np.roll(centred, 30, axis=1)
    shifted[:, :30] = centred[:, -1:].mean()  # background fills the vacated side, the disc runs off the edge
    a = extract_features(centred, working_size=SIZE)
    b = extract_features(shifted, working_size=SIZE)
    assert a["shape_border_fraction"] == 0.0
    assert b["shape_border_fraction"] > 0.05


def test_simulated_taxol_cells_lose_radial_order() -> None:
    simulate_cell = pytest.importorskip("cytolens.synthetic").simulate_cell
    rng = np.random.default_rng(0)
    control = [extract_features(simulate_cell(rng, dose=0.0, size=96)[0], working_size=SIZE) for _ in range(3)]
    treated = [extract_features(simulate_cell(rng, dose=1.0, size=96)[0], working_size=SIZE) for _ in range(3)]
    for cell in control + treated:
        assert all(math.isfinite(v) for v in cell.values())
    mean = lambda cells, key: float(np.mean([c[key] for c in cells]))  # noqa: E731
    assert mean(treated, "filament_radial_order") < mean(control, "filament_radial_order")


def test_feature_table_reads_files_in_order(tmp_path: Path) -> None:
    paths = []
    for i, seed in enumerate((0, 1)):
        image = (np.clip(_blob_cell(seed=seed), 0, 1) * 4000).astype(np.uint16)
        paths.append(str(write_tiff(tmp_path / f"cell_{i}.tif", image)))
    done: list[int] = []
    table = feature_table(paths, working_size=SIZE, progress=done.append)
    assert list(table.index) == paths and list(table.columns) == feature_names()
    assert done == [1, 1]
    assert table.attrs["features_version"] == FEATURES_VERSION
    assert np.isfinite(table.to_numpy()).all()
    direct = extract_features((np.clip(_blob_cell(seed=1), 0, 1) * 4000).astype(np.uint16), working_size=SIZE)
    assert table.loc[paths[1]].to_dict() == direct


# --- XGBoost baseline ---------------------------------------------------------------------------------------

SMALL = XGBoostConfig(n_estimators=30, max_depth=3, learning_rate=0.3)


def _informative_table(num_classes: int, n: int = 240, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    table = pd.DataFrame(
        {
            "noise_a": rng.standard_normal(n),
            "signal": labels + 0.15 * rng.standard_normal(n),
            "noise_b": rng.uniform(size=n),
        },
        index=[f"cell_{i}.tif" for i in range(n)],
    )
    return table, labels


@pytest.mark.parametrize("num_classes", [2, 3])
def test_xgboost_learns_an_informative_feature(num_classes: int) -> None:
    table, labels = _informative_table(num_classes)
    train, test = slice(0, 160), slice(160, None)
    baseline = fit_xgboost(table[train], labels[train], config=SMALL, seed=0, num_classes=num_classes)
    proba = baseline.predict_proba(table[test])
    assert proba.shape == (80, num_classes)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert np.mean(proba.argmax(axis=1) == labels[test]) > 0.9
    importance = feature_importance(baseline, top=2)
    assert list(importance.columns) == ["feature", "total_gain", "gain", "gain_fraction"]
    assert len(importance) == 2 and importance.loc[0, "feature"] == "signal"


def test_xgboost_checks_columns_by_name() -> None:
    table, labels = _informative_table(2)
    baseline = fit_xgboost(table, labels, config=SMALL, seed=0, num_classes=2)
    reordered = table[["signal", "noise_b", "noise_a"]]
    np.testing.assert_array_equal(baseline.predict_proba(reordered), baseline.predict_proba(table))
    with pytest.raises(OptionError, match="missing"):
        baseline.predict_proba(table.drop(columns="signal"))
    with pytest.raises(OptionError, match="unexpected"):
        baseline.predict_proba(table.assign(extra=1.0))


def test_xgboost_rejects_bad_labels() -> None:
    table, labels = _informative_table(3)
    with pytest.raises(OptionError, match="absent"):
        fit_xgboost(table, np.minimum(labels, 1), config=SMALL, seed=0, num_classes=3)
    with pytest.raises(OptionError, match="shape"):
        fit_xgboost(table, labels[:-1], config=SMALL, seed=0, num_classes=3)
    with pytest.raises(OptionError, match="num_classes"):
        fit_xgboost(table, labels, config=SMALL, seed=0, num_classes=1)


def test_xgboost_is_reproducible_and_round_trips(tmp_path: Path) -> None:
    table, labels = _informative_table(3)
    table.attrs["features_version"] = FEATURES_VERSION
    config = XGBoostConfig(n_estimators=20, subsample=0.7, colsample_bytree=0.7)
    baseline = fit_xgboost(table, labels, config=config, seed=5, num_classes=3, class_names=["0", "0.1", "1"])
    again = fit_xgboost(table, labels, config=config, seed=5, num_classes=3)
    np.testing.assert_array_equal(baseline.predict_proba(table), again.predict_proba(table))

    folder = baseline.save(tmp_path / "xgb")
    assert sorted(p.name for p in folder.iterdir()) == ["baseline.json", "model.json"]  # no temp files left
    sidecar = json.loads((folder / "baseline.json").read_text())
    assert sidecar["feature_names"] == ["noise_a", "signal", "noise_b"]
    loaded = XGBoostBaseline.load(folder)
    assert (loaded.class_names, loaded.num_classes, loaded.features_version) == (["0", "0.1", "1"], 3, "1")
    np.testing.assert_array_equal(loaded.predict_proba(table), baseline.predict_proba(table))
