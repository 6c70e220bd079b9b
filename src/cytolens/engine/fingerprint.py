"""Data fingerprints from file contents: a run resumes only on the very images it started with.

A fingerprint hashes every file's bytes together with a table of where each file went (class, split, fold),
so an image replaced in place, or a different split of the same files, is a different dataset.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path

from cytolens.core.hashing import file_sha1

__all__ = ["data_fingerprint", "file_sha1"]


def data_fingerprint(files: Iterable[str | Path], table: str = "", *,
                     progress: Callable[[int], None] | None = None) -> str:
    """SHA-256 over the contents of ``files`` (in the given order) and a text ``table`` of their assignment.

    Parameters
    ----------
    files : iterable of path
        Every file the run reads.
    table : str
        What the run did with them (a CSV of class, split, fold), hashed with them.
    progress : callable, optional
        Called with 1 after each file.
    """
    digest = hashlib.sha256(table.encode("utf-8"))
    for path in files:
        digest.update(file_sha1(path).encode("ascii"))
        if progress is not None:
            progress(1)
    return digest.hexdigest()
