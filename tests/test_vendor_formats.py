"""Vendor formats (ND2, CZI, LIF) through bioio, the optional `formats` extra, and the error without it.

No ND2, CZI or LIF file can be made here, so the bioio path is exercised with bioio's OME-TIFF plugin standing in
for a vendor plugin (the dev extra installs bioio and bioio-ome-tiff): the file, bioio's reader, the axes and
the calibration are real, only the suffix-to-plugin entry is swapped.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import tifffile

from cytolens.core.errors import ImageReadError
from cytolens.data import vendor
from cytolens.data.datacheck import check_dataset
from cytolens.data.io import detect_format, find_image_files, read_image, read_image_info
from cytolens.data.pixel_size import PixelSize, read_pixel_size

CHANNELS = np.arange(2 * 24 * 32, dtype=np.uint16).reshape(2, 24, 32) * 7


@pytest.fixture
def without_bioio(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine where the `formats` extra is not installed."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("bioio") else real(name, *a))


@pytest.fixture
def nd2_read_by_ome_tiff_plugin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A calibrated 2-channel 16-bit file named ``.nd2`` and read by bioio's OME-TIFF plugin."""
    pytest.importorskip("bioio_ome_tiff", reason="the dev extra installs bioio-ome-tiff")
    monkeypatch.setitem(vendor.VENDOR_FORMATS, ".nd2", ("nd2", "bioio_ome_tiff", "Nikon ND2"))
    path = tmp_path / "well_A01.nd2"
    tifffile.imwrite(path, CHANNELS, ome=True, metadata={
        "axes": "CYX", "PhysicalSizeX": 0.325, "PhysicalSizeY": 0.4, "PhysicalSizeXUnit": "µm",
        "PhysicalSizeYUnit": "µm", "Channel": {"Name": ["DAPI", "Actin"]}})
    return path


@pytest.mark.parametrize(("suffix", "label", "plugin"), [
    (".nd2", "Nikon ND2", "bioio-nd2"), (".CZI", "Zeiss CZI", "bioio-czi"), (".lif", "Leica LIF", "bioio-lif")])
def test_without_the_extra_the_error_names_it(tmp_path: Path, without_bioio: None, suffix: str, label: str,
                                               plugin: str) -> None:
    path = tmp_path / f"field{suffix}"
    path.write_bytes(b"\x00" * 64)
    assert detect_format(path) == suffix.lower().lstrip(".")
    with pytest.raises(ImageReadError) as error:
        read_image(path)
    message = str(error.value)
    assert str(path) in message and label in message and plugin in message
    assert "pip install 'cytolens[formats]'" in message and "\n" not in message
    with pytest.raises(ImageReadError, match=r"cytolens\[formats\]"):
        read_pixel_size(path)


def test_vendor_files_are_found_and_a_missing_extra_fails_data_check(tmp_path: Path, without_bioio: None,
                                                                     cli) -> None:
    for name in ("0", "1"):
        (tmp_path / name).mkdir()
        tifffile.imwrite(tmp_path / name / "cell.tif", CHANNELS[0])
    (tmp_path / "1" / "scan.czi").write_bytes(b"ZISRAWFILE" + b"\x00" * 64)
    assert tmp_path / "1" / "scan.czi" in find_image_files(tmp_path)
    check = check_dataset(tmp_path)
    assert [(p.name, "formats" in m) for p, m in check.problems] == [("scan.czi", True)]
    result = cli("data", "check", tmp_path, code=None)
    assert result.code != 0 and "scan.czi" in result.out + result.err and "Traceback" not in result.err


def test_a_vendor_file_reads_through_bioio(nd2_read_by_ome_tiff_plugin: Path) -> None:
    path = nd2_read_by_ome_tiff_plugin
    image = read_image(path)
    assert image.dtype == np.uint16 and image.shape == (24, 32, 2)  # channels last, 16 bits kept
    np.testing.assert_array_equal(image, np.moveaxis(CHANNELS, 0, -1))
    info = read_image_info(path)
    assert info.format == "nd2" and info.channel_names == ("DAPI", "Actin")
    assert read_pixel_size(path) == PixelSize(pytest.approx(0.4), pytest.approx(0.325), "ND2")


def test_a_vendor_z_stack_is_refused_like_a_tiff_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("bioio_ome_tiff", reason="the dev extra installs bioio-ome-tiff")
    monkeypatch.setitem(vendor.VENDOR_FORMATS, ".lif", ("lif", "bioio_ome_tiff", "Leica LIF"))
    path = tmp_path / "stack.lif"
    tifffile.imwrite(path, np.zeros((3, 2, 8, 8), np.uint8), ome=True, metadata={"axes": "ZCYX"})
    with pytest.raises(ImageReadError, match="stack.lif.*a Z axis of 3"):
        read_image(path)


def test_a_damaged_vendor_file_is_named(nd2_read_by_ome_tiff_plugin: Path) -> None:
    path = nd2_read_by_ome_tiff_plugin
    path.write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match=r"well_A01\.nd2: not a valid Nikon ND2 file"):
        read_image(path)
