"""Atomic file output: a file is either absent or complete, never half-written.

Every writer in cytolens goes through :func:`atomic_path`, so a crash or Ctrl-C in the middle of a long run
leaves the previous version of each output (or nothing), and a resumed run can trust what it finds.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cytolens.core.errors import CytolensError


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
    except (OSError, RuntimeError) as exc:
        if is_disk_full(exc):
            raise CytolensError("no space left on the device; nothing was written (free some space and run "
                                "the command again: finished steps are kept)", path=path) from exc
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it takes the place of ``path``.

    A folder-shaped output (an OME-Zarr store: a tree of chunk files) cannot be replaced by one ``os.replace``
    when an older version exists, so the older folder is first renamed aside, the new one renamed into place,
    and only then is the older one removed: at every moment ``path`` is either the complete old folder, absent
    for the instant between two renames, or the complete new one. On an error the temporary folder is removed
    and ``path`` is untouched.

    Parameters
    ----------
    path : str or Path
        The final folder. Its parent folder is created if needed.

    Yields
    ------
    Path
        An empty temporary folder on the same file system (a hidden name, ``.<name>.<random>.tmp``).
    """
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old: Path | None = None
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders; give what a plain mkdir would
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / "previous")
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except (OSError, RuntimeError) as exc:
        if old is not None and (old / "previous").exists() and not path.exists():
            os.replace(old / "previous", path)  # the rename of the new folder failed: put the old one back
        if is_disk_full(exc):
            raise CytolensError("no space left on the device; nothing was written (free some space and run "
                                "the command again: finished steps are kept)", path=path) from exc
        raise
    finally:
        for leftover in (tmp, old):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the file system is full (or the user's quota spent), however the writer phrased it.

    ``open``/``write`` set ``errno``; pyarrow raises an ``OSError`` with the words only; ``torch.save`` a
    ``RuntimeError`` ("file write failed"); SQLite an ``OperationalError`` ("database or disk is full").
    """
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return ("No space left on device" in text or "Disk quota exceeded" in text or "disk is full" in text
            or (isinstance(exc, RuntimeError) and "write failed" in text))


def reserve(handle: int, size: int) -> None:
    """Allocate ``size`` bytes of an open file on disk now, so that a full disk is an error here.

    A memory-mapped file is created sparse: writing into its pages on a full disk kills the process with SIGBUS
    (no message, no cleanup). Reserving its blocks first turns that into an ``OSError`` (ENOSPC).
    """
    if size > 0 and hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(handle, 0, size)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # a file system without it: the old behaviour
                return
            raise


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
