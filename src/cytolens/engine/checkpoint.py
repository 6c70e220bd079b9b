"""Checkpoints: tensors and plain values only, written atomically, loaded with ``weights_only=True``.

A checkpoint from anywhere cannot run code when loaded: ``torch.load(weights_only=True)`` refuses pickled
objects. A truncated or foreign file is refused with one line naming it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cytolens.core.atomic import atomic_path
from cytolens.core.errors import CytolensError

__all__ = ["load_checkpoint", "save_checkpoint"]


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Save ``state`` (tensors, numbers, strings, lists and dicts of them) atomically to ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (or any tensors-only file) onto the CPU, safely.

    Raises
    ------
    CytolensError
        If the file is missing, truncated, not a torch file, or holds pickled objects.
    """
    path = Path(path)
    if not path.is_file():
        raise CytolensError("checkpoint not found", path=path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt, truncated or unsafe files
        reason = "holds pickled objects, refused" if "weights_only" in str(exc) else "truncated or not a checkpoint"
        raise CytolensError(f"not a loadable checkpoint: {reason} ({type(exc).__name__})", path=path) from exc
    if not isinstance(state, dict):
        raise CytolensError(f"not a checkpoint: holds a {type(state).__name__}, not a mapping", path=path)
    return state
