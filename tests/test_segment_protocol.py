"""``cytolens segment train / predict / evaluate`` end to end on tiny hand-made image/label pairs.

One run (2 folds, 1 epoch of 8 patches of 32 px, a 4-8 filter U-Net) is trained once per module and shared by
the read-only tests; tests that train again use their own folder.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import yaml

from cytolens.core.config import load_config
from cytolens.core.errors import CytolensError
from cytolens.data.io import write_tiff
from cytolens.segment.config import SegmentConfig
from cytolens.segment.evaluate import evaluate_run, table1, table1_markdown
from cytolens.segment.predict import load_segment_run
from cytolens.segment.training import run_training

TINY = {
    "name": "tiny", "deviations": ["test size"], "model": "unet",
    "model_options": {"filters": [4, 8], "bottleneck": 8}, "patch_size": 32, "patches_per_epoch": 8,
    "batch_size": 4, "epochs": 1, "folds": 2,
    "augmentation": {"max_shift": 8, "elastic_probability": 0.5},
    "inference": {"tile": 64, "overlap": 8, "batch_size": 2},
}


def make_pairs(root: Path, *, images: int = 4, size: int = 64, classes: int = 3, seed: int = 0) -> Path:
    """Bright-field-like images with cells (class 2) around nuclei (class 1); with 2 classes, cells are 1."""
    rng = np.random.default_rng(seed)
    rows, cols = np.indices((size, size))
    for i in range(images):
        label = np.zeros((size, size), np.uint8)
        for _ in range(3):
            y, x = rng.integers(10, size - 10, 2)
            distance = np.hypot(rows - y, cols - x)
            label[distance < 9] = classes - 1
            if classes == 3:
                label[distance < 4] = 1
        image = 1000 + 300 * label.astype(float) + rng.normal(0, 40, (size, size))
        write_tiff(root / "images" / f"field_{i:02d}.tif", image.astype(np.uint16))
        write_tiff(root / "labels" / f"field_{i:02d}.tif", label)
    return root


def write_config(path: Path, **changes: object) -> Path:
    path.write_text(yaml.safe_dump({**TINY, **changes}))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("segment")
    data = make_pairs(base / "data")
    config = load_config(write_config(base / "tiny.yaml"), SegmentConfig)
    return data, run_training(data, config, base / "run")


def test_run_folder_and_image_level_folds(trained: tuple[Path, Path]) -> None:
    data, run = trained
    for name in ("run.json", "config.yaml", "manifest.parquet", "data_check.json", "done.json"):
        assert (run / name).is_file()
    info = json.loads((run / "run.json").read_text())
    assert info["kind"] == "segment" and info["world_size"] == 1 and len(info["data_fingerprint"]) == 64
    manifest = pd.read_parquet(run / "manifest.parquet")
    assert {"path", "label_path", "stem", "group", "split", "fold"} <= set(manifest.columns)
    assert manifest["stem"].is_unique and sorted(manifest["fold"].unique()) == [0, 1]
    validated = []
    for fold in (0, 1):
        assert (run / "checkpoints" / f"fold{fold}.pt").is_file()
        assert not (run / "folds" / f"fold{fold}" / "resume.pt").exists()  # removed once the fold is done
        done = json.loads((run / "folds" / f"fold{fold}" / "done.json").read_text())
        assert done["samples_per_s"] > 0 and done["stopped"] == "epochs" and done["epochs_run"] == 1
        assert not set(done["train_images"]) & set(done["val_images"])
        assert sorted(done["val_images"]) == sorted(manifest.loc[manifest["fold"] == fold, "stem"])
        validated += done["val_images"]
        history = pd.read_csv(run / "folds" / f"fold{fold}" / "history.csv")
        assert list(history.columns) == ["epoch", "train_loss", "val_loss", "val_mean_dice", "lr", "seconds"]
        assert 0 <= history["val_mean_dice"].iloc[-1] <= 1
    assert sorted(validated) == sorted(manifest["stem"])  # every image in exactly one validation fold


def test_rerun_skips_finished_folds_and_refuses_another_config(trained, tmp_path: Path) -> None:
    data, run = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "folds" / "fold1" / "done.json").unlink()  # as if interrupted during fold 1
    before = (copy / "folds" / "fold0" / "done.json").stat().st_mtime_ns
    config = load_config(copy / "config.yaml", SegmentConfig)
    run_training(data, config, copy)
    assert (copy / "folds" / "fold0" / "done.json").stat().st_mtime_ns == before
    assert (copy / "folds" / "fold1" / "done.json").is_file()
    with pytest.raises(CytolensError, match="different config"):
        run_training(data, config.model_copy(update={"seed": 5}), copy)


def test_evaluate_training_data_is_out_of_fold_only(trained, tmp_path: Path) -> None:
    data, run = trained
    summary = evaluate_run(run, data)
    assert summary["mode"].startswith("training data: out-of-fold")
    assert summary["scored_out_of_fold"] == 4 and summary["scored_by_ensemble"] == 0
    folder = run / "evaluation"
    for name in ("metrics.json", "per_image.csv", "confusion.csv", "table1.md", "table1.csv"):
        assert (folder / name).is_file()
    manifest = pd.read_parquet(run / "manifest.parquet").set_index("stem")
    per_image = pd.read_csv(folder / "per_image.csv")
    for stem, scored_by in zip(per_image["stem"], per_image["scored_by"]):
        assert scored_by == f"fold {manifest.loc[stem, 'fold']} (out-of-fold)"
    assert json.loads((folder / "metrics.json").read_text())["definition"].startswith("dice of class c")
    table = pd.read_csv(folder / "table1.csv")
    assert list(table["quantity"]) == ["parameters", "validation dice", "CV dice", "dice on evaluated data"]
    assert int(table.loc[0, "paper"]) == 1_942_023
    # Other classes than the paper's (here renamed): another task, so the paper's column is absent, not blank.
    loaded = load_segment_run(run)
    renamed_classes = dataclasses.replace(
        loaded, config=loaded.config.model_copy(update={"classes": ["medium", "nucleus", "cell"]}))
    other = table1(renamed_classes)
    assert "paper" not in other.columns and list(other["quantity"])[0] == "parameters"
    assert "paper:" not in table1_markdown(other, renamed_classes)
    # A renamed copy of a training image is still recognised by its content, and scored out-of-fold.
    renamed = tmp_path / "renamed"
    for kind in ("images", "labels"):
        (renamed / kind).mkdir(parents=True)
        shutil.copy(data / kind / "field_00.tif", renamed / kind / "copy.tif")
    assert evaluate_run(run, renamed, out=tmp_path / "e1")["scored_out_of_fold"] == 1
    # New images are scored by the ensemble of the fold models.
    new = make_pairs(tmp_path / "new", images=1, size=80, seed=9)
    summary = evaluate_run(run, new, out=tmp_path / "e2")
    assert summary["scored_by_ensemble"] == 1 and summary["mode"].startswith("new data: ensemble of folds 0, 1")


def test_predict_writes_labels_overlays_and_cells(trained, tmp_path: Path, cli) -> None:
    data, run = trained
    out = tmp_path / "pred"
    cli("segment", "predict", run, data, "--out", out, "--cells", "--prob")
    for stem in (f"field_{i:02d}" for i in range(4)):
        labels = tifffile.imread(out / f"{stem}.tif")
        assert labels.ndim == 2 and labels.dtype == np.uint8 and labels.max() < 3
        assert (out / f"{stem}_overlay.png").is_file() and (out / f"{stem}_cells.tif").is_file()
        assert tifffile.imread(out / f"{stem}_prob.tif").shape[0] == 3
    cells = pd.read_csv(out / "cells.csv")
    for column in ("Metadata_image", "Metadata_cell_id", "Cells_AreaShape_Area", "Nuclei_AreaShape_Area",
                   "Cells_AreaShape_NucleusCytoplasmRatio", "Cells_Location_Center_X", "Cells_Location_Center_Y"):
        assert column in cells.columns
    assert json.loads((out / "prediction.json").read_text())["model"].startswith("ensemble of folds 0, 1")


def test_pixel_sizes_come_from_the_files_into_cells_csv(trained, tmp_path: Path, cli) -> None:
    data, _ = trained
    # Trained long enough (6 epochs of 32 patches) to find cells, so cells.csv has rows to check.
    config = load_config(write_config(tmp_path / "c.yaml", train_folds=[0], epochs=6, patches_per_epoch=32,
                                      lr=0.01, validate_every=6), SegmentConfig)
    run = run_training(data, config, tmp_path / "run")
    images = tmp_path / "calibrated"
    images.mkdir()
    pixels = tifffile.imread(data / "images" / "field_00.tif")
    tifffile.imwrite(images / "ome.ome.tif", pixels, ome=True,
                     metadata={"axes": "YX", "PhysicalSizeX": 500, "PhysicalSizeY": 500,
                               "PhysicalSizeXUnit": "nm", "PhysicalSizeYUnit": "nm"})
    tifffile.imwrite(images / "imagej.tif", pixels, imagej=True, resolution=(4.0, 4.0), metadata={"unit": "micron"})
    tifffile.imwrite(images / "plain.tif", pixels)
    out = tmp_path / "pred"
    cli("segment", "predict", run, images, "--out", out, "--cells")
    table = pd.read_csv(out / "images.csv", keep_default_na=False).set_index("stem")
    assert table.loc["ome", "pixel_size_from"] == "OME-XML" and float(table.loc["ome", "pixel_size_um"]) == 0.5
    assert table.loc["imagej", "pixel_size_from"] == "ImageJ" and float(table.loc["imagej", "pixel_size_um"]) == 0.25
    assert table.loc["plain", "pixel_size_from"] == "" and table.loc["plain", "pixel_size_um"] == ""
    cells = pd.read_csv(out / "cells.csv")
    for image, area in (("ome", 0.25), ("imagej", 0.0625)):
        rows = cells[cells["Metadata_image"] == image]
        assert len(rows) > 0
        np.testing.assert_allclose(rows["Cells_AreaShape_Area_um2"], rows["Cells_AreaShape_Area"] * area)
    assert cells.loc[cells["Metadata_image"] == "plain", "Cells_AreaShape_Area_um2"].isna().all()
    # --pixel-size overrides every file's own calibration.
    cli("segment", "predict", run, images, "--out", tmp_path / "override", "--cells", "--pixel-size", "2")
    table = pd.read_csv(tmp_path / "override" / "images.csv").set_index("stem")
    assert set(table["pixel_size_from"]) == {"--pixel-size"} and set(table["pixel_size_um"]) == {2.0}


def test_predict_model_is_now_final_model_and_the_old_spelling_warns(trained, tmp_path: Path, cli) -> None:
    data, run = trained
    # The old spelling's value reaches --final-model, whose check names it.
    result = cli("segment", "predict", run, data, "--out", tmp_path / "pred", "--model", "best", code=2)
    assert result.err.splitlines()[0] == ("warning: --model is deprecated and will be removed in the next release; "
                                          "use --final-model")
    assert "--final-model" in result.error and not (tmp_path / "pred").exists()


def test_config_and_data_errors_are_one_line(trained, tmp_path: Path, cli) -> None:
    data, _ = trained
    cases = [
        (write_config(tmp_path / "a.yaml", learning_rate=1), "'learning_rate': unknown key"),
        (write_config(tmp_path / "b.yaml", model="unett"), "Did you mean 'unet'"),
        (write_config(tmp_path / "c.yaml", train_folds=[2]), "train_folds"),
        (write_config(tmp_path / "d.yaml", patch_size=96), "smaller than the 96×96 training patch"),
        (write_config(tmp_path / "e.yaml", patch_size=30), "multiple of 4"),
    ]
    for config, message in cases:
        error = cli("segment", "train", data, "--config", config, "--out", tmp_path / "r", code=2).error
        assert message in error, error


def test_two_classes_and_a_subset_of_folds(tmp_path: Path, cli) -> None:
    data = make_pairs(tmp_path / "data", images=4, classes=2)
    config = write_config(tmp_path / "k2.yaml", train_folds=[0])
    run = tmp_path / "run"
    stdout = cli("segment", "train", data, "--config", config, "--out", run, "--classes", "background,cell").out
    assert "Table 1" in stdout
    assert not (run / "folds" / "fold1").exists()
    stdout = cli("segment", "evaluate", run, data).out
    summary = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert summary["scored_out_of_fold"] == 2 and len(summary["skipped"]) == 2  # fold 1's images would leak
    assert set(summary["dice"]) == {"background", "cell"} and "2 images skipped" in stdout
    out = tmp_path / "pred"
    cli("segment", "predict", run, data / "images", "--out", out)
    assert tifffile.imread(out / "field_00.tif").max() < 2
    assert "nucleus" in cli("segment", "predict", run, data, "--out", out, "--cells", code=2).error


@pytest.mark.parametrize("name", ["midl2019-unet", "midl2019-tiramisu", "midl2019-deeplab", "midl2019-quick"])
def test_shipped_configs_state_the_papers_settings(name: str) -> None:
    from cytolens.segment.training import _check_sizes, new_model

    config = load_config(name, SegmentConfig)
    assert config.deviations and config.name == name
    _check_sizes(new_model(config), config)  # patch and tile fit the model's down-sampling
    if name == "midl2019-quick":
        return
    assert (config.patch_size, config.batch_size, config.epochs, config.lr, config.lr_halving_epochs) == (
        224, 3, 300, 1e-3, 50)
    assert config.augmentation.max_shift == 122 and config.augmentation.elastic_sigma == 15
    assert config.augmentation.elastic_points == 2 and config.augmentation.dihedral
    assert config.resolved_l2() == (1e-4 if config.model == "unet" else 0.0)
    if name == "midl2019-deeplab":
        assert config.folds == 5 and config.folds_to_train() == [0, 1, 2, 3, 4]
    else:  # the 153/17 hold-out as fold 0 of 10
        assert config.folds == 10 and config.folds_to_train() == [0]


@pytest.mark.parametrize("model", ["unet", "tiramisu", "deeplab"])
def test_cpu_configs_keep_the_papers_model_patches_and_optimiser(model: str) -> None:
    paper = load_config(f"midl2019-{model}", SegmentConfig)
    cpu = load_config(f"midl2019-{model}-cpu", SegmentConfig)
    # Only the schedule and the split may differ, and each difference is written down.
    same = ("model", "model_options", "patch_size", "batch_size", "lr", "l2", "augmentation", "intensity", "classes")
    assert {key: getattr(cpu, key) for key in same} == {key: getattr(paper, key) for key in same}
    assert cpu.epochs < paper.epochs and cpu.max_minutes is not None
    text = " ".join(cpu.deviations)
    assert f"{cpu.epochs} epochs of {cpu.patches_per_epoch} patches" in text and "fold 0" in text


def test_time_budget_stops_before_an_epoch_that_would_not_fit(tmp_path: Path) -> None:
    import time

    from cytolens.engine import TimeBudget

    # 8-minute epochs, a 60-minute budget: at 56 minutes another epoch would end at 64, so this one is the last.
    now = time.perf_counter()
    assert TimeBudget(60, started=now - 56 * 60, durations=[480.0] * 7).next_would_overrun()
    assert not TimeBudget(60, started=now - 48 * 60, durations=[480.0] * 6).next_would_overrun()
    assert not TimeBudget(None, started=now - 1e9, durations=[480.0]).next_would_overrun()
    # A fold whose first epoch used up the budget stops after it (validated, its weights kept), not one later.
    data = make_pairs(tmp_path / "data", images=2)
    config = load_config(write_config(tmp_path / "c.yaml", epochs=3, validate_every=3, train_folds=[0],
                                      max_minutes=1e-4), SegmentConfig)
    run = run_training(data, config, tmp_path / "run")
    done = json.loads((run / "folds" / "fold0" / "done.json").read_text())
    assert done["stopped"] == "max_minutes" and done["epochs_run"] == 1 and done["best_epoch"] == 1


def test_curves_put_runs_on_a_common_patch_axis(trained, tmp_path: Path, cli) -> None:
    from cytolens.segment.curves import training_curves

    _, run = trained
    table = training_curves({"tiny": run})
    history = pd.read_csv(run / "folds" / "fold0" / "history.csv")
    fold0 = table[table["fold"] == 0]
    assert list(fold0["patches"]) == [epoch * TINY["patches_per_epoch"] for epoch in history["epoch"]]
    result = cli("segment", "curves", run, "--out", tmp_path / "curves", "--labels", "tiny")
    assert "tiny: best validation mean dice" in result.out and "warning" not in result.err
    assert (tmp_path / "curves" / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "curves" / "curves.csv").is_file()
    assert "--labels" in cli("segment", "curves", run, "--out", tmp_path / "d", "--labels", "a,b", code=2).error


def test_curves_out_as_a_png_path_still_works_with_a_deprecation_warning(trained, tmp_path: Path, cli) -> None:
    _, run = trained
    result = cli("segment", "curves", run, "--out", tmp_path / "c.png", "--labels", "tiny")
    warnings = [line for line in result.err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and f"--out {tmp_path / 'c.png'}" in warnings[0] and "deprecated" in warnings[0]
    assert "tiny: best validation mean dice" in result.out
    assert (tmp_path / "c.png").read_bytes().startswith(b"\x89PNG") and (tmp_path / "c.csv").is_file()
