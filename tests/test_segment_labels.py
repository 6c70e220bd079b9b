"""Labels from fluorescence by unsupervised pixel classification: drawn pairs, dtypes, simulated fields, folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from cytolens.core.errors import LayoutError, OptionError
from cytolens.segment.labels import derive_label_folder, derive_labels, label_agreement
from cytolens.synthetic.brightfield.simulate import field_rng, simulate_brightfield_dataset, simulate_field


def _drawn_pair(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two cells drawn by hand: DAPI-bright disks inside whole-cell-stain-bright ellipses, blurred, noisy."""
    yy, xx = np.mgrid[:160, :200].astype(float)
    truth = np.zeros((160, 200), dtype=np.uint8)
    for cy, cx, a, b, ny, nx in [(55, 60, 45, 30, 50, 52), (105, 140, 30, 50, 110, 150)]:
        truth[((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2 < 1] = 2
        truth[np.hypot(yy - ny, xx - nx) < 14] = 1
    rng = np.random.default_rng(seed)
    nucleus, cell = (truth == 1).astype(float), (truth > 0).astype(float)
    dapi = 200 + ndi.gaussian_filter(2500 * nucleus, 1.0) + rng.normal(0, 40, truth.shape)
    # Uneven background and a dimmer second cell, as in real fields.
    stain = 300 + 0.5 * xx + ndi.gaussian_filter(900 * cell * np.where(xx > 100, 0.6, 1.0) + 300 * nucleus, 1.0)
    stain += rng.normal(0, 40, truth.shape)
    return dapi, stain, truth


@pytest.mark.parametrize("dtype", ["uint16", "uint8", "float32", "float64"])
@pytest.mark.parametrize("method", ["gmm", "otsu"])
def test_drawn_cells_are_recovered_in_any_dtype(dtype: str, method: str) -> None:
    dapi, stain, truth = _drawn_pair()
    if dtype == "uint8":  # an 8-bit export: compressed range, coarse quantisation
        dapi, stain = (np.clip(c / 16, 0, 255).astype(np.uint8) for c in (dapi, stain))
    elif dtype.startswith("float"):  # normalised floats, e.g. after a flat-field correction
        dapi, stain = (((c - c.min()) / c.max()).astype(dtype) for c in (dapi, stain))
    else:
        dapi, stain = (np.clip(c, 0, 65535).astype(np.uint16) for c in (dapi, stain))
    before = dapi.copy()
    labels = derive_labels(dapi, stain, method=method, min_size=30)
    assert labels.dtype == np.uint8 and labels.shape == truth.shape
    np.testing.assert_array_equal(dapi, before)  # inputs are never modified
    scores = label_agreement(labels, truth)
    for name in ("background", "nucleus", "cytoplasm"):
        assert scores[f"dice_{name}"] > 0.9, (name, scores)


def test_simulated_field_agrees_with_its_true_geometry() -> None:
    field = simulate_field(field_rng(0, 1), height=256, width=320, pixel_size_um=0.65, bubbles=0)
    scores = label_agreement(derive_labels(field["dapi"], field["cellstain"], min_size=40), field["labels"])
    # Measured at 0.325 µm on full 1440 × 1920 fields the mean Dice is about 0.95; this bound is conservative.
    assert scores["mean_dice"] > 0.85, scores
    assert scores["dice_nucleus"] > 0.8, scores


def test_debris_and_nucleoli_are_cleaned_up() -> None:
    dapi, stain, truth = _drawn_pair(1)
    dapi[52:56, 50:54] = 400  # a DAPI-poor nucleolus inside the first nucleus
    stain[10:13, 180:183] += 3000  # an autofluorescent speck in the background
    labels = derive_labels(dapi, stain, min_size=60)
    scores = label_agreement(labels, truth)
    assert labels[54, 52] == 1 and labels[11, 181] == 0
    assert scores["dice_nucleus"] > 0.9


def test_label_agreement_counts() -> None:
    truth = np.array([[0, 0, 1, 1], [2, 2, 2, 2]])
    derived = np.array([[0, 1, 1, 1], [2, 2, 2, 0]])
    scores = label_agreement(derived, truth)
    assert scores["pixel_accuracy"] == pytest.approx(6 / 8)
    assert scores["dice_nucleus"] == pytest.approx(2 * 2 / (2 + 3))
    assert scores["dice_cytoplasm"] == pytest.approx(2 * 3 / (4 + 3))
    assert scores["dice_background"] == pytest.approx(2 * 1 / (2 + 2))
    assert label_agreement(truth, truth)["mean_dice"] == 1.0


def test_bad_input_is_named() -> None:
    dapi, stain, _ = _drawn_pair()
    with pytest.raises(OptionError, match="Did you mean 'gmm'"):
        derive_labels(dapi, stain, method="gmn")
    with pytest.raises(OptionError, match="same shape"):
        derive_labels(dapi, stain[:-1])
    with pytest.raises(OptionError, match="2-D"):
        derive_labels(dapi[None], stain[None])
    with pytest.raises(OptionError, match="min_size"):
        derive_labels(dapi, stain, min_size=-1)


def test_folder_of_simulated_fields(tmp_path: Path) -> None:
    simulate_brightfield_dataset(tmp_path, images=2, height=160, width=192, pixel_size_um=0.65, seed=3)
    ticks: list[int] = []
    table = derive_label_folder(tmp_path, progress=ticks.append, min_size=40)
    assert ticks == [1, 1] and list(table["stem"]) == ["field_0000", "field_0001"]
    for row in table.itertuples():
        labels = tifffile.imread(tmp_path / row.path)
        assert labels.dtype == np.uint8 and labels.shape == (160, 192)
        assert row.fraction_background + row.fraction_nucleus + row.fraction_cytoplasm == pytest.approx(1.0)
    assert {"pixel_accuracy", "dice_nucleus", "dice_cytoplasm", "mean_dice"} <= set(table.columns)
    assert table["mean_dice"].min() > 0.8


def test_folder_with_an_unpaired_image_is_refused(tmp_path: Path) -> None:
    dapi, stain, _ = _drawn_pair()
    for name in ("dapi", "cellstain"):
        (tmp_path / name).mkdir()
    tifffile.imwrite(tmp_path / "dapi" / "a.tif", dapi.astype(np.uint16))
    tifffile.imwrite(tmp_path / "cellstain" / "a.tif", stain.astype(np.uint16))
    tifffile.imwrite(tmp_path / "dapi" / "b.tif", dapi.astype(np.uint16))
    with pytest.raises(LayoutError, match="'b'"):
        derive_label_folder(tmp_path)
    with pytest.raises(LayoutError, match="dapi"):
        derive_label_folder(tmp_path / "nowhere")
