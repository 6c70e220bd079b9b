"""Every seed of a run derives from the run's one seed, so any part of a run repeats on its own.

A unit of work (a fold, a task, a training step on one rank) gets ``derive_seed(seed, *keys)``: independent
streams for different keys, the same stream for the same keys, whatever ran before. Training steps reseed from
``(seed, step, rank)``, so a run resumed from a checkpoint continues with exactly the randomness an
uninterrupted run would have used, without storing generator states.
"""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["derive_seed", "seed_everything"]


def derive_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed for the unit ``keys`` of a run seeded with ``seed`` (numpy's ``SeedSequence``).

    Parameters
    ----------
    seed : int
        The run's seed, ≥ 0.
    *keys : int
        Non-negative integers naming the unit (task index, fold, step, rank, ...).
    """
    return int(np.random.SeedSequence([int(seed), *(int(k) for k in keys)]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
