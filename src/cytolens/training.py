"""Training plumbing shared by the capabilities: seeds, threads, early stopping, checkpoints.

Checkpoints hold tensors only and load with ``torch.load(weights_only=True)``, so a checkpoint from
anywhere cannot run code; everything else a run needs is in its ``config.yaml``.
"""

from __future__ import annotations

import copy
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cytolens.atomic import atomic_path
from cytolens.errors import CytolensError


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch so a run repeats on the same machine and library versions."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_threads(num_threads: int | None) -> None:
    """Use ``num_threads`` CPU threads for torch (``None``: torch's default, one per core)."""
    if num_threads is not None:
        torch.set_num_threads(num_threads)


def select_device() -> torch.device:
    """CUDA when present (the same code runs there), else the CPU; ``CYTOLENS_DEVICE`` overrides."""
    wanted = os.environ.get("CYTOLENS_DEVICE")
    if wanted:
        return torch.device(wanted)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class EarlyStopping:
    """Stop when a monitored score has not improved for ``patience`` epochs; remember the best weights.

    The paper's rule is validation accuracy with patience 2. Ties do not count as improvement, so the
    earliest best epoch is kept.
    """

    patience: int
    best_score: float = -float("inf")
    best_epoch: int = -1
    best_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    _waited: int = 0

    def update(self, score: float, epoch: int, model: torch.nn.Module) -> bool:
        """Record an epoch's score; return True when training should stop."""
        if score > self.best_score:
            self.best_score = score
            self.best_epoch = epoch
            self.best_state = copy.deepcopy(model.state_dict())
            self._waited = 0
            return False
        self._waited += 1
        return self._waited >= self.patience


def save_checkpoint(state: dict[str, torch.Tensor], path: str | Path) -> Path:
    """Save a ``state_dict`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a ``state_dict`` saved by :func:`save_checkpoint` (or any tensors-only file), safely.

    Raises
    ------
    CytolensError
        If the file is missing or is not a tensors-only checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CytolensError("checkpoint not found", path=path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise CytolensError(f"not a loadable checkpoint ({type(exc).__name__})", path=path) from exc
