"""Class-folder layouts, class order, groups and manifests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from cytolens.core.errors import LayoutError, OptionError
from cytolens.data.layouts import (
    MANIFEST_COLUMNS,
    detect_layout,
    natural_class_order,
    parse_class_list,
    read_manifest,
    scan_class_folders,
    write_manifest,
)


def test_class_names_stay_strings_and_sort_naturally() -> None:
    assert natural_class_order(["1", "0.1", "0"]) == ["0", "0.1", "1"]
    assert natural_class_order(["10", "2", "1"]) == ["1", "2", "10"]
    assert natural_class_order(["img10", "img2", "control"]) == ["control", "img2", "img10"]
    assert parse_class_list(" 0, 0.1 ,1") == ["0", "0.1", "1"]
    with pytest.raises(OptionError, match="more than once"):
        parse_class_list("0,1,0")
    with pytest.raises(OptionError):
        parse_class_list(" , ")


def test_scan_class_folders(class_folders) -> None:
    root = class_folders({"1": 2, "0": 3, "0.1": 1})
    (root / "0" / "notes.txt").write_text("not an image")
    dataset = scan_class_folders(root)
    assert dataset.layout == "class_folders"
    assert dataset.classes == ("0", "0.1", "1")
    table = dataset.samples
    assert list(table.columns) == list(MANIFEST_COLUMNS)
    assert table["class"].tolist() == ["0"] * 3 + ["0.1"] + ["1"] * 2
    assert table["label"].tolist() == [0, 0, 0, 1, 2, 2]
    assert table["group"].is_unique and table["group"].iloc[0] == "0/cell_000"
    assert set(table["split"]) == {""}
    assert any(p.name == "notes.txt" for p, _ in dataset.ignored)
    assert dataset.counts().loc["0"].sum() == 3


def test_explicit_class_order_and_subset(class_folders) -> None:
    root = class_folders({"0": 1, "0.1": 1, "1": 1})
    dataset = scan_class_folders(root, classes=["1", "0"])
    assert dataset.classes == ("1", "0")
    assert dict(zip(dataset.samples["class"], dataset.samples["label"])) == {"1": 0, "0": 1}
    assert any("not in the requested" in reason for _, reason in dataset.ignored)
    with pytest.raises(LayoutError, match="no image folder for class '5'"):
        scan_class_folders(root, classes=["0", "5"])


def test_train_test_split_layout(class_folders) -> None:
    root = class_folders({"a": 3, "b": 2}, split="train")
    class_folders({"a": 1, "b": 1}, split="test", root=root)
    dataset = scan_class_folders(root)
    assert detect_layout(root) == dataset.layout == "class_folders_split"
    counts = dataset.counts()
    assert counts.loc["a", "train"] == 3 and counts.loc["b", "test"] == 1
    # Same file name in train and test is two different groups.
    assert dataset.samples["group"].is_unique


def test_test_class_without_training_images_is_an_error(class_folders) -> None:
    root = class_folders({"a": 2}, split="train")
    class_folders({"zzz": 1}, split="test", root=root)
    with pytest.raises(LayoutError, match="'zzz' has test images but no training"):
        scan_class_folders(root)


def test_group_pattern_keeps_cells_of_one_field_together(tmp_path: Path, class_folders) -> None:
    root = class_folders({"0": 4})
    for i, path in enumerate(sorted((root / "0").iterdir())):
        path.rename(path.with_name(f"field{i // 2}_cell{i}.tif"))
    dataset = scan_class_folders(root, group_pattern=r"^(field\d+)_")
    assert dataset.samples["group"].tolist() == ["0/field0", "0/field0", "0/field1", "0/field1"]
    with pytest.raises(LayoutError, match="does not match the group pattern"):
        scan_class_folders(root, group_pattern=r"^plate")
    with pytest.raises(OptionError, match="not a valid regular expression"):
        scan_class_folders(root, group_pattern="(")


def test_same_field_name_in_two_classes_is_two_groups(class_folders) -> None:
    root = class_folders({"0": 1, "1": 1})
    dataset = scan_class_folders(root, group_pattern=r"cell_\d+")
    assert dataset.samples["group"].tolist() == ["0/cell_000", "1/cell_000"]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "not found"),
        (lambda p: p.write_text("x"), "is a file"),
        (lambda p: p.mkdir(), "matches no known layout"),
        (lambda p: [(p / name).mkdir(parents=True) for name in ("brightfield", "dapi")], "has brightfield/ but no labels/"),
    ],
)
def test_unusable_folders(tmp_path: Path, setup, message: str) -> None:
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(LayoutError, match=message):
        detect_layout(root)


def test_images_without_class_folders(tmp_path: Path, png8) -> None:
    png8(tmp_path / "data" / "a.png")
    with pytest.raises(LayoutError, match="its own folder"):
        detect_layout(tmp_path / "data")


def test_manifest_round_trip(tmp_path: Path, class_folders) -> None:
    dataset = scan_class_folders(class_folders({"0": 2, "0.1": 2}))
    path = write_manifest(dataset.samples, tmp_path / "run" / "manifest.parquet")
    back = read_manifest(path)
    pd.testing.assert_frame_equal(back, dataset.samples, check_dtype=False)
    assert back["class"].tolist() == ["0", "0", "0.1", "0.1"]  # strings, not floats
    with pytest.raises(OptionError, match="missing"):
        write_manifest(dataset.samples.drop(columns="group"), tmp_path / "bad.parquet")
    with pytest.raises(LayoutError, match="manifest not found"):
        read_manifest(tmp_path / "nope.parquet")
