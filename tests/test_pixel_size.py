"""Physical pixel sizes read from OME-TIFF and ImageJ TIFF metadata, and None where a file has none."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from cytolens.core.errors import ImageReadError
from cytolens.data.pixel_size import PixelSize, read_pixel_size

PIXELS = np.zeros((12, 16), np.uint16)


@pytest.mark.parametrize(("x", "y", "unit", "expected"), [
    (0.325, 0.325, "µm", (0.325, 0.325)),
    (650.0, 650.0, "nm", (0.65, 0.65)),
    (0.001, 0.002, "mm", (2.0, 1.0)),  # (y, x): anisotropic pixels keep both sides
])
def test_ome_tiff_physical_size(tmp_path: Path, x: float, y: float, unit: str, expected: tuple) -> None:
    path = tmp_path / "a.ome.tif"
    tifffile.imwrite(path, PIXELS, ome=True, metadata={
        "axes": "YX", "PhysicalSizeX": x, "PhysicalSizeY": y, "PhysicalSizeXUnit": unit, "PhysicalSizeYUnit": unit})
    size = read_pixel_size(path)
    assert size is not None and size.source == "OME-XML"
    assert (size.y_um, size.x_um) == pytest.approx(expected)
    assert size.area_um2 == pytest.approx(expected[0] * expected[1])


@pytest.mark.parametrize("unit", ["micron", "um", "\\u00B5m"])
def test_imagej_calibration(tmp_path: Path, unit: str) -> None:
    path = tmp_path / "ij.tif"
    tifffile.imwrite(path, PIXELS, imagej=True, resolution=(1 / 0.65, 1 / 0.5), metadata={"unit": unit})
    assert read_pixel_size(path) == PixelSize(pytest.approx(0.5), pytest.approx(0.65), "ImageJ")


def test_files_without_a_calibration_have_none(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "plain.tif", PIXELS)
    tifffile.imwrite(tmp_path / "uncalibrated.tif", PIXELS, imagej=True)  # ImageJ's "1 pixel" has no unit
    tifffile.imwrite(tmp_path / "pixels.tif", PIXELS, imagej=True, resolution=(2.0, 2.0), metadata={"unit": "pixel"})
    Image.fromarray(PIXELS.astype(np.uint8)).save(tmp_path / "a.png")
    for name in ("plain.tif", "uncalibrated.tif", "pixels.tif", "a.png"):
        assert read_pixel_size(tmp_path / name) is None, name


def test_an_unreadable_tiff_is_named(tmp_path: Path) -> None:
    (tmp_path / "broken.tif").write_bytes(b"not a TIFF at all")
    with pytest.raises(ImageReadError, match="broken.tif"):
        read_pixel_size(tmp_path / "broken.tif")
