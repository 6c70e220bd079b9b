"""`check_dataset`: every file validated, problems named, summary right."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile

from cytolens.data.datacheck import check_dataset
from cytolens.data.io import write_png, write_tiff


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


def _add_rgb(root: Path, copies: bool) -> Path:
    gray = np.random.default_rng(1).integers(0, 255, (16, 16)).astype(np.uint8)
    rgb = np.stack([gray] * 3, axis=-1) if copies else np.random.default_rng(2).integers(0, 255, (16, 16, 3))
    return write_png(root / "0" / "colour.png", rgb.astype(np.uint8))


# One row per dataset-level case: what data check makes of it (a problem drops the file and fails the check,
# a warning leaves the data usable, ignored is listed), and the words that name it.
CASES = {
    "1×1 image": ("problem", "tiny.tif", "is 1 × 1 pixels"),
    "RGB among grayscale": ("problem", "colour.png", "has 3 channels where the dataset's images have 1"),
    "stack among 2-D images": ("problem", "stack.tif", "has 5 channels where the dataset's images have 1"),
    "grayscale saved as RGB": ("fine", "colour.png", ""),
    "symlink loop": ("ignored", "loop", "leads nowhere"),
    "empty class folder": ("ignored", "2", "class folder with no images"),
    "file instead of a class folder": ("ignored", "notes.tif", "not in a class folder"),
    "identical images in two classes": ("warning", "cell_000.tif", "identical to"),
    "single class": ("warning", "data", "only one class ('0')"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_dataset_level_checks(class_folders, case: str) -> None:
    root = class_folders({"0": 3} if case == "single class" else {"0": 3, "1": 3})
    if case == "1×1 image":
        write_tiff(root / "1" / "tiny.tif", np.ones((1, 1), np.uint16))
    elif case in ("RGB among grayscale", "grayscale saved as RGB"):
        _add_rgb(root, copies=case == "grayscale saved as RGB")
    elif case == "stack among 2-D images":
        tifffile.imwrite(root / "1" / "stack.tif", np.arange(5 * 16 * 16, dtype=np.uint16).reshape(5, 16, 16))  # a z-stack
    elif case == "symlink loop":
        os.symlink(root / "loop", root / "loop")
    elif case == "empty class folder":
        (root / "2").mkdir()
    elif case == "file instead of a class folder":
        shutil.copy(root / "0" / "cell_000.tif", root / "notes.tif")
    elif case == "identical images in two classes":
        shutil.copy(root / "0" / "cell_001.tif", root / "1" / "cell_000.tif")
    check = check_dataset(root)
    kind, name, words = CASES[case]
    found = {
        "problem": [(p.name, m) for p, m in check.problems],
        "warning": [(p.name, m) for p, m in check.warnings],
        "ignored": [(p.name, m) for p, m in check.dataset.ignored],
    }
    if kind == "fine":
        assert check.ok and not check.warnings and name in {Path(p).name for p in check.files["path"]}
        return
    assert any(n == name and words in m for n, m in found[kind]), found
    assert check.ok == (kind != "problem")
    if kind == "problem":  # dropped from what the pipelines train on
        assert name not in {Path(p).name for p in check.dataset.samples["path"]}
    if case == "identical images in two classes":  # both files are named
        assert any(str(root / "0" / "cell_001.tif") in m for _, m in found["warning"])
