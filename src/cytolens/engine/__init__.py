"""The training engine every capability runs on: Lightning Fabric underneath.

- :mod:`~cytolens.engine.runtime`: devices, precision, ranks (:func:`launch`, :class:`Runtime`);
- :mod:`~cytolens.engine.loop`: the fit loop with early stopping, time budget and mid-epoch resume;
- :mod:`~cytolens.engine.run_folder`: ``run.json`` first, ``done.json`` last, the resume rule, :func:`load_run`;
- :mod:`~cytolens.engine.config`: :class:`ExperimentConfig`, the base of every experiment config;
- :mod:`~cytolens.engine.checkpoint`, :mod:`~cytolens.engine.seeds`, :mod:`~cytolens.engine.threads`,
  :mod:`~cytolens.engine.allocator` (glibc's malloc kept from unmapping freed blocks, applied by :func:`launch`),
  :mod:`~cytolens.engine.fingerprint`, :mod:`~cytolens.engine.parameters`, :mod:`~cytolens.engine.optimizers`.
"""

from __future__ import annotations

import importlib
from typing import Any

# Name -> submodule. Resolved on first use (PEP 562), so a command line that only parses its options, or fails
# on a bad one, never pays for torch and Lightning Fabric.
_LAZY: dict[str, str] = {
    "load_checkpoint": "checkpoint", "load_weights": "checkpoint", "loading_state_from": "checkpoint",
    "save_checkpoint": "checkpoint", "ExperimentConfig": "config", "data_fingerprint": "fingerprint",
    "file_sha1": "fingerprint", "OPTIMIZERS": "optimizers", "create_optimizer": "optimizers",
    "EarlyStopping": "loop", "FitLoop": "loop", "FitResult": "loop", "LoopSettings": "loop", "Position": "loop",
    "TimeBudget": "loop", "TrainTask": "loop", "PRECISIONS": "precision", "resolve_precision": "precision",
    "RunFolder": "run_folder", "RunRecord": "run_folder", "load_run": "run_folder", "run_kind": "run_folder",
    "EngineOptions": "runtime", "Runtime": "runtime", "launch": "runtime", "shard_bounds": "runtime",
    "derive_seed": "seeds", "seed_everything": "seeds", "configure_threads": "threads",
}

__all__ = [
    "OPTIMIZERS", "PRECISIONS", "EarlyStopping", "EngineOptions", "ExperimentConfig", "FitLoop", "FitResult",
    "LoopSettings", "Position", "RunFolder", "RunRecord", "Runtime", "TimeBudget", "TrainTask", "configure_threads",
    "create_optimizer", "data_fingerprint", "derive_seed", "file_sha1", "launch", "load_checkpoint", "load_run",
    "load_weights", "loading_state_from", "resolve_precision", "run_kind", "save_checkpoint", "seed_everything", "shard_bounds",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"cytolens.engine.{_LAZY[name]}"), name)
        globals()[name] = value  # the next lookup is a plain attribute
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
