"""The image reader under random bytes, truncations and header mutations of valid files (hypothesis).

Whatever the bytes, :func:`read_image` returns an array in a dtype the file can declare or raises the project's
own :class:`ImageReadError`, never anything else, and never returns more pixel values than the limit allows.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cytolens.core.errors import ImageReadError
from cytolens.data.io import read_image

LIMIT = 1 << 16  # pixel values: small, so that "never past the limit" is tested on tiny files


def _tiff(**options: object) -> bytes:
    buffer = io.BytesIO()
    data = np.arange(24 * 20, dtype=np.uint16).reshape(24, 20)
    tifffile.imwrite(buffer, data, **options)
    return buffer.getvalue()


def _pillow(fmt: str, mode: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    array = np.arange(24 * 20 * (3 if mode == "RGB" else 1), dtype=np.uint8).reshape(
        (24, 20, 3) if mode == "RGB" else (24, 20))
    Image.fromarray(array, mode=mode).save(buffer, format=fmt)
    return buffer.getvalue()


SEEDS = {
    "tiff": _tiff(),
    "tiff-zlib-tiled": _tiff(compression="zlib", tile=(16, 16)),
    "ome-tiff": _tiff(metadata={"axes": "YX"}, ome=True),
    "png-gray": _pillow("PNG", "L"),
    "png-rgb": _pillow("PNG", "RGB"),
    "jpeg": _pillow("JPEG", "L"),
}
SUFFIX = {"tiff": ".tif", "tiff-zlib-tiled": ".tif", "ome-tiff": ".ome.tif", "png-gray": ".png", "png-rgb": ".png",
          "jpeg": ".jpg"}


@st.composite
def damaged(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid file truncated, with bytes of its header changed, or with random bytes after its magic number."""
    name = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[name])
    how = draw(st.sampled_from(["truncate", "mutate", "random"]))
    if how == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == "mutate":
        for _ in range(draw(st.integers(1, 8))):
            position = draw(st.integers(0, min(len(data), 256) - 1))
            data[position] = draw(st.integers(0, 255))
    else:
        data = data[:4] + bytearray(draw(st.binary(min_size=0, max_size=400)))
    return name, bytes(data)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=damaged())
def test_the_reader_returns_an_image_or_raises_its_own_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             case: tuple[str, bytes]) -> None:
    monkeypatch.setenv("CYTOLENS_MAX_IMAGE_PIXELS", str(LIMIT))
    name, data = case
    path = tmp_path / f"fuzzed{SUFFIX[name]}"
    path.write_bytes(data)
    try:
        image = read_image(path)
    except ImageReadError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    assert isinstance(image, np.ndarray) and image.ndim in (2, 3)
    assert image.dtype.kind in "uif" and image.size <= LIMIT
