"""Content hashes of files: how cytolens recognises the same image under another name or in another folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["file_sha1"]


def file_sha1(path: str | Path) -> str:
    """SHA-1 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
