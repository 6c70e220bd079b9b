"""Round trips for every format and dtype, 16-bit preservation, and every bad input's error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from cytolens.core.errors import ImageReadError, OptionError
from cytolens.data.io import (
    bits_in_use,
    detect_format,
    iter_image_files,
    normalize_intensity,
    read_image,
    read_image_info,
    to_grayscale,
    write_image,
    write_png,
    write_tiff,
)

RNG = np.random.default_rng(0)


def _image(dtype: type, shape: tuple[int, ...], top: float | None = None) -> np.ndarray:
    if np.issubdtype(dtype, np.floating):
        return RNG.normal(100.0, 30.0, shape).astype(dtype)
    top = np.iinfo(dtype).max if top is None else top
    return RNG.integers(0, int(top) + 1, shape).astype(dtype)


@pytest.mark.parametrize("shape", [(17, 23), (17, 23, 2), (17, 23, 3)])
@pytest.mark.parametrize(
    ("dtype", "top"),
    [(np.uint8, None), (np.uint16, 4095), (np.uint16, 16383), (np.uint16, None), (np.float32, None), (np.int32, 70000)],
    ids=["8bit", "12bit", "14bit", "16bit", "float32", "int32"],
)
def test_tiff_round_trip_keeps_values_and_dtype(tmp_path: Path, shape: tuple[int, ...], dtype: type, top: float | None) -> None:
    image = _image(dtype, shape, top)
    path = write_tiff(tmp_path / "a.tif", image)
    back = read_image(path)
    assert back.dtype == image.dtype
    np.testing.assert_array_equal(back, image)


@pytest.mark.parametrize("shape", [(9, 11), (9, 11, 3), (9, 11, 4)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_round_trip_8_and_16_bit(tmp_path: Path, shape: tuple[int, ...], dtype: type) -> None:
    image = _image(dtype, shape)
    back = read_image(write_png(tmp_path / "a.png", image))
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, image)


def test_pillow_modes_read_as_their_values(tmp_path: Path) -> None:
    # The modes a user's PNG and JPEG files come in, read through Pillow alone (imageio is no longer used).
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(read_image(tmp_path / "palette.png"), np.asarray(palette.convert("RGB")))
    bits = rng.random((9, 11)) > 0.5
    Image.fromarray(bits).save(tmp_path / "bits.png")
    one_bit = read_image(tmp_path / "bits.png")
    assert one_bit.dtype == np.uint8 and set(np.unique(one_bit)) <= {0, 1}
    np.testing.assert_array_equal(one_bit, bits.astype(np.uint8))
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    assert read_image(tmp_path / "cmyk.jpg").shape == (9, 11, 4)  # the file's four channels, not a conversion
    gray_alpha = Image.fromarray(rgb[..., 0]).convert("LA")
    gray_alpha.save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), np.asarray(gray_alpha))


def test_jpeg_reads_close_to_written(tmp_path: Path) -> None:
    smooth = np.tile(np.linspace(0, 255, 32, dtype=np.float64), (24, 1)).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "a.jpg", quality=95)
    back = read_image(tmp_path / "a.jpg")
    assert back.dtype == np.uint8 and back.shape == smooth.shape
    assert np.abs(back.astype(int) - smooth.astype(int)).max() <= 6


def test_ome_tiff_keeps_channel_names_and_channel_axis(tmp_path: Path) -> None:
    image = _image(np.uint16, (12, 14, 3), 16383)
    path = write_tiff(tmp_path / "field.ome.tif", image, channel_names=["DAPI", "Tubulin", "Actin"])
    info = read_image_info(path)
    assert info.format == "ome-tiff"
    assert info.channel_names == ("DAPI", "Tubulin", "Actin")
    assert info.shape == (12, 14, 3) and info.bits_used <= 14
    np.testing.assert_array_equal(read_image(path), image)
    # Stored channel-first so Fiji and napari see three channels.
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].axes == "CYX"


def test_multipage_tiff_pages_become_channels(tmp_path: Path) -> None:
    pages = [_image(np.uint16, (10, 12)) for _ in range(3)]
    path = tmp_path / "pages.tif"
    for i, page in enumerate(pages):
        tifffile.imwrite(path, page, append=i > 0)
    back = read_image(path)
    assert back.shape == (10, 12, 3)
    for c, page in enumerate(pages):
        np.testing.assert_array_equal(back[..., c], page)


def test_explicit_channel_axis(tmp_path: Path) -> None:
    stored = _image(np.uint16, (10, 12, 5))  # (Y, X, ?) that tifffile would call YXS only for RGB
    tifffile.imwrite(tmp_path / "c.tif", np.moveaxis(stored, -1, 1), photometric="minisblack")  # (Y, C, X)
    back = read_image(tmp_path / "c.tif", channel_axis=1)
    np.testing.assert_array_equal(back, stored)


def test_sixteen_bit_is_never_truncated(tmp_path: Path) -> None:
    image = np.array([[0, 255, 256, 4095], [16383, 40000, 65535, 1]], dtype=np.uint16)
    for name in ("a.tif", "a.png"):
        back = read_image(write_image(tmp_path / name, image))
        assert back.dtype == np.uint16 and back.max() == 65535
        np.testing.assert_array_equal(back, image)


def test_grayscale_collapses_identical_rgb_and_averages_colour(tmp_path: Path) -> None:
    gray = _image(np.uint8, (8, 9))
    rgb = np.stack([gray] * 3, axis=-1)
    np.testing.assert_array_equal(read_image(write_png(tmp_path / "g.png", rgb), grayscale=True), gray)
    colour = np.zeros((2, 2, 3), np.uint16)
    colour[..., 1] = 300
    np.testing.assert_array_equal(to_grayscale(colour), np.full((2, 2), 100, np.uint16))


def test_bits_in_use() -> None:
    assert bits_in_use(np.array([[0, 16383]], np.uint16)) == 14
    assert bits_in_use(np.array([[0, 4095]], np.uint16)) == 12
    assert bits_in_use(np.array([[0, 255]], np.uint8)) == 8
    assert bits_in_use(np.zeros((2, 2), np.uint16)) == 1
    assert bits_in_use(np.zeros((2, 2), np.float32)) == 32


# --- bad input: each gives its own clear error naming the file -------------------------------------------


def _assert_error(path: Path, fragment: str, **kwargs: object) -> None:
    with pytest.raises(ImageReadError) as info:
        read_image(path, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert str(path) in message and fragment in message
    assert "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    _assert_error(tmp_path / "nope.tif", "not found")


def test_zero_byte_file(tmp_path: Path) -> None:
    (tmp_path / "empty.tif").write_bytes(b"")
    _assert_error(tmp_path / "empty.tif", "empty")


@pytest.mark.parametrize("name", ["t.tif", "t.png", "t.jpg"])
def test_truncated_files(tmp_path: Path, name: str) -> None:
    image = _image(np.uint8, (64, 64))
    full = tmp_path / f"full{Path(name).suffix}"
    Image.fromarray(image).save(full) if not name.endswith(".tif") else tifffile.imwrite(full, image)
    data = full.read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    _assert_error(tmp_path / name, "truncated or corrupt")


def test_corrupt_file_with_image_suffix(tmp_path: Path) -> None:
    (tmp_path / "junk.tif").write_bytes(b"this is not an image at all")
    _assert_error(tmp_path / "junk.tif", "not a valid TIF file")


def test_unknown_format(tmp_path: Path) -> None:
    (tmp_path / "cells.ims").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))  # Imaris: HDF5, not read
    _assert_error(tmp_path / "cells.ims", "unknown image format")


def test_unexpected_dimensionality(tmp_path: Path) -> None:
    stack = _image(np.uint16, (4, 3, 10, 12))
    tifffile.imwrite(tmp_path / "zstack.tif", stack, imagej=True, metadata={"axes": "ZCYX"})
    _assert_error(tmp_path / "zstack.tif", "unexpected dimensionality")
    tifffile.imwrite(tmp_path / "line.tif", np.zeros((1, 50), np.uint16))  # a 1-pixel-high line is fine
    assert read_image(tmp_path / "line.tif").shape == (1, 50)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_rejected(tmp_path: Path, bad: float) -> None:
    image = np.ones((5, 5), np.float32)
    image[2, 3] = bad
    tifffile.imwrite(tmp_path / "bad.tif", image)
    _assert_error(tmp_path / "bad.tif", "invalid values")


def test_detect_format_ignores_lying_suffix(tmp_path: Path) -> None:
    write_png(tmp_path / "really_png.tif", np.zeros((4, 4), np.uint8))
    assert detect_format(tmp_path / "really_png.tif") == "png"
    assert read_image(tmp_path / "really_png.tif").shape == (4, 4)


# --- normalisation ----------------------------------------------------------------------------------------


def test_normalize_by_bit_depth_dtype_and_percentile() -> None:
    image = np.array([[0, 8191, 16383, 16383]], np.uint16)
    np.testing.assert_allclose(normalize_intensity(image, method="bit_depth", bit_depth=14), [[0, 8191 / 16383, 1, 1]])
    np.testing.assert_allclose(normalize_intensity(image, method="dtype"), image / 65535, rtol=1e-6)
    ramp = np.arange(101, dtype=np.uint16).reshape(1, 101)
    out = normalize_intensity(ramp, method="percentile", percentiles=(10, 90))
    assert out.dtype == np.float32
    assert out[0, 10] == pytest.approx(0) and out[0, 90] == pytest.approx(1) and out[0, 50] == pytest.approx(0.5)
    assert out.min() == 0 and out.max() == 1


def test_normalize_percentile_is_per_channel_and_handles_flat() -> None:
    image = np.stack([np.arange(100).reshape(10, 10), np.full((10, 10), 7)], axis=-1).astype(np.uint16)
    out = normalize_intensity(image, method="percentile", percentiles=(0, 100))
    assert out[..., 0].max() == 1 and np.all(out[..., 1] == 0) and np.isfinite(out).all()


def test_normalize_options_are_checked() -> None:
    image = np.zeros((2, 2), np.uint16)
    with pytest.raises(OptionError, match="bit_depth"):
        normalize_intensity(image, method="bit_depth")
    with pytest.raises(OptionError, match="Did you mean 'percentile'"):
        normalize_intensity(image, method="percentiles")  # type: ignore[arg-type]
    with pytest.raises(OptionError, match="integer image"):
        normalize_intensity(image.astype(np.float32), method="dtype")


def test_writes_are_atomic_and_leave_no_temp_files(tmp_path: Path) -> None:
    write_tiff(tmp_path / "a.tif", np.zeros((4, 4), np.uint16))
    with pytest.raises(OptionError):
        write_png(tmp_path / "b.png", np.zeros((4, 4), np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif"]


def test_iter_image_files_natural_order(tmp_path: Path) -> None:
    for name in ["cell10.tif", "cell2.tif", "cell1.png", "notes.txt", ".hidden.tif"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in iter_image_files(tmp_path)] == ["cell1.png", "cell2.tif", "cell10.tif"]


def test_grayscale_keeps_every_tiff_channel_but_drops_png_alpha(tmp_path: Path) -> None:
    two = np.stack([np.full((4, 4), 100, np.uint16), np.full((4, 4), 3000, np.uint16)], axis=-1)
    assert read_image(write_tiff(tmp_path / "two.tif", two), grayscale=True).max() == 1550  # both stains count
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = 90
    rgba[..., 3] = 255
    np.testing.assert_array_equal(read_image(write_png(tmp_path / "a.png", rgba), grayscale=True), np.full((4, 4), 90))


def test_corrupt_16bit_colour_png_is_a_read_error(tmp_path: Path) -> None:
    path = write_png(tmp_path / "c.png", np.full((16, 16, 3), 40000, np.uint16))
    data = bytearray(path.read_bytes())
    data[60] ^= 0xFF  # break a chunk checksum
    path.write_bytes(bytes(data))
    _assert_error(path, "truncated or corrupt")


def test_channel_axis_on_a_single_channel_image_is_refused(tmp_path: Path) -> None:
    path = write_tiff(tmp_path / "g.tif", np.zeros((3, 4), np.uint16))
    with pytest.raises(OptionError, match="single-channel"):
        read_image(path, channel_axis=0)
    with pytest.raises(OptionError, match="ome=True"):
        write_tiff(tmp_path / "n.tif", np.zeros((3, 4, 2), np.uint16), channel_names=["a", "b"], ome=False)


def test_atomic_outputs_are_readable_by_others(tmp_path: Path) -> None:
    import os

    mask = os.umask(0o022)
    try:
        path = write_tiff(tmp_path / "p.tif", np.zeros((2, 2), np.uint16))
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_find_image_files_recurses_in_natural_order_and_names_empty_folders(tmp_path: Path) -> None:
    from cytolens.core.errors import CytolensError
    from cytolens.data.io import find_image_files

    for name in ["b/cell10.tif", "b/cell2.tif", "a.png", ".hidden.tif", "notes.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in find_image_files(tmp_path)] == ["a.png", "b/cell2.tif", "b/cell10.tif"]
    assert find_image_files(tmp_path / "a.png") == [tmp_path / "a.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(CytolensError, match="holds no image files"):
        find_image_files(tmp_path / "empty")
    with pytest.raises(CytolensError, match="no such file or folder"):
        find_image_files(tmp_path / "missing")


def _tiff_declaring(path: Path, width: int, height: int) -> Path:
    """A small valid TIFF whose header is then patched to declare ``width`` × ``height`` pixels."""
    tifffile.imwrite(path, np.zeros((8, 8), dtype=np.uint8))
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        places = {code: (tags[code].valueoffset, tags[code].dtype) for code in (256, 257)}  # width, length
    data = bytearray(path.read_bytes())
    for code, value in ((256, width), (257, height)):
        offset, kind = places[code]
        size = 2 if kind == 3 else 4  # SHORT or LONG, little-endian as tifffile writes
        data[offset : offset + size] = value.to_bytes(size, "little")
    path.write_bytes(bytes(data))
    return path


def _png_declaring(path: Path, width: int, height: int) -> Path:
    """A small valid PNG whose IHDR is then patched (with its CRC) to declare ``width`` × ``height`` pixels."""
    import struct
    import zlib

    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(path, format="PNG")
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("make", [_tiff_declaring, _png_declaring], ids=["tiff", "png"])
def test_an_image_declaring_an_absurd_size_is_refused_before_decoding(tmp_path: Path, make) -> None:
    path = make(tmp_path / f"bomb.{'tif' if make is _tiff_declaring else 'png'}", 60000, 60000)
    assert path.stat().st_size < 10_000
    with pytest.raises(ImageReadError, match="bomb") as caught:
        read_image(path)
    assert "\n" not in str(caught.value) and path.name in str(caught.value)


def test_the_size_limit_is_configurable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "small.tif"
    tifffile.imwrite(path, np.zeros((20, 30), dtype=np.uint16))
    monkeypatch.setenv("CYTOLENS_MAX_IMAGE_PIXELS", "599")
    with pytest.raises(ImageReadError, match=r"20 × 30 .*CYTOLENS_MAX_IMAGE_PIXELS"):
        read_image(path)
    monkeypatch.setenv("CYTOLENS_MAX_IMAGE_PIXELS", "600")
    assert read_image(path).shape == (20, 30)
    monkeypatch.setenv("CYTOLENS_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(OptionError, match="CYTOLENS_MAX_IMAGE_PIXELS"):
        read_image(path)
