"""Shared fixtures: tiny datasets written in tmp_path, never shared between tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from cytolens.data.io import write_png, write_tiff


def _write_class_folders(root: Path, classes: dict[str, int], *, size: int = 16, split: str = "") -> Path:
    rng = np.random.default_rng(len(classes) + size)
    for name, count in classes.items():
        folder = root / split / name if split else root / name
        for i in range(count):
            image = rng.integers(0, 16384, (size, size)).astype(np.uint16)
            write_tiff(folder / f"cell_{i:03d}.tif", image)
    return root


@pytest.fixture
def class_folders(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``class_folders({"0": 3, "0.1": 2}, split="train")`` writes 16-bit TIFF cells, returns root."""

    def make(classes: dict[str, int], *, size: int = 16, split: str = "", root: Path | None = None) -> Path:
        return _write_class_folders(root or tmp_path / "data", classes, size=size, split=split)

    return make


@pytest.fixture
def png8(tmp_path: Path) -> Callable[[Path], Path]:
    """Factory writing an 8-bit PNG at a path."""

    def make(path: Path) -> Path:
        return write_png(path, np.full((16, 16), 7, np.uint8))

    return make
