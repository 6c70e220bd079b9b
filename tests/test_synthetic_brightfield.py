"""The bright-field / DAPI / whole-cell-stain field simulator: files, determinism, biology, validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage as ndi

from cytolens.core.errors import OptionError
from cytolens.synthetic.brightfield.simulate import CHANNELS, field_rng, simulate_brightfield_dataset, simulate_field

HIDDEN = {
    "n_cells", "n_mitotic", "confluence", "cell_fraction", "nucleus_fraction", "cell_radius_um", "cluster_size",
    "vignetting", "gradient", "gradient_angle", "defocus_um", "gain", "read_noise_e", "debris", "n_bubbles",
    "bubbles_um", "bubble_fraction", "bf_level", "dapi_level", "stain_level", "pixel_size_um",
}
# Twice the paper's pixel size (2 × 2 binning) keeps test fields small while holding a colony of cells.
SMALL = {"height": 192, "width": 256, "pixel_size_um": 0.65}


@pytest.fixture(scope="module")
def field() -> dict:
    return simulate_field(field_rng(0, 0), bubbles=0, **SMALL)


def test_field_arrays_have_the_documented_dtypes_and_shapes(field: dict) -> None:
    for name in CHANNELS:
        assert field[name].dtype == np.uint16 and field[name].shape == (192, 256)
    assert field["labels"].dtype == np.uint8 and set(np.unique(field["labels"])) == {0, 1, 2}
    assert field["instances"].dtype == np.uint16
    assert HIDDEN <= field["params"].keys()
    # A mean level well inside the 16-bit range, never clipped.
    assert 5000 < field["brightfield"].mean() < 50000 and field["brightfield"].max() < 65535


def test_nuclei_lie_inside_cytoplasm(field: dict) -> None:
    labels = field["labels"]
    components, n = ndi.label(labels == 1)
    assert n >= 3
    for index, box in enumerate(ndi.find_objects(components), start=1):
        if box[0].start == 0 or box[1].start == 0 or box[0].stop == labels.shape[0] or box[1].stop == labels.shape[1]:
            continue  # a nucleus cut by the frame has no ring to check on that side
        nucleus = components == index
        ring = ndi.binary_dilation(nucleus) & ~nucleus
        assert np.all(labels[ring] == 2), f"nucleus {index} touches background"
        # ... and the nucleus belongs to one cell only.
        assert np.unique(field["instances"][nucleus]).size == 1


def test_neighbouring_cells_share_borders(field: dict) -> None:
    inst = field["instances"]
    left, right = inst[:, :-1], inst[:, 1:]
    shared = (left > 0) & (right > 0) & (left != right)
    assert shared.sum() > 20
    assert field["params"]["n_cells"] >= 5


def test_brightfield_contrast_is_weak_but_present(field: dict) -> None:
    bf, cell = field["brightfield"].astype(float), field["labels"] > 0
    background = bf[~cell].mean()
    relative = abs(bf[cell].mean() - background) / background
    assert 0.002 < relative < 0.15


def test_dapi_marks_nuclei_and_cellstain_marks_cells(field: dict) -> None:
    labels, dapi, stain = field["labels"], field["dapi"].astype(float), field["cellstain"].astype(float)
    assert dapi[labels == 1].mean() > 4 * dapi[labels != 1].mean()
    assert stain[labels == 2].mean() > 2 * stain[labels == 0].mean()
    assert stain[labels == 1].mean() > 2 * stain[labels == 0].mean()  # the whole-cell stain fills nuclei too


def test_bubble_hides_the_cells_beneath_it() -> None:
    field = simulate_field(field_rng(2, 0), bubbles=1, height=256, width=256, pixel_size_um=1.0)
    params = field["params"]
    x, y, r = (float(v) / params["pixel_size_um"] for v in params["bubbles_um"].split(":"))
    distance = np.hypot(*np.mgrid[:256, :256] - np.array([y, x])[:, None, None])
    inside, outside = distance < 0.7 * r, distance > 1.3 * r
    labels, bf = field["labels"], field["brightfield"].astype(float)
    assert params["n_bubbles"] == 1 and params["bubble_fraction"] > 0.02
    assert (labels[inside] > 0).sum() > 1000, "the truth keeps the cells under the bubble"
    # Cell detail (a band-pass of the image, relative to its level) nearly vanishes under the bubble.
    detail = ndi.gaussian_filter(bf, 1.5) - ndi.gaussian_filter(bf, 5.0)
    assert detail[inside].std() / bf[inside].mean() < 0.5 * detail[outside].std() / bf[outside].mean()
    assert bf[inside].mean() > bf[outside].mean()  # the bright interior


def test_same_seed_same_files_and_layout(tmp_path: Path) -> None:
    options = {"images": 2, "height": 96, "width": 128, "pixel_size_um": 0.65, "seed": 5}
    ticks: list[int] = []
    table = simulate_brightfield_dataset(tmp_path / "a", progress=ticks.append, **options)
    simulate_brightfield_dataset(tmp_path / "b", **options)
    assert ticks == [1, 1]
    stems = ["field_0000", "field_0001"]
    for folder in [*CHANNELS, "truth", "truth/instances"]:
        names = sorted(p.stem for p in (tmp_path / "a" / folder).glob("*.tif"))
        assert names == stems, folder
        for stem in stems:
            a = (tmp_path / "a" / folder / f"{stem}.tif").read_bytes()
            assert a == (tmp_path / "b" / folder / f"{stem}.tif").read_bytes()
    assert tifffile.imread(tmp_path / "a" / "truth" / "field_0000.tif").dtype == np.uint8
    assert tifffile.imread(tmp_path / "a" / "dapi" / "field_0000.tif").dtype == np.uint16
    csv = pd.read_csv(tmp_path / "a" / "fields.csv")
    assert list(csv["stem"]) == stems and {"seed", "field_index", "height", "width"} | HIDDEN <= set(csv.columns)
    assert len(table) == 2
    other = simulate_field(field_rng(6, 0), height=96, width=128, pixel_size_um=0.65)
    assert not np.array_equal(other["brightfield"], tifffile.imread(tmp_path / "a" / "brightfield" / "field_0000.tif"))


def test_physical_scale_is_kept_across_pixel_sizes() -> None:
    fine = simulate_field(field_rng(2, 0), height=160, width=160, pixel_size_um=0.65, bubbles=0)
    coarse = simulate_field(field_rng(2, 0), height=80, width=80, pixel_size_um=1.3, bubbles=0)
    for f in (fine, coarse):  # the same physical field of view: cell counts agree roughly
        assert f["params"]["n_cells"] >= 2
    assert abs(fine["params"]["cell_fraction"] - coarse["params"]["cell_fraction"]) < 0.25


@pytest.mark.parametrize(
    "kwargs",
    [{"height": 10}, {"width": 1.5}, {"pixel_size_um": 0.0}, {"bubbles": -1}, {"bubble_probability": 2.0}],
)
def test_invalid_options_are_rejected(kwargs: dict) -> None:
    with pytest.raises(OptionError, match=next(iter(kwargs))):
        simulate_field(np.random.default_rng(0), **{**SMALL, **kwargs})


def test_dataset_rejects_bad_counts(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="images"):
        simulate_brightfield_dataset(tmp_path, images=0)
    with pytest.raises(OptionError, match="seed"):
        simulate_brightfield_dataset(tmp_path, images=1, seed=-1)
