"""`check_dataset`: every file validated, problems named, summary right."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cytolens.data.datacheck import check_dataset
from cytolens.data.io import write_png


def test_clean_dataset_summary(class_folders) -> None:
    root = class_folders({"0": 3, "1": 2}, size=20)
    write_png(root / "1" / "extra.png", np.full((20, 24), 300, np.uint16))
    ticks: list[int] = []
    check = check_dataset(root, progress=ticks.append)
    assert check.ok and len(ticks) == 6
    summary = check.summary()
    assert summary["classes"] == ["0", "1"]
    assert summary["counts"] == {"0": {"": 3}, "1": {"": 3}}
    assert summary["height"] == [20, 20] and summary["width"] == [20, 24]
    assert summary["dtypes"] == ["uint16"] and summary["formats"] == ["png", "tiff"]
    assert summary["bits_used_max"] == 14


def test_problems_are_listed_with_their_files_and_dropped(class_folders) -> None:
    root = class_folders({"0": 2, "1": 2})
    (root / "0" / "empty.tif").write_bytes(b"")
    bad = root / "1" / "cell_001.tif"
    bad.write_bytes(bad.read_bytes()[:200])
    check = check_dataset(root)
    assert not check.ok
    problems = {path.name: message for path, message in check.problems}
    assert problems == {"empty.tif": "file is empty (0 bytes)", "cell_001.tif": problems["cell_001.tif"]}
    assert "truncated" in problems["cell_001.tif"]
    assert len(check.dataset.samples) == 3 and len(check.files) == 3
    assert not check.dataset.samples["path"].str.endswith("empty.tif").any()
    assert len(check.summary()["problems"]) == 2


def test_split_layout_counts(class_folders) -> None:
    root = class_folders({"a": 2, "b": 1}, split="train")
    class_folders({"a": 1, "b": 1}, split="test", root=root)
    summary = check_dataset(root).summary()
    assert summary["layout"] == "class_folders_split"
    assert summary["counts"] == {"a": {"test": 1, "train": 2}, "b": {"test": 1, "train": 1}}


def test_check_accepts_path_strings(class_folders) -> None:
    root = class_folders({"x": 1})
    assert check_dataset(str(root)).dataset.root == Path(str(root))
