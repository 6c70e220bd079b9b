"""Cell cropping: positions against the simulator's truth, masking, borders, normalisations, index, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cytolens.data.bbbc021 import IMAGE_CSV, MOA_CSV, read_bbbc021
from cytolens.core.errors import CytolensError, LayoutError, OptionError
from cytolens.profile.crops.cell_segmentation import classical_segmenter, make_segmenter, segment_nuclei
from cytolens.profile.crops.cell_store import CellStore
from cytolens.profile.crops.examples import plot_crop_examples
from cytolens.profile.crops.normalisation import PlateStatistics, normalise_field, plate_statistics
from cytolens.profile.crops.crop import INDEX_COLUMNS, PARTS, crop_dataset, extract_crops, read_field
from cytolens.synthetic.cellpainting.simulate import simulate_cellpainting_dataset


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sim") / "tiny"
    simulate_cellpainting_dataset(root, scale="tiny", seed=1)
    return root


@pytest.fixture(scope="module")
def cells(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> CellStore:
    return CellStore(crop_dataset(tiny, tmp_path_factory.mktemp("cells") / "store"))


def _subset(tiny: Path, root: Path, fields: int = 6) -> Path:
    """A smaller BBBC021-layout dataset: the first fields of two plates, the same files (linked)."""
    root.mkdir(parents=True)
    table = pd.read_csv(tiny / IMAGE_CSV)
    plates = table["Image_Metadata_Plate_DAPI"].unique()[:2]
    table = pd.concat([table[table["Image_Metadata_Plate_DAPI"] == p].head(fields // 2) for p in plates])
    table.to_csv(root / IMAGE_CSV, index=False)
    (root / MOA_CSV).write_bytes((tiny / MOA_CSV).read_bytes())
    for plate in plates:
        (root / plate).symlink_to(tiny / plate, target_is_directory=True)
    return root


def test_crop_positions_match_the_simulators_truth(tiny: Path, cells: CellStore) -> None:
    truth = pd.read_csv(tiny / "cells.csv")
    index = cells.index
    errors = []
    for number, crops in index.groupby("Metadata_ImageNumber"):
        field = truth[truth["ImageNumber"] == number]
        for x, y in zip(crops["Metadata_Cell_X"], crops["Metadata_Cell_Y"]):
            errors.append(np.hypot(field["bbox_x"] - x, field["bbox_y"] - y).min())
    errors = np.asarray(errors)
    assert len(errors) > 200
    assert np.median(errors) <= 2.0 and (errors <= 5).mean() >= 0.8
    # Most interior true cells were found.
    interior = truth[(truth["bbox_x"].between(48, 207)) & (truth["bbox_y"].between(48, 207)) & ~truth["touches_border"]]
    assert len(index) >= 0.8 * len(interior)


def test_index_columns_metadata_and_moa(tiny: Path, cells: CellStore) -> None:
    index = cells.index
    assert tuple(index.columns) == INDEX_COLUMNS
    assert index["Metadata_Site"].dtype.kind == "i" and index["Metadata_Concentration"].dtype.kind == "f"
    assert index["Metadata_Cell_X"].dtype.kind == "f" and index["Metadata_Cell_Area"].dtype.kind == "i"
    assert (index["Metadata_Nucleus_Area"] > 0).all()
    assert (index["Metadata_Cell_Area"] >= index["Metadata_Nucleus_Area"]).all()
    assert set(index["Metadata_Batch"]) == {"Week1", "Week2"}
    dmso = index[index["Metadata_Compound"] == "DMSO"]
    assert (dmso["Metadata_MOA"] == "DMSO").all()
    unannotated = index[index["Metadata_Compound"] == "hydroxyurea"]
    assert len(unannotated) > 0 and unannotated["Metadata_MOA"].isna().all()
    fields = read_bbbc021(tiny).set_index("ImageNumber")
    sample = index.iloc[::37]
    for row in sample.itertuples(index=False):
        field = fields.loc[row.Metadata_ImageNumber]
        assert (row.Metadata_Plate, row.Metadata_Well, row.Metadata_Site) == (field.Plate, field.Well, field.Site)
    meta = cells.metadata
    assert meta["crop_size"] == 96 and meta["normalisation"] == "crop_max" and meta["mask_neighbours"] is False
    assert meta["segmentation"] == "classical" and meta["source"] == str(tiny.resolve())
    assert sum(p["cells"] for p in meta["plates"].values()) == len(cells)
    assert meta["skipped_border"] == sum(p["skipped_border"] for p in meta["plates"].values()) > 0


def test_crop_max_scales_every_channel_of_every_crop_to_one(cells: CellStore) -> None:
    crops = cells.crops(np.arange(0, len(cells), 5))
    assert crops.shape[1:] == (96, 96, 3) and crops.dtype == np.float32
    assert np.allclose(crops.max(axis=(1, 2)), 1.0)
    assert crops.min() >= 0.0


def test_store_round_trip_reproduces_the_crops(tiny: Path, cells: CellStore) -> None:
    row = read_bbbc021(tiny).iloc[0]
    raw = read_field(row)
    nuclei, labels = classical_segmenter()(*raw)
    crops, rows, _ = extract_crops(raw, nuclei, labels)
    crops = crops / crops.max(axis=(1, 2), keepdims=True)
    stored = cells.index.index[cells.index["Metadata_ImageNumber"] == row["ImageNumber"]].to_numpy()
    assert len(stored) == len(crops) > 0
    assert np.abs(cells.crops(stored) - crops).max() <= 0.5 / 255 + 1e-6


def test_extract_crops_masks_neighbours_and_handles_borders() -> None:
    image = np.ones((3, 120, 120), dtype=np.float32)
    cells = np.zeros((120, 120), dtype=np.int32)
    cells[50:70, 50:70] = 1  # centred cell
    cells[50:70, 72:90] = 2  # its neighbour
    cells[2:20, 2:20] = 3  # too close to the corner for a 96 px crop
    nuclei = np.where(cells > 0, cells, 0)
    crops, rows, skipped = extract_crops(image, nuclei, cells, crop_size=96, mask_neighbours=True)
    assert skipped == 2 and rows["Metadata_ObjectNumber"].tolist() == [1]
    assert rows["Metadata_Cell_X"].iloc[0] == 59.5 and rows["Metadata_Cell_Area"].iloc[0] == 400
    crop = crops[0]
    # Crop rows/cols: the window starts at 60 - 48 = 12, so the neighbour sits at columns 60..77.
    assert (crop[38:58, 60:78] == 0).all() and (crop[38:58, 38:58] == 1).all() and crop[95, 95, 0] == 1
    assert (crop[:8, :8] == 0).all()  # the corner cell is a neighbour too
    kept, _, _ = extract_crops(image, nuclei, cells, crop_size=96, mask_neighbours=False)
    assert (kept[0][38:58, 60:78] == 1).all()
    padded, rows, skipped = extract_crops(image, nuclei, cells, crop_size=96, border="pad")
    assert skipped == 0 and len(padded) == 3
    corner = padded[rows["Metadata_ObjectNumber"].tolist().index(3)]
    assert (corner[:30, :30] == 0).all() and (corner[60:, 60:] == 1).all()


def test_plate_normalisations_map_to_the_unit_range(tiny: Path, tmp_path: Path) -> None:
    data = _subset(tiny, tmp_path / "data")
    for method in ("plate_percentile", "illumination"):
        store = CellStore(crop_dataset(data, tmp_path / method, normalisation=method, sample_fields=3))
        crops = store.crops()
        assert 0.0 <= crops.min() and crops.max() <= 1.0
        peaks = crops.max(axis=(1, 2))
        assert not np.allclose(peaks, 1.0)  # brightness differences between cells survive
        assert store.metadata["normalisation"] == method


def test_illumination_correction_recovers_a_smooth_illumination() -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:64, 0:96]
    light = (1.0 + 0.4 * (x / 95.0) - 0.2 * ((y - 32) / 32.0) ** 2).astype(np.float32)
    fields = [np.stack([light * (500 + rng.normal(0, 20, light.shape))] * 3).astype(np.float32) for _ in range(6)]
    stats = plate_statistics([lambda f=f: f for f in fields], illumination=True)
    corrected = fields[0] / stats.illumination_at((64, 96))
    assert corrected[0, :, 80:].mean() / corrected[0, :, :16].mean() == pytest.approx(1.0, abs=0.05)
    normalised = normalise_field(fields[0], stats)
    assert normalised.min() >= 0 and normalised.max() <= 1
    stats_path = Path("unused")
    assert isinstance(stats, PlateStatistics) and stats_path.name == "unused"


def test_neighbours_are_masked_in_the_store(tiny: Path, tmp_path: Path) -> None:
    data = _subset(tiny, tmp_path / "data", fields=2)
    store = CellStore(crop_dataset(data, tmp_path / "masked", mask_neighbours=True))
    row = read_bbbc021(data).iloc[0]
    raw = read_field(row)
    _, labels = classical_segmenter()(*raw)
    first = store.index.iloc[0]
    label = int(first["Metadata_ObjectNumber"])
    top = int(np.floor(first["Metadata_Cell_Y"] + 0.5)) - 48
    left = int(np.floor(first["Metadata_Cell_X"] + 0.5)) - 48
    window = labels[top : top + 96, left : left + 96]
    crop = store.crops([0])[0]
    others = (window != 0) & (window != label)
    assert store.metadata["mask_neighbours"] is True
    assert others.any() and (crop[others] == 0).all()


def test_interrupted_run_never_looks_complete_and_resumes(tiny: Path, tmp_path: Path) -> None:
    data = _subset(tiny, tmp_path / "data")
    out = tmp_path / "cells"
    calls = []

    def interrupt(n: int) -> None:
        calls.append(n)
        if len(calls) == 4:  # during the second plate
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        crop_dataset(data, out, progress=interrupt)
    with pytest.raises(LayoutError, match="not a complete cell store"):
        CellStore(out)
    finished = [p for p in (out / PARTS).iterdir() if (p / "store.json").is_file()]
    assert len(finished) == 1
    resumed = CellStore(crop_dataset(data, out))
    assert not (out / PARTS).exists()
    fresh = CellStore(crop_dataset(data, tmp_path / "fresh"))
    pd.testing.assert_frame_equal(resumed.index, fresh.index)
    assert np.array_equal(resumed.crops(), fresh.crops())
    # A complete store is returned as it is; other settings in the same folder are refused.
    assert crop_dataset(data, out) == out
    with pytest.raises(CytolensError, match="other settings"):
        crop_dataset(data, out, crop_size=64)


def test_workers_give_the_same_store(tiny: Path, tmp_path: Path) -> None:
    data = _subset(tiny, tmp_path / "data")
    one = CellStore(crop_dataset(data, tmp_path / "one"))
    two = CellStore(crop_dataset(data, tmp_path / "two", workers=2))
    pd.testing.assert_frame_equal(one.index, two.index)


def test_options_are_validated(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="Did you mean 'crop_max'"):
        crop_dataset(tiny, tmp_path / "x", normalisation="cropmax")
    with pytest.raises(OptionError, match="border"):
        crop_dataset(tiny, tmp_path / "x", border="wrap")
    with pytest.raises(OptionError, match="segment:RUN"):
        make_segmenter("watershed")
    with pytest.raises(CytolensError, match="not a .*run folder"):
        crop_dataset(tiny, tmp_path / "x", segmentation=f"segment:{tmp_path}")


def test_segment_nuclei_splits_touching_nuclei_and_ignores_empty_fields() -> None:
    image = np.full((80, 120), 100.0, dtype=np.float32)
    y, x = np.mgrid[0:80, 0:120]
    for cx in (45, 63):  # two discs of radius 10 overlapping a little
        image[(y - 40) ** 2 + (x - cx) ** 2 <= 100] = 3000.0
    image += np.random.default_rng(0).normal(0, 10, image.shape).astype(np.float32)
    labels = segment_nuclei(image)
    assert labels.max() == 2
    assert labels[40, 45] != labels[40, 63]
    flat = np.random.default_rng(1).normal(300, 10, (64, 64)).astype(np.float32)
    assert segment_nuclei(flat).max() == 0


def test_cli_crop_prints_cells_per_plate_and_the_figure(tiny: Path, tmp_path: Path, cli) -> None:
    data = _subset(tiny, tmp_path / "data")
    result = cli("profile", "crop", data, "--out", tmp_path / "cells", "--normalization", "plate_percentile")
    assert "deprecated" not in result.err
    text = result.out
    assert "cells per plate" in text and "skipped at border" in text
    store = CellStore(tmp_path / "cells")
    assert json.loads((tmp_path / "cells" / "store.json").read_text())["normalisation"] == "plate_percentile"
    png = plot_crop_examples(store, tmp_path / "examples.png", per_moa=3)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_trained_segment_run_can_replace_the_classical_segmentation(tiny: Path, tmp_path: Path) -> None:
    from cytolens.data.io import write_tiff
    from cytolens.segment.config import SegmentConfig
    from cytolens.segment.training import run_training

    data = _subset(tiny, tmp_path / "data", fields=2)
    pairs = tmp_path / "pairs"
    for k, (_, row) in enumerate(read_bbbc021(data).iterrows()):
        raw = read_field(row)
        nuclei, labels = classical_segmenter()(*raw)
        classes = np.where(nuclei > 0, 1, np.where(labels > 0, 2, 0)).astype(np.uint8)
        write_tiff(pairs / "images" / f"field_{k}.tif", np.moveaxis(raw, 0, -1).astype(np.uint16))
        write_tiff(pairs / "labels" / f"field_{k}.tif", classes)
    config = SegmentConfig(
        name="tiny", in_chans=3, model="unet", model_options={"filters": [4, 8], "bottleneck": 8}, patch_size=32,
        patches_per_epoch=8, batch_size=4, epochs=1, folds=2, augmentation={"max_shift": 8},
        inference={"tile": 128, "overlap": 8, "batch_size": 4}, num_threads=1,
    )
    run = run_training(pairs, config, tmp_path / "run")
    store = CellStore(crop_dataset(data, tmp_path / "cells", segmentation=f"segment:{run}", border="pad"))
    assert store.metadata["segmentation"] == f"segment:{run}"
    assert tuple(store.index.columns) == INDEX_COLUMNS
    assert store.metadata["plates"] and all(p["problems"] == [] for p in store.metadata["plates"].values())


def test_cli_crop_exits_1_listing_unusable_fields_as_data_check_does(tiny: Path, tmp_path: Path, cli) -> None:
    import shutil

    from cytolens.data.bbbc021 import read_bbbc021
    from cytolens.data.io import write_tiff

    linked = _subset(tiny, tmp_path / "linked")
    data = tmp_path / "data"
    shutil.copytree(linked, data, symlinks=False)  # own copies of the plate folders, to damage
    fields = read_bbbc021(data)
    rgb = Path(fields.iloc[0]["path_Actin"])
    write_tiff(rgb, np.zeros((32, 32, 3), np.uint16))
    truncated = Path(fields.iloc[1]["path_DAPI"])
    truncated.write_bytes(truncated.read_bytes()[:300])
    err = cli("profile", "crop", data, "--out", tmp_path / "cells", code=1).err
    assert f"{rgb}: the Actin image must have one channel, got 3" in err.replace("\n", "")
    assert str(truncated) in err.replace("\n", "")
    assert len(CellStore(tmp_path / "cells")) > 0
