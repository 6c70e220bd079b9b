"""The bad-input matrix: one row per kind of bad input a lab meets, driven through the command line.

Every row asserts the exit status (1: some files unusable and listed, 2: the command cannot go on), that the
output names the file, that no traceback is printed, and, where something is written, that nothing already
written was lost or left looking complete. The last rows are inputs that must simply work.
"""

from __future__ import annotations

import errno
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from cytolens.data.io import write_png, write_tiff

RNG = np.random.default_rng(0)


def _cells(root: Path, count: int = 3) -> Path:
    for name in ("a", "b"):
        for i in range(count):
            write_tiff(root / name / f"cell_{i}.tif", RNG.integers(0, 4000, (16, 16)).astype(np.uint16))
    return root


def _valid_bytes(kind: str) -> bytes:
    from PIL import Image

    scratch = Path(os.environ.get("TMPDIR", "/tmp"))
    image = RNG.integers(0, 255, (32, 32)).astype(np.uint8)
    if kind == "tif":
        path = write_tiff(scratch / f"cytolens-matrix-{os.getpid()}.tif", image)
    else:
        path = scratch / f"cytolens-matrix-{os.getpid()}.{kind}"
        Image.fromarray(image).save(path, format="JPEG" if kind == "jpg" else "PNG")
    data = path.read_bytes()
    path.unlink()
    return data


def _png_declaring(width: int, height: int) -> bytes:
    data = bytearray(_valid_bytes("png"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _tiff_declaring(path: Path, width: int, height: int) -> None:
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8))
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        places = {code: (tags[code].valueoffset, 2 if tags[code].dtype == 3 else 4) for code in (256, 257)}
    data = bytearray(path.read_bytes())
    for code, value in ((256, width), (257, height)):
        offset, size = places[code]
        data[offset : offset + size] = value.to_bytes(size, "little")
    path.write_bytes(bytes(data))


def _flip_header(data: bytes) -> bytes:
    # The structure after the magic number (TIFF's first IFD, PNG's IHDR, JPEG's tables): damage there is always
    # detectable, where flipped pixel bytes of an uncompressed file would just be other pixels.
    return data[:12] + bytes(b ^ 0xA5 for b in data[12:76]) + data[76:]


# -- image files in a class-folder dataset: 'data check' lists them (status 1) -------------------------------
def _bad_image(kind: str) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        target = root / "a" / {"png": "bad.png", "jpg": "bad.jpg"}.get(kind.split()[-1], "bad.tif")
        if kind.startswith("zero-byte"):
            target.write_bytes(b"")
        elif kind.startswith("truncated"):
            target.write_bytes(_valid_bytes(kind.split()[-1])[:60])
        elif kind.startswith("corrupt"):
            target.write_bytes(_flip_header(_valid_bytes(kind.split()[-1])))
        elif kind == "text file named .tif":
            target.write_text("sample,concentration\nA1,0.1\n")
        elif kind in ("NaN pixels", "infinite pixels"):
            image = RNG.random((16, 16)).astype(np.float32)
            image[3, 4] = np.nan if kind == "NaN pixels" else np.inf
            tifffile.imwrite(target, image)
        elif kind == "decompression-bomb TIFF header":
            _tiff_declaring(target, 65535, 65535)
        elif kind == "10-gigapixel PNG header":
            target.write_bytes(_png_declaring(100_000, 100_000))
        elif kind == "1x1 image":
            write_tiff(target, np.ones((1, 1), np.uint16))
        elif kind == "RGB PNG among grayscale":
            write_png(target, RNG.integers(0, 255, (16, 16, 3)).astype(np.uint8))
        return target

    return make


IMAGE_ROWS = [
    "zero-byte tif", "zero-byte png", "zero-byte jpg", "truncated tif", "truncated png", "truncated jpg",
    "corrupt tif", "corrupt png", "corrupt jpg", "text file named .tif", "NaN pixels", "infinite pixels",
    "decompression-bomb TIFF header", "10-gigapixel PNG header", "1x1 image", "RGB PNG among grayscale",
]


@pytest.mark.parametrize("kind", IMAGE_ROWS)
def test_a_bad_image_is_listed_by_data_check_and_refused_by_training(tmp_path: Path, cli, kind: str) -> None:
    root = _cells(tmp_path / "data")
    bad = _bad_image(kind)(root)
    manifest = tmp_path / "manifest.parquet"
    result = cli("data", "check", root, "--manifest", manifest, code=1)
    assert "Traceback" not in result.out + result.err
    line = next(line for line in result.out.splitlines() if bad.name in line)
    assert str(bad) in line and len(line.strip()) > len(str(bad)) + 2  # the file and why
    # The manifest lists the usable images only, so a pipeline reading it never meets the bad one.
    assert bad.name not in " ".join(pd.read_parquet(manifest)["path"])
    result = cli("classify", "train", root, "--config", "shpilman2017-quick", "--out", tmp_path / "run", code=2)
    assert bad.name in result.error
    assert not (tmp_path / "run" / "done.json").exists()


# -- image/label pairs (segmentation) -----------------------------------------------------------------------
def _pairs(root: Path) -> Path:
    for i in range(3):
        write_tiff(root / "images" / f"field_{i}.tif", RNG.integers(0, 4000, (24, 24)).astype(np.uint16))
        write_tiff(root / "labels" / f"field_{i}.tif", RNG.integers(0, 3, (24, 24)).astype(np.uint8))
    return root


@pytest.mark.parametrize(("kind", "words"), [
    ("image and label of different sizes", "size"),
    ("label values outside the classes", "outside"),
])
def test_a_bad_label_image_is_listed(tmp_path: Path, cli, kind: str, words: str) -> None:
    root = _pairs(tmp_path / "data")
    label = root / "labels" / "field_1.tif"
    if kind == "image and label of different sizes":
        write_tiff(label, np.zeros((20, 24), np.uint8))
    else:
        write_tiff(label, np.full((24, 24), 7, np.uint8))
    result = cli("data", "check", root, code=1)
    assert "Traceback" not in result.out + result.err
    line = next(line for line in result.out.splitlines() if "field_1" in line)
    assert words in line


# -- BBBC021 tables -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bbbc021(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cytolens.synthetic.cellpainting.simulate import simulate_cellpainting_dataset

    root = tmp_path_factory.mktemp("bbbc021") / "tiny"
    simulate_cellpainting_dataset(root, scale="tiny", seed=3)
    return root


@pytest.mark.parametrize(("kind", "code", "words"), [
    ("a missing column", 2, "Image_Metadata_Concentration"),
    ("a non-numeric concentration", 2, "Image_Metadata_Concentration"),
    ("a missing image file", 1, "file not found"),
])
def test_a_bad_bbbc021_table(bbbc021: Path, tmp_path: Path, cli, kind: str, code: int, words: str) -> None:
    from cytolens.data.bbbc021 import IMAGE_CSV

    root = tmp_path / "data"
    shutil.copytree(bbbc021, root)
    table = pd.read_csv(root / IMAGE_CSV)
    named = root / IMAGE_CSV
    if kind == "a missing column":
        table = table.drop(columns="Image_Metadata_Concentration")
    elif kind == "a non-numeric concentration":
        table["Image_Metadata_Concentration"] = table["Image_Metadata_Concentration"].astype(object)
        table.loc[2, "Image_Metadata_Concentration"] = "ten"
    else:
        named = root / table.loc[0, "Image_PathName_Actin"].split("/")[-1] / table.loc[0, "Image_FileName_Actin"]
        named.unlink()
    table.to_csv(root / IMAGE_CSV, index=False)
    result = cli("data", "check", root, code=code)
    assert "Traceback" not in result.out + result.err
    text = result.error if code == 2 else result.out  # status 2: the one error line (checked by `cli`)
    assert named.name in text and words in text


# -- configs ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "text", "words"), [
    ("an unknown key", "training: {learning_rate: 0.1}\n", "unknown key"),
    ("a wrong type", "folds: ten\n", "'folds'"),
    ("a YAML tag", "name: !!python/object/apply:os.system [ls]\n", "not valid YAML"),
    ("a YAML alias", "a: &x {lr: 1}\ntraining: *x\n", "aliases"),
    ("an infinite learning rate", "training: {lr: .inf}\n", "finite"),
    ("a repeated class", "classes: [a, b, a]\n", "repeated"),
    ("a binary file", None, "not a text file"),
])
def test_a_bad_config_is_one_line_naming_it(tmp_path: Path, cli, kind: str, text: str | None,
                                            words: str) -> None:
    root = _cells(tmp_path / "data")
    config = tmp_path / "my config.yaml"
    if text is None:
        config.write_bytes(bytes(range(256)))
    else:
        config.write_text(text)
    result = cli("classify", "train", root, "--config", config, "--out", tmp_path / "run", code=2)
    assert "my config.yaml" in result.error and words in result.error
    assert not (tmp_path / "run").exists()  # a run that never started pins nothing


# -- a full disk while writing --------------------------------------------------------------------------------
def test_a_full_disk_while_writing_the_manifest(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _cells(tmp_path / "data")
    manifest = tmp_path / "out" / "manifest.parquet"
    cli("data", "check", root, "--manifest", manifest)
    before = manifest.read_bytes()
    real_replace = os.replace

    def full(source: str, target: str) -> None:  # the data is written, then the disk fills on the last step
        if str(target).endswith("manifest.parquet"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", full)
    result = cli("data", "check", root, "--manifest", manifest, code=2)
    assert "manifest.parquet: no space left on the device" in result.error
    assert manifest.read_bytes() == before and sorted(p.name for p in manifest.parent.iterdir()) == ["manifest.parquet"]


# -- names that must simply work ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["données cellulaires", "cells with spaces", "细胞"])
def test_non_ascii_and_spaced_paths_work(tmp_path: Path, cli, name: str) -> None:
    root = _cells(tmp_path / name)
    (root / "a" / "cell_0.tif").rename(root / "a" / "zelle ä 0.tif")
    out = cli("data", "check", root, "--json").out
    assert '"images": 6' in out.replace(" ", "").replace('"images":6', '"images": 6')
