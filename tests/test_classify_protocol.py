"""The classification protocol end to end on a tiny simulated dataset (1 epoch, 2 folds, 32×32)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cytolens.classify.config import ClassifyConfig
from cytolens.data.tasks import build_tasks
from cytolens.classify.training import run_protocol
from cytolens.core.config import validate_config
from cytolens.core.errors import CytolensError
from cytolens.synthetic import simulate_microtubule_dataset

TINY = {
    "name": "tiny",
    "classes": ["0", "0.1", "1"],
    "test_per_class": 2,
    "input_size": 32,
    "folds": 2,
    "training": {"max_epochs": 1, "batch_size": 8},
    "xgboost": {"n_estimators": 5},
    "gradcam_examples": 1,
}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mt")
    simulate_microtubule_dataset(root, per_class=6, size=64, seed=3)
    return root


@pytest.fixture(scope="module")
def tiny_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    return run_protocol(tiny_data, validate_config(TINY, ClassifyConfig), out)


def test_every_output_file_is_written(tiny_run: Path) -> None:
    for name in ("config.yaml", "manifest.parquet", "data_check.json", "metrics.json", "predictions.csv",
                 "table_iv.csv", "table_iv.md", "features.parquet", "figures/accuracy.png"):
        assert (tiny_run / name).is_file(), name
    tasks = ["3_classes", "0_vs_0.1", "0_vs_1", "0.1_vs_1"]
    for task in tasks:
        for variant in ("CNN", "CNNpT", "CNNpTpS"):
            assert (tiny_run / "figures" / "learning_curves" / f"{task}__{variant}.png").is_file()
            assert (tiny_run / "figures" / "reliability" / f"{task}__{variant}.png").is_file()
            assert (tiny_run / "confusion" / f"{task}__{variant}.csv").is_file()
        assert (tiny_run / "confusion" / f"{task}__XGBoost.csv").is_file()
        assert (tiny_run / "figures" / "gradcam" / f"{task}.png").is_file()
        assert len(list((tiny_run / "checkpoints" / task / "cnn_t_s").glob("fold*.pt"))) == 2


def test_metrics_and_tables(tiny_run: Path) -> None:
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert list(metrics["tasks"]) == ["3 classes", "0 vs 0.1", "0 vs 1", "0.1 vs 1"]
    three = metrics["tasks"]["3 classes"]
    assert set(three["methods"]) == {"CNN", "CNN+T", "CNN+T+S", "XGBoost"}
    for values in three["methods"].values():
        low, high = values["ci95"]
        assert 0 <= low <= values["accuracy"] <= high <= 1
        assert np.asarray(values["confusion_matrix"]).sum() == three["n_test"] == 6
        assert 0 <= values["ece"] <= 1
    assert len(three["paired_tests"]) == 6  # 4 methods, every pair
    assert all(0 <= t["mcnemar_p"] <= 1 for t in three["paired_tests"])
    table = pd.read_csv(tiny_run / "table_iv.csv")
    assert table.loc[table["task"] == "0.1 vs 1", "paper CNN+T+S"].item() == 70.5
    assert {"CNN", "CNN+T", "CNN+T+S", "XGBoost", "CNN 95% CI"} <= set(table.columns)
    assert "| 3 classes |" in (tiny_run / "table_iv.md").read_text()


def test_predictions_cover_every_test_image_with_probabilities(tiny_run: Path) -> None:
    predictions = pd.read_csv(tiny_run / "predictions.csv", dtype={"class": str, "predicted": str})
    manifest = pd.read_parquet(tiny_run / "manifest.parquet")
    test_paths = set(manifest.loc[manifest["split"] == "test", "path"])
    three = predictions[(predictions["task"] == "3 classes") & (predictions["method"] == "CNN+T+S")]
    assert set(three["path"]) == test_paths
    np.testing.assert_allclose(three[["p_0", "p_0.1", "p_1"]].sum(axis=1), 1, atol=1e-5)
    pair = predictions[(predictions["task"] == "0 vs 1") & (predictions["method"] == "CNN")]
    assert pair["p_0.1"].isna().all() and set(pair["class"]) == {"0", "1"}


def test_no_test_image_reaches_training(tiny_run: Path) -> None:
    manifest = pd.read_parquet(tiny_run / "manifest.parquet")
    test = manifest[manifest["split"] == "test"]
    train = manifest[manifest["split"] == "train"]
    assert (test["fold"] == -1).all() and (train["fold"] >= 0).all()
    assert set(test["group"]).isdisjoint(train["group"])
    assert test.groupby("class").size().to_dict() == {"0": 2, "0.1": 2, "1": 2}
    # Each unit trained on exactly its task's training images outside its fold (×4 with rotations).
    for done in (tiny_run / "units").glob("*/*/fold*/done.json"):
        record = json.loads(done.read_text())
        task = next(t for t in build_tasks(["0", "0.1", "1"], ["all", "pairwise"]) if t.name == record["task"])
        in_fold = train["class"].isin(task.classes) & (train["fold"] != record["fold"])
        copies = 4 if "+T" in record["variant"] else 1
        assert record["train_images"] == copies * int(in_fold.sum())
        assert record["val_images"] == int((train["class"].isin(task.classes) & (train["fold"] == record["fold"])).sum())


def test_rerun_resumes_without_retraining(tiny_run: Path, tiny_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cytolens.classify.training as protocol

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished unit was trained again")

    monkeypatch.setattr(protocol, "fit_classifier", fail)
    before = (tiny_run / "metrics.json").read_text()
    run_protocol(tiny_data, validate_config(TINY, ClassifyConfig), tiny_run)
    assert (tiny_run / "metrics.json").read_text() == before


def test_a_different_config_does_not_reuse_a_run_folder(tiny_run: Path, tiny_data: Path) -> None:
    changed = validate_config({**TINY, "seed": 7}, ClassifyConfig)
    with pytest.raises(CytolensError, match="different config"):
        run_protocol(tiny_data, changed, tiny_run)


def test_unreadable_images_stop_the_protocol_with_one_line(tiny_data: Path, tmp_path: Path) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    (data / "0" / "broken.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(CytolensError, match="1 unreadable image"):
        run_protocol(data, validate_config(TINY, ClassifyConfig), tmp_path / "run")


def test_build_tasks_from_class_names() -> None:
    tasks = build_tasks(["a", "b", "c"], ["all", "pairwise"])
    assert [t.name for t in tasks] == ["3 classes", "a vs b", "a vs c", "b vs c"]
    assert [t.name for t in build_tasks(["x", "y"], ["all", "pairwise"])] == ["2 classes"]
    assert build_tasks(["0", "0.1", "1"], ["1 vs 0"])[0].classes == ("0", "1")
    with pytest.raises(Exception, match="unknown task"):
        build_tasks(["0", "1"], ["0 vs 5"])


def _split_copy(tiny_data: Path, root: Path, *, test_classes: tuple[str, ...]) -> Path:
    """Copy the tiny dataset into DATA/train/ (4 per class) and DATA/test/ (the rest, for `test_classes`)."""
    import shutil

    for name in ("0", "0.1", "1"):
        files = sorted((tiny_data / name).glob("*.tif"))
        for i, path in enumerate(files):
            split = "train" if i < 4 or name not in test_classes else "test"
            (root / split / name).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, root / split / name / path.name)
    return root


def test_train_folder_without_test_folder_holds_out_a_test_set(tiny_data: Path, tmp_path: Path) -> None:
    from cytolens.classify.training import prepare_manifest

    data = _split_copy(tiny_data, tmp_path / "data", test_classes=())
    manifest, _, _ = prepare_manifest(data, validate_config(TINY, ClassifyConfig))
    assert manifest.loc[manifest["split"] == "test"].groupby("class").size().to_dict() == {"0": 2, "0.1": 2, "1": 2}


def test_fixed_test_set_must_cover_every_class_and_not_share_groups(tiny_data: Path, tmp_path: Path) -> None:
    from cytolens.classify.training import prepare_manifest

    config = validate_config(TINY, ClassifyConfig)
    partial = _split_copy(tiny_data, tmp_path / "partial", test_classes=("0", "1"))
    with pytest.raises(CytolensError, match="class '0.1' has no images in test/"):
        prepare_manifest(partial, config)
    full = _split_copy(tiny_data, tmp_path / "full", test_classes=("0", "0.1", "1"))
    leaky = config.model_copy(update={"group_pattern": r"^(cell)_"})  # one group per class, in train/ and test/
    with pytest.raises(CytolensError, match=r"group '0(\.1)?/cell' has images in both train/ and test/"):
        prepare_manifest(full, leaky)


def test_a_run_folder_is_not_resumed_on_other_images(tiny_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    import shutil

    other = tmp_path / "other"
    shutil.copytree(tiny_data, other)
    with pytest.raises(CytolensError, match="other images or another split"):
        run_protocol(other, validate_config(TINY, ClassifyConfig), tiny_run)


def test_predict_defaults_to_the_all_classes_task() -> None:
    from cytolens.classify.predict import _choose_task

    tasks = build_tasks(["0", "0.1", "1"], ["pairwise", "all"])
    assert _choose_task(tasks, ["0", "0.1", "1"], None).name == "3 classes"
    assert _choose_task(tasks, ["0", "0.1", "1"], "1 vs 0").name == "0 vs 1"
    with pytest.raises(Exception, match="has no model for all classes"):
        _choose_task(tasks[:1], ["0", "0.1", "1"], None)


def test_training_agrees_with_data_check(class_folders, capsys) -> None:
    import shutil

    from cytolens.classify.training import prepare_manifest

    config = validate_config({"test_per_class": 1, "folds": 2}, ClassifyConfig)
    root = class_folders({"0": 4, "1": 4})
    shutil.copy(root / "0" / "cell_001.tif", root / "1" / "cell_003.tif")
    prepare_manifest(root, config)
    err = capsys.readouterr().err
    assert "warning:" in err and "cell_003.tif" in err and "identical to" in err
    shutil.rmtree(root / "1")
    with pytest.raises(CytolensError, match="only one class"):
        prepare_manifest(root, config)


def _quick_config_at_test_size(path: Path) -> Path:
    """The shipped quick config (its classes 0, 0.1, 1 included), with a schedule small enough for a test."""
    from cytolens.core.config import load_config, save_config

    quick = load_config("shpilman2017-quick", ClassifyConfig)
    assert quick.classes == ["0", "0.1", "1"]
    small = quick.model_copy(update={
        "test_per_class": 2, "input_size": 32, "folds": 2, "variants": ["CNN"], "predict_variant": "CNN",
        "gradcam_examples": 0,
        "training": quick.training.model_copy(update={"max_epochs": 1, "min_epochs": 1, "batch_size": 8}),
        "xgboost": quick.xgboost.model_copy(update={"n_estimators": 5}),
    })
    return save_config(small, path)


def test_a_labs_class_names_train_with_a_shipped_config_and_get_no_paper_columns(
    tiny_data: Path, tmp_path: Path, cli
) -> None:
    import shutil

    config = _quick_config_at_test_size(tmp_path / "quick.yaml")
    lab = tmp_path / "lab"
    for paper_name, lab_name in (("0", "alpha"), ("0.1", "beta"), ("1", "gamma")):
        shutil.copytree(tiny_data / paper_name, lab / lab_name)
    cli("classify", "train", lab, "--config", config, "--out", tmp_path / "lab-run")  # no --classes needed
    lab_table = pd.read_csv(tmp_path / "lab-run" / "table_iv.csv")
    assert list(lab_table["task"]) == ["3 classes", "alpha vs beta", "alpha vs gamma", "beta vs gamma"]
    assert not [column for column in lab_table.columns if column.startswith("paper")]
    assert json.loads((tmp_path / "lab-run" / "metrics.json").read_text())["paper_table_iv"] == {}
    assert "paper" not in (tmp_path / "lab-run" / "table_iv.md").read_text()

    cli("classify", "train", tiny_data, "--config", config, "--out", tmp_path / "paper-run")
    paper_table = pd.read_csv(tmp_path / "paper-run" / "table_iv.csv", dtype={"task": str}).set_index("task")
    assert paper_table.loc["3 classes", "paper CNN+T+S"] == 66.00
    assert paper_table.loc["0.1 vs 1", "paper best expert"] == 52.00


def test_a_config_class_order_applies_only_to_exactly_its_classes(class_folders) -> None:
    from cytolens.data.layouts import scan_class_folders

    paper = ["1", "0.1", "0"]  # a protocol's own order, not the natural one
    exact = class_folders({"0": 2, "0.1": 2, "1": 2})
    assert scan_class_folders(exact, preferred_classes=paper).classes == ("1", "0.1", "0")
    more = class_folders({"0": 2, "0.1": 2, "1": 2, "10": 2}, root=exact.parent / "more")
    assert scan_class_folders(more, preferred_classes=paper).classes == ("0", "0.1", "1", "10")
    # --classes is the user's choice and always wins: a subset, in the user's order.
    assert scan_class_folders(more, classes=["10", "0"], preferred_classes=paper).classes == ("10", "0")
