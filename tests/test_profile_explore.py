"""Exploring a GAN: interpolation paths, attribute vector algebra (checked on a generator built to obey it), the
figures of a tiny trained run, and the treatment map."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cytolens.cli.app import app
from cytolens.core.errors import CytolensError
from cytolens.profile.crops.cell_store import CellStoreWriter
from cytolens.profile.explore import (
    attribute_direction, explore_run, interpolate, measure_attributes, monotonicity, plot_treatment_map, slerp,
    walk_attribute,
)
from cytolens.profile.gan.config import GanConfig
from cytolens.profile.gan.training import train

SMALL = {"generator_filters": [8, 4, 4, 4], "discriminator_filters": [4, 4, 4, 4]}


def make_store(path: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    rows = pd.DataFrame({
        "Metadata_Plate": ["P1"] * n, "Metadata_Well": ["B02"] * n, "Metadata_Site": [1] * n,
        "Metadata_Compound": ["DMSO"] * n, "Metadata_Concentration": [0.0] * n, "Metadata_MOA": ["DMSO"] * n,
        "Metadata_Batch": ["Week1"] * n, "Metadata_Cell_X": np.zeros(n), "Metadata_Cell_Y": np.zeros(n),
    })
    writer = CellStoreWriter(path, crop_size=96)
    writer.append(rng.random((n, 96, 96, 3), dtype=np.float32), rows)
    return writer.close()


def test_interpolation_paths_join_the_endpoints_and_slerp_keeps_the_norm() -> None:
    rng = np.random.default_rng(0)
    z0, z1 = rng.standard_normal((3, 100)), rng.standard_normal((3, 100))
    z1 *= (np.linalg.norm(z0, axis=1) / np.linalg.norm(z1, axis=1))[:, None]
    for method in ("linear", "spherical"):
        path = interpolate(z0, z1, 5, method=method)
        assert path.shape == (3, 5, 100)
        np.testing.assert_allclose(path[:, 0], z0, atol=1e-12)
        np.testing.assert_allclose(path[:, -1], z1, atol=1e-12)
    norms = np.linalg.norm(interpolate(z0, z1, 5, method="spherical"), axis=2)
    np.testing.assert_allclose(norms, np.linalg.norm(z0, axis=1)[:, None].repeat(5, 1), rtol=1e-9)
    assert (np.linalg.norm(interpolate(z0, z1, 5, method="linear")[:, 2], axis=1) < norms[:, 2]).all()
    np.testing.assert_allclose(slerp(z0, z0, 0.3), z0)  # parallel vectors fall back to the straight line


def constructed_generator(z: np.ndarray) -> np.ndarray:
    """Cells whose tubulin brightness grows with z[0] and whose nucleus radius grows with z[1]."""
    yy, xx = np.mgrid[0:96, 0:96]
    r = np.hypot(yy - 47.5, xx - 47.5)
    images = np.zeros((len(z), 96, 96, 3), np.float32)
    radius = np.clip(14 + 4 * z[:, 1], 3, 40)
    images[..., 0] = (r[None] < radius[:, None, None]) * 0.9
    images[..., 1] = (r[None] < 44) * np.clip(0.5 + 0.12 * z[:, 0], 0.02, 1)[:, None, None]
    return images


@pytest.mark.parametrize(("attribute", "axis"), [("tubulin", 0), ("nucleus_area", 1)])
def test_attribute_algebra_finds_the_direction_and_the_strip_is_monotone(attribute: str, axis: int) -> None:
    rng = np.random.default_rng(0)
    found = attribute_direction(constructed_generator, attribute, pool=rng.standard_normal((300, 100)),
                                fraction=0.15)
    direction = found["direction"]
    assert np.argmax(np.abs(direction)) == axis and direction[axis] > 0
    assert found["high_mean"] > found["low_mean"]
    ks = (-1.0, -0.5, 0.0, 0.5, 1.0)
    images, values = walk_attribute(constructed_generator, rng.standard_normal((4, 100)), direction, attribute,
                                    threshold=found["threshold"], ks=ks)
    assert images.shape == (4, 5, 96, 96, 3) and values.shape == (4, 5)
    assert (np.diff(values, axis=1) >= 0).all()  # never decreases along k ...
    check = monotonicity(ks, values)
    assert check["pooled_spearman"] > 0.8 and check["rows_increasing"] == 1.0 and check["change_per_unit_k"] > 0
    # ... while a direction orthogonal to the attribute's axis changes nothing.
    other = np.zeros(100)
    other[5] = np.linalg.norm(direction)
    _, flat = walk_attribute(constructed_generator, rng.standard_normal((4, 100)), other, attribute,
                             threshold=found["threshold"], ks=ks)
    assert monotonicity(ks, flat)["change_per_unit_k"] == pytest.approx(0.0, abs=1e-9)


def test_measured_attributes_are_what_they_say() -> None:
    z = np.zeros((2, 100))
    z[1, 1] = 1.0  # larger nucleus
    z[1, 0] = 2.0  # brighter tubulin
    table = measure_attributes(constructed_generator(z), ["tubulin", "nucleus_area", "dna"], threshold=0.5)
    assert table["tubulin"][1] > table["tubulin"][0]
    assert table["nucleus_area"][0] == pytest.approx(np.pi * 14**2, rel=0.05)
    assert table["nucleus_area"][1] == pytest.approx(np.pi * 18**2, rel=0.05)


def treatments_table(n: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    moas = ["Actin disruptors", "DNA damage", "Microtubule stabilizers"]
    table = pd.DataFrame({
        "Metadata_Compound": [f"c{i}" for i in range(n)], "Metadata_Concentration": rng.choice([0.1, 1.0], n),
        "Metadata_MOA": [moas[i % 3] for i in range(n)],
    })
    features = rng.standard_normal((n, 6)) + np.array([[3 * (i % 3)] * 6 for i in range(n)])
    return pd.concat([table, pd.DataFrame(features, columns=[f"f{j}" for j in range(6)])], axis=1)


def test_explore_writes_every_figure_of_a_tiny_trained_run(tmp_path: Path) -> None:
    cells = make_store(tmp_path / "cells", n=4)
    run = train(cells, GanConfig(model="lsgan", model_options=SMALL, batch_size=2, steps=1, sample_count=4,
                                 num_threads=1), tmp_path / "run")
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    treatments_table().to_parquet(profiles / "treatments.parquet")
    summary = explore_run(run, profiles=profiles, pool=40, samples=9, pairs=2, interpolation_steps=5, strips=2)
    out = run / "explore"
    for name in ("samples.png", "interpolation_linear.png", "interpolation_spherical.png", "algebra_tubulin.png",
                 "algebra_nucleus_area.png", "attribute_checks.png", "attributes.csv", "treatment_map.png",
                 "treatment_map.csv", "explore.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert set(summary["attributes"]) == {"tubulin", "nucleus_area"}
    for result in summary["attributes"].values():
        assert {"learned", "random_control", "mean_along_k"} <= set(result)
    table = pd.read_csv(out / "attributes.csv")
    assert set(table["direction"]) == {"learned", "random"} and len(table) == 2 * 2 * 2 * 7
    assert json.loads((out / "explore.json").read_text())["step"] == 1
    coords = pd.read_csv(out / "treatment_map.csv")
    assert len(coords) == 12 and {"PC1", "PC2", "Metadata_MOA"} <= set(coords.columns)


def test_treatment_map_separates_what_is_separated(tmp_path: Path) -> None:
    table = treatments_table(30)
    table.to_parquet(tmp_path / "treatments.parquet")
    plot_treatment_map(tmp_path / "treatments.parquet", tmp_path / "map.png")
    coords = pd.read_csv(tmp_path / "map.csv")
    means = coords.groupby("Metadata_MOA")["PC1"].mean().sort_values()
    assert means.iloc[-1] - means.iloc[0] > 2  # the three offset groups lie apart along PC1


def test_cli_explore_without_profiles(tmp_path: Path) -> None:
    cells = make_store(tmp_path / "cells", n=4)
    run = train(cells, GanConfig(model="dcgan", model_options=SMALL, batch_size=2, steps=1, sample_count=4,
                                 num_threads=1), tmp_path / "run")
    result = CliRunner().invoke(app, ["profile", "explore", str(run), "--out", str(tmp_path / "x"), "--pool", "20",
                                      "--profiles", str(tmp_path / "none")])
    assert result.exit_code == 0, result.output
    assert "tubulin: along z_high - z_low Spearman rho" in result.output
    assert (tmp_path / "x" / "algebra_nucleus_area.png").is_file()
    assert not (tmp_path / "x" / "treatment_map.png").exists()


def test_treatment_map_draws_one_aggregation_of_a_mixed_table(tmp_path: Path) -> None:
    table = treatments_table(30)
    mixed = pd.concat([table.assign(Metadata_Aggregation="bbbc021"),
                       table.assign(Metadata_Aggregation="cytogan")], ignore_index=True)
    mixed.to_parquet(tmp_path / "treatments.parquet")
    plot_treatment_map(tmp_path / "treatments.parquet", tmp_path / "map.png", aggregation="cytogan")
    coords = pd.read_csv(tmp_path / "map.csv")
    assert len(coords) == len(table) and set(coords["Metadata_Aggregation"]) == {"cytogan"}
    with pytest.raises(CytolensError, match="no 'whitened' aggregation"):
        plot_treatment_map(tmp_path / "treatments.parquet", tmp_path / "map.png", aggregation="whitened")
