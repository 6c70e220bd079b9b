"""The segmentation layout (images/ + labels/ by stem) and its data check."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cytolens.data.datacheck import check_label_pairs
from cytolens.core.errors import LayoutError
from cytolens.data.io import write_png, write_tiff
from cytolens.data.label_pairs import scan_image_label_pairs
from cytolens.data.layouts import detect_layout, scan_class_folders


def _pairs(root: Path, n: int = 3, *, images: str = "images", size: tuple[int, int] = (20, 24)) -> Path:
    rng = np.random.default_rng(n)
    for i in range(n):
        write_tiff(root / images / f"f{i}.tif", rng.integers(0, 4096, size).astype(np.uint16))
        label = np.zeros(size, np.uint8)
        label[5:15, 5:15] = 2
        label[8:12, 8:12] = 1
        write_png(root / "labels" / f"f{i}.png", label)
    return root


def test_pairs_are_detected_and_matched_by_stem(tmp_path: Path) -> None:
    root = _pairs(tmp_path / "data")
    assert detect_layout(root) == "image_label_pairs"
    dataset = scan_image_label_pairs(root)
    assert dataset.samples["stem"].tolist() == ["f0", "f1", "f2"]
    assert dataset.classes == ("background", "nucleus", "cytoplasm")
    with pytest.raises(LayoutError, match="not class folders"):
        scan_class_folders(root)


def test_brightfield_folder_counts_as_the_image_folder(tmp_path: Path) -> None:
    root = _pairs(tmp_path / "bf", images="brightfield")
    assert scan_image_label_pairs(root).images.name == "brightfield"


def test_missing_labels_name_the_command_that_derives_them_from_the_fluorescence(tmp_path: Path) -> None:
    root = _pairs(tmp_path / "bf", images="brightfield")
    for name in ("dapi", "cellstain"):
        (root / name).mkdir()
    for label in (root / "labels").iterdir():
        label.unlink()
    (root / "labels").rmdir()
    with pytest.raises(LayoutError, match=re.escape(f"cytolens segment labels {root}")):
        scan_image_label_pairs(root)
    (root / "cellstain").rmdir()  # without both channels there is nothing to derive labels from
    with pytest.raises(LayoutError) as caught:
        scan_image_label_pairs(root)
    assert "expected labels/" in str(caught.value) and "segment labels" not in str(caught.value)


def test_unmatched_stems_are_an_error(tmp_path: Path) -> None:
    root = _pairs(tmp_path / "data")
    (root / "labels" / "f1.png").unlink()
    with pytest.raises(LayoutError, match="1 image\\(s\\) without a partner here, e.g. 'f1'"):
        scan_image_label_pairs(root)


def test_check_reports_pixel_fractions_and_bad_labels(tmp_path: Path) -> None:
    root = _pairs(tmp_path / "data", n=4)
    write_png(root / "labels" / "f1.png", np.full((20, 24), 5, np.uint8))  # class 5 of 3
    write_png(root / "labels" / "f2.png", np.zeros((10, 24), np.uint8))  # wrong size
    write_tiff(root / "labels" / "f3.tif", np.zeros((20, 24), np.float32))
    (root / "labels" / "f3.png").unlink()
    check = check_label_pairs(root)
    problems = {path.name: message for path, message in check.problems}
    assert "outside 0..2" in problems["f1.png"]
    assert "differs from its image's 20×24" in problems["f2.png"]
    assert "integer class indices" in problems["f3.tif"]
    summary = check.summary()
    assert summary["images"] == 1 and summary["classes"] == ["background", "nucleus", "cytoplasm"]
    assert summary["pixel_fraction"]["nucleus"] == pytest.approx(16 / 480)


def test_cli_data_check_on_pairs(tmp_path: Path, cli) -> None:
    root = _pairs(tmp_path / "data")
    out = cli("data", "check", root, "--classes", "bg,nuc,cyto", "--manifest", tmp_path / "m.parquet").out
    assert "image_label_pairs" in out and "nuc" in out
    assert pd.read_parquet(tmp_path / "m.parquet")["group"].tolist() == ["f0", "f1", "f2"]
