"""Classical CellProfiler-like features: segmentation, and each measure against a direct computation."""

from __future__ import annotations

import re

import numpy as np
import pytest
from profile_cells import draw_cells
from skimage.feature import graycomatrix
from skimage.measure import regionprops

from cytolens.core.errors import OptionError
from cytolens.profile import features as F


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    return draw_cells(6, np.random.default_rng(0))


@pytest.fixture(scope="module")
def table(crops: np.ndarray):
    return F.feature_table(crops)


def test_names_follow_cellprofiler(table) -> None:
    names = F.feature_names()
    assert len(names) == len(set(names)) == table.shape[1]
    categories = "AreaShape|Intensity|Texture|Granularity|RadialDistribution|Correlation"
    pattern = re.compile(rf"^(Nuclei|Cytoplasm|Cells)_({categories})_\w+$")
    assert all(pattern.match(name) for name in names)
    for expected in ("Cells_AreaShape_Area", "Nuclei_Intensity_MeanIntensity_DNA", "Cells_Texture_Contrast_Tubulin_3",
                     "Cells_RadialDistribution_FracAtD_Actin_4of4", "Cells_Granularity_2_DNA",
                     "Cells_Correlation_Correlation_DNA_Tubulin"):
        assert expected in names
    assert np.isfinite(table.to_numpy()).all()


def test_segmentation_finds_the_centred_cell(crops: np.ndarray) -> None:
    nuclei, cells = F.segment_crops(crops)
    assert nuclei.shape == cells.shape == crops.shape[:3]
    for i in range(len(crops)):
        assert (cells[i] | ~nuclei[i]).all()  # the cell contains its nucleus
        # Drawn nucleus ~ π·12·9 ≈ 340 px, cell ~ π·28·20 ≈ 1760 px (±10 % radii).
        assert 200 < nuclei[i].sum() < 500
        assert 1200 < cells[i].sum() < 2500
        assert nuclei[i, 47, 47] or nuclei[i, 48, 48]


def test_touching_neighbour_is_split_off() -> None:
    # Two round cells touching at x ≈ 66: the centred one (centre 48) and a neighbour (centre 84), each with
    # a nucleus; the cytoplasm is brightest near each nucleus, so a dim valley runs between them.
    yy, xx = np.mgrid[0:96, 0:96].astype(np.float32)
    crop = np.zeros((1, 96, 96, 3), np.float32)
    for cx in (48.0, 84.0):
        r = np.hypot(yy - 48, xx - cx)
        crop[0, :, :, 0] = np.maximum(crop[0, :, :, 0], (r < 8) * 1.0)
        cytoplasm = (r < 19) * (1.0 - 0.6 * r / 19)
        crop[0, :, :, 1] = np.maximum(crop[0, :, :, 1], cytoplasm)
        crop[0, :, :, 2] = np.maximum(crop[0, :, :, 2], cytoplasm)
    nuclei, cells = F.segment_crops(crop)
    assert nuclei[0, 48, 48] and not nuclei[0, 48, 84]
    assert cells[0, 48, 60] and not cells[0, 48, 75] and not cells[0, 48, 84]
    assert abs(int(cells[0].sum()) - np.pi * 19**2) < 0.25 * np.pi * 19**2


def test_empty_crop_gets_a_centre_nucleus() -> None:
    nuclei, cells = F.segment_crops(np.zeros((1, 32, 32, 3), np.float32))
    assert nuclei.sum() == 9 and (cells == nuclei).all()
    values = F.classical_features(np.zeros((2, 32, 32, 3), np.uint8))
    assert np.isfinite(values).all()


def test_shape_matches_skimage(crops: np.ndarray, table) -> None:
    nuclei, cells = F.segment_crops(crops)
    for i in range(len(crops)):
        for name, mask in (("Nuclei", nuclei[i]), ("Cells", cells[i])):
            props = regionprops(mask.astype(np.uint8))[0]
            row = table.iloc[i]
            assert row[f"{name}_AreaShape_Area"] == props.area
            assert row[f"{name}_AreaShape_Perimeter"] == pytest.approx(props.perimeter, rel=1e-5)
            assert row[f"{name}_AreaShape_Eccentricity"] == pytest.approx(props.eccentricity, abs=1e-4)
            assert row[f"{name}_AreaShape_MajorAxisLength"] == pytest.approx(props.axis_major_length, rel=1e-4)
            assert row[f"{name}_AreaShape_MinorAxisLength"] == pytest.approx(props.axis_minor_length, rel=1e-4)
            assert row[f"{name}_AreaShape_Extent"] == pytest.approx(props.extent, rel=1e-5)
            # skimage rasterises the hull; ours is the exact hull of the pixel squares.
            assert row[f"{name}_AreaShape_Solidity"] == pytest.approx(props.solidity, abs=0.04)
        assert table.iloc[i]["Cytoplasm_AreaShape_Area"] == cells[i].sum() - nuclei[i].sum()


def test_intensity_matches_numpy(crops: np.ndarray, table) -> None:
    nuclei, cells = F.segment_crops(crops)
    levels = np.round(crops * 255).astype(np.uint8)
    for i in range(len(crops)):
        masks = {"Nuclei": nuclei[i], "Cytoplasm": cells[i] & ~nuclei[i], "Cells": cells[i]}
        for name, mask in masks.items():
            for c, channel in enumerate(F.CHANNEL_NAMES):
                values = levels[i, :, :, c][mask] / 255.0
                row = table.iloc[i]
                prefix = f"{name}_Intensity_"
                assert row[f"{prefix}IntegratedIntensity_{channel}"] == pytest.approx(values.sum(), rel=1e-5)
                assert row[f"{prefix}MeanIntensity_{channel}"] == pytest.approx(values.mean(), rel=1e-5)
                assert row[f"{prefix}StdIntensity_{channel}"] == pytest.approx(values.std(), rel=1e-4, abs=1e-6)
                assert row[f"{prefix}MaxIntensity_{channel}"] == pytest.approx(values.max())
                assert row[f"{prefix}MedianIntensity_{channel}"] == pytest.approx(
                    np.quantile(values, 0.5, method="inverted_cdf"), abs=1e-6)  # fmt: skip
                assert row[f"{prefix}UpperQuartileIntensity_{channel}"] == pytest.approx(
                    np.quantile(values, 0.75, method="inverted_cdf"), abs=1e-6)  # fmt: skip
                median = np.quantile(values, 0.5, method="inverted_cdf")
                assert row[f"{prefix}MADIntensity_{channel}"] == pytest.approx(
                    np.quantile(np.abs(values - median), 0.5, method="inverted_cdf"), abs=1e-6)  # fmt: skip


def test_texture_matches_skimage_on_a_full_mask() -> None:
    rng = np.random.default_rng(3)
    crops = rng.integers(0, 256, (2, 20, 24, 3)).astype(np.uint8)
    planes = np.ascontiguousarray(np.moveaxis(crops, -1, 0))
    nuclei = np.zeros(crops.shape[:3], bool)
    cells = np.ones(crops.shape[:3], bool)
    texture = F._texture(planes, nuclei, cells)  # (distance, compartment, channel, feature, n)
    angles = [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4]
    for k, distance in enumerate(F.TEXTURE_DISTANCES):
        for c in range(3):
            for i in range(2):
                # CellProfiler's diagonal offset at distance d is (d, d); skimage rounds d·cos, d·sin, so it is
                # asked for the diagonals at d·√2.
                image = crops[i, :, :, c] >> 4
                straight = graycomatrix(image, [distance], angles[::2], levels=16, symmetric=True)
                diagonal = graycomatrix(image, [distance * np.sqrt(2)], angles[1::2], levels=16, symmetric=True)
                p = (straight[:, :, 0, :].sum(axis=-1) + diagonal[:, :, 0, :].sum(axis=-1)).astype(float)
                p /= p.sum()
                a, b = np.indices(p.shape)
                mean = (p * a).sum()
                variance = (p * (a - mean) ** 2).sum()
                expected = {
                    "AngularSecondMoment": (p**2).sum(),
                    "Contrast": (p * (a - b) ** 2).sum(),
                    "Correlation": (p * (a - mean) * (b - mean)).sum() / variance,
                    "InverseDifferenceMoment": (p / (1 + (a - b) ** 2)).sum(),
                    "Entropy": -(p[p > 0] * np.log2(p[p > 0])).sum(),
                }
                for f, name in enumerate(F.TEXTURE_FEATURES):
                    assert texture[k, 2, c, f, i] == pytest.approx(expected[name], rel=1e-9), (distance, c, name)


def test_radial_fractions_sum_to_one(table) -> None:
    for channel in F.CHANNEL_NAMES:
        columns = [f"Cells_RadialDistribution_FracAtD_{channel}_{b}of4" for b in range(1, 5)]
        assert table[columns].sum(axis=1).to_numpy() == pytest.approx(1.0, abs=1e-5)
    # The drawn actin sits at the rim: more of it in the outer bin than tubulin.
    outer = "Cells_RadialDistribution_FracAtD_{}_4of4"
    assert (table[outer.format("Actin")] > table[outer.format("DNA")]).all()


def test_granularity_and_correlation_ranges(table) -> None:
    granularity = table[[c for c in table.columns if "Granularity" in c]].to_numpy()
    assert (granularity >= -1e-6).all() and (granularity <= 100 + 1e-6).all()
    correlation = table[[c for c in table.columns if "Correlation_Correlation" in c]].to_numpy()
    assert (np.abs(correlation) <= 1).all()


def test_same_numbers_whatever_the_batch_and_dtype(crops: np.ndarray, table) -> None:
    one_by_one = F.classical_features(crops, batch_size=1)
    np.testing.assert_allclose(one_by_one, table.to_numpy(), rtol=1e-5, atol=1e-5)
    as_uint8 = F.classical_features(np.round(crops * 255).astype(np.uint8))
    np.testing.assert_allclose(as_uint8, table.to_numpy(), rtol=1e-6, atol=1e-6)


def test_features_separate_phenotypes() -> None:
    rng = np.random.default_rng(5)
    small = F.feature_table(draw_cells(4, rng, nucleus=(8, 6), cell=(18, 14)))
    big = F.feature_table(draw_cells(4, rng, nucleus=(16, 12), cell=(36, 28)))
    assert small["Cells_AreaShape_Area"].max() < big["Cells_AreaShape_Area"].min()
    assert small["Nuclei_AreaShape_Area"].max() < big["Nuclei_AreaShape_Area"].min()


def test_bad_input() -> None:
    with pytest.raises(OptionError, match="shape"):
        F.classical_features(np.zeros((2, 96, 96)))
    with pytest.raises(OptionError, match="dtype"):
        F.classical_features(np.zeros((2, 96, 96, 3), np.int16))
    with pytest.raises(OptionError, match="batch_size"):
        F.classical_features(np.zeros((2, 96, 96, 3), np.uint8), batch_size=0)
    assert F.classical_features(np.zeros((0, 96, 96, 3), np.uint8)).shape == (0, len(F.feature_names()))
