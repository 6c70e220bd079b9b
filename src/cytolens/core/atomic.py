"""Atomic file output: a file is either absent or complete, never half-written.

Every writer in cytolens goes through :func:`atomic_path`, so a crash or Ctrl-C in the middle of a long run
leaves the previous version of each output (or nothing), and a resumed run can trust what it finds.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it over ``path`` in one step.

    Parameters
    ----------
    path : str or Path
        The final destination. Its parent folder is created if needed.

    Yields
    ------
    Path
        A temporary file in the same folder (same file system, so the final ``os.replace`` is atomic).
        It keeps the destination's suffix so that libraries choosing a format by suffix still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the full suffix (".ome.tif") so format detection by name behaves as for the destination.
    suffix = "".join(path.suffixes[-2:]) if path.name.lower().endswith((".ome.tif", ".ome.tiff")) else path.suffix
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600 files; give the result the permissions a plain open() would (shared servers).
        os.chmod(tmp, 0o666 & ~_umask())
        # Flush to disk before the rename, so a power cut cannot leave an empty file under the final name.
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    # os.umask can only be read by setting it; restore it at once.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
