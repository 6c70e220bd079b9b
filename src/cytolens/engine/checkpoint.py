"""Checkpoints: tensors and plain values only, written atomically, loaded with ``weights_only=True``.

A checkpoint from anywhere cannot run code when loaded: ``torch.load(weights_only=True)`` refuses pickled
objects. A truncated or foreign file is refused with one line naming it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from cytolens.core.atomic import atomic_path
from cytolens.core.errors import CytolensError

__all__ = ["load_checkpoint", "load_weights", "loading_state_from", "save_checkpoint"]


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


def load_weights(module: torch.nn.Module, path: str | Path, *keys: str) -> torch.nn.Module:
    """Load the weights stored at ``keys`` of the checkpoint ``path`` (its top level when none) into ``module``.

    Raises
    ------
    CytolensError
        If the file is not a loadable checkpoint, lacks ``keys``, or holds weights of another model (wrong
        shapes, missing or unexpected layers); the message names the file and the first mismatch.
    """
    path = Path(path)
    state: Any = load_checkpoint(path)
    for key in keys:
        if not isinstance(state, dict) or key not in state:
            raise CytolensError(f"not a checkpoint of this kind: no {'/'.join(keys)!r} in it", path=path)
        state = state[key]
    with loading_state_from(path):
        module.load_state_dict(state)
    return module


@contextlib.contextmanager
def loading_state_from(path: str | Path) -> Iterator[None]:
    """Turn ``load_state_dict``'s errors (weights of another model) into one :class:`CytolensError` naming ``path``."""
    try:
        yield
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        # "Error(s) in loading state_dict for ConvNet:\n\tsize mismatch for ...": the first problem is enough.
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(error).__name__)
        if len(detail) > 200:
            detail = detail[:197] + "..."
        raise CytolensError(f"holds weights of another model ({detail})", path=Path(path)) from error
