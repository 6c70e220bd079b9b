"""Band-wise image reading (cytolens.data.tiles): the same pixels and percentiles as a whole read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from cytolens.core.errors import ImageReadError
from cytolens.data.io import read_image, write_png
from cytolens.data.tiles import _percentile_from_counts, band_percentiles, open_image_rows

RNG = np.random.default_rng(7)
GRAY = RNG.integers(0, 4096, (150, 90)).astype(np.uint16)
COLOUR = RNG.integers(0, 60000, (150, 90, 3)).astype(np.uint16)


def _write(folder: Path, name: str) -> Path:
    path = folder / name
    if name == "tiled.tif":
        tifffile.imwrite(path, GRAY, tile=(32, 32))
    elif name == "striped.tif":
        tifffile.imwrite(path, GRAY, rowsperstrip=7)
    elif name == "compressed.tif":
        tifffile.imwrite(path, GRAY, compression="zlib", rowsperstrip=16)
    elif name == "tiled-compressed.tif":
        tifffile.imwrite(path, GRAY, compression="zlib", tile=(32, 48))
    elif name == "big-endian.tif":
        tifffile.imwrite(path, GRAY, byteorder=">")
    elif name == "channels.tif":
        tifffile.imwrite(path, np.moveaxis(COLOUR, -1, 0), photometric="minisblack")
    elif name == "rgb.tif":
        tifffile.imwrite(path, COLOUR, photometric="rgb", compression="zlib", rowsperstrip=8)
    elif name == "float.tif":
        tifffile.imwrite(path, GRAY.astype(np.float32) / 7, rowsperstrip=9)
    else:
        write_png(path, GRAY)
    return path


NAMES = ["tiled.tif", "striped.tif", "compressed.tif", "tiled-compressed.tif", "big-endian.tif", "channels.tif",
         "rgb.tif", "float.tif", "image.png"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("grayscale", [False, True])
def test_bands_equal_a_whole_read(tmp_path: Path, name: str, grayscale: bool) -> None:
    path = _write(tmp_path, name)
    whole = read_image(path, grayscale=grayscale)
    with open_image_rows(path, grayscale=grayscale, whole_below=0) as image:
        assert image.streamed == (name != "image.png")
        assert image.shape == whole.shape and image.dtype == whole.dtype
        bands = list(image.bands(37))
        assert [start for start, _ in bands] == [0, 37, 74, 111, 148]
        np.testing.assert_array_equal(np.concatenate([band for _, band in bands]), whole)
        np.testing.assert_array_equal(image.read(140, 1000), whole[140:])
        low, high = band_percentiles(image, (0.5, 99.8), rows=41)
    data = whole.astype(np.float32)
    np.testing.assert_array_equal(low, np.percentile(data, 0.5, axis=(0, 1), keepdims=True).astype(np.float32))
    np.testing.assert_array_equal(high, np.percentile(data, 99.8, axis=(0, 1), keepdims=True).astype(np.float32))


def test_small_images_are_read_whole(tmp_path: Path) -> None:
    path = _write(tmp_path, "tiled.tif")
    with open_image_rows(path) as image:
        assert not image.streamed
        np.testing.assert_array_equal(image.read(0, 150), GRAY)


@pytest.mark.parametrize("q", [0.0, 0.5, 1.0, 37.3, 50.0, 99.8, 100.0])
@pytest.mark.parametrize("n", [1, 2, 9, 1001])
def test_percentile_from_a_histogram_is_numpys(q: float, n: int) -> None:
    values = RNG.integers(0, 300, n).astype(np.uint16)
    got = _percentile_from_counts(np.bincount(values, minlength=65536), 0, q)
    assert got == np.float32(np.percentile(values.astype(np.float32), q))


def test_damaged_tiles_are_reported_with_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "tiled-compressed.tif")
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages[0].dataoffsets[-1]
    data = bytearray(path.read_bytes())
    data[offset : offset + 16] = b"\xff" * 16  # corrupt the last tile's zlib stream
    path.write_bytes(bytes(data))
    with open_image_rows(path, whole_below=0) as image:
        image.read(0, 32)  # the first band's tiles are intact
        with pytest.raises(ImageReadError, match="tiled-compressed.tif"):
            image.read(120, 150)


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads Linux's /proc/self/maps")
def test_a_mapped_tiff_is_not_left_mapped_between_reads(tmp_path: Path) -> None:
    # A map kept open holds every page it touched resident: the whole file, once every band was read.
    path = tmp_path / "contiguous.tif"
    pixels = np.arange(300 * 200, dtype=np.uint16).reshape(300, 200)
    tifffile.imwrite(path, pixels)

    def mapped() -> int:
        return sum(str(path) in line for line in Path("/proc/self/maps").read_text().splitlines())

    with open_image_rows(path, whole_below=0) as image:
        assert image.streamed
        bands = [band for _, band in image.bands(64)]
        assert mapped() == 0
    np.testing.assert_array_equal(np.concatenate(bands), pixels)


def test_a_truncated_uncompressed_tiff_is_reported_by_the_whole_reader(tmp_path: Path) -> None:
    path = tmp_path / "truncated.tif"
    tifffile.imwrite(path, np.ones((300, 200), dtype=np.uint16))
    path.write_bytes(path.read_bytes()[:-5000])
    with pytest.raises(ImageReadError, match="truncated.tif"):
        open_image_rows(path, whole_below=0)
