"""Tiny labelled fields and a tiny trained segmentation run for the segment tests (not a test module)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cytolens.core.config import load_config
from cytolens.data.io import write_tiff
from cytolens.segment.config import SegmentConfig
from cytolens.segment.training import run_training


def blob_field(size: tuple[int, int], seed: int, *, cells: int = 4, radii: tuple[int, int] = (3, 8)
               ) -> tuple[np.ndarray, np.ndarray]:
    """A uint16 image and its labels: ``cells`` round cells (class 2, radius ``radii[1]``) around nuclei (class 1,
    radius ``radii[0]``) on background, brighter by class, with Gaussian noise."""
    rng = np.random.default_rng(seed)
    rows, cols = np.indices(size)
    label = np.zeros(size, np.uint8)
    for _ in range(cells):
        y, x = rng.integers(8, min(size) - 8, 2)
        distance = np.hypot(rows - y, cols - x)
        label[distance < radii[1]] = 2
        label[distance < radii[0]] = 1
    image = 1000 + 300 * label.astype(float) + rng.normal(0, 40, size)
    return image.astype(np.uint16), label


def train_tiny_run(base: Path, config: dict[str, Any], *, size: tuple[int, int], fields: int = 4,
                   cells: int = 4, radii: tuple[int, int] = (3, 8)) -> Path:
    """Write ``fields`` blob fields (seeds 0, 1, ...) under ``base/data`` and train ``config`` on them into
    ``base/run``; returns the run folder."""
    for i in range(fields):
        image, label = blob_field(size, i, cells=cells, radii=radii)
        write_tiff(base / "data" / "images" / f"field_{i}.tif", image)
        write_tiff(base / "data" / "labels" / f"field_{i}.tif", label)
    (base / "tiny.yaml").write_text(yaml.safe_dump(config))
    return run_training(base / "data", load_config(base / "tiny.yaml", SegmentConfig), base / "run")
