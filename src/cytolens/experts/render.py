"""Microscope images as 8-bit PNG for the browser, with a contrast stretch and a disk cache.

A 14-bit camera's image in a 16-bit TIFF looks black when shown as it is; every image is therefore stretched
between its own 0.5th and 99.8th percentile (per channel), the way an expert would set the display range in
Fiji. The PNG carries pixels only: no file name, no metadata.
"""

from __future__ import annotations

import hashlib
import io
import threading
from pathlib import Path

import numpy as np

from cytolens.core.atomic import atomic_path
from cytolens.data.io import normalize_intensity, read_image, to_grayscale

DISPLAY_PERCENTILES = (0.5, 99.8)


def render_png(path: str | Path, *, percentiles: tuple[float, float] = DISPLAY_PERCENTILES) -> bytes:
    """Read an image and encode it as an 8-bit PNG for display.

    Parameters
    ----------
    path : str or Path
        Any image :func:`cytolens.data.io.read_image` reads (8/16-bit, float, TIFF/PNG/JPEG).
    percentiles : (float, float)
        Low and high percentiles mapped to black and white, per channel.

    Returns
    -------
    bytes
        A PNG: grayscale for one channel (or channels other than 3/4), RGB for three or four channels.

    Raises
    ------
    ImageReadError
        If the file cannot be read.
    """
    from PIL import Image

    image = read_image(path)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        image = image[..., :3]
    elif image.ndim == 3:
        image = to_grayscale(image)
    scaled = normalize_intensity(image, method="percentile", percentiles=percentiles)
    pixels = np.rint(scaled * 255.0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class PngCache:
    """Rendered PNGs kept on disk (and the last few in memory), keyed by image id and the file's state.

    Parameters
    ----------
    folder : str or Path
        Where the PNGs go (created on first use). Names are internal ids, never the images' file names.
    memory_items : int, default 64
        How many PNGs are also kept in memory.
    """

    def __init__(self, folder: str | Path, *, memory_items: int = 64) -> None:
        self.folder = Path(folder)
        self.memory_items = memory_items
        self._memory: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def get(self, image_id: int, path: str | Path) -> bytes:
        """The PNG of an image, rendered on first use; a changed source file is rendered again."""
        path = Path(path)
        stat = path.stat()
        version = hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
        name = f"{image_id}-{version}.png"
        with self._lock:
            if name in self._memory:
                return self._memory[name]
        cached = self.folder / name
        if cached.is_file():
            data = cached.read_bytes()
        else:
            data = render_png(path)
            with atomic_path(cached) as tmp:
                tmp.write_bytes(data)
        with self._lock:
            self._memory[name] = data
            while len(self._memory) > self.memory_items:
                self._memory.pop(next(iter(self._memory)))
        return data
