"""The training engine every capability runs on: Lightning Fabric underneath.

- :mod:`~cytolens.engine.runtime`: devices, precision, ranks (:func:`launch`, :class:`Runtime`);
- :mod:`~cytolens.engine.loop`: the fit loop with early stopping, time budget and mid-epoch resume;
- :mod:`~cytolens.engine.run_folder`: ``run.json`` first, ``done.json`` last, the resume rule, :func:`load_run`;
- :mod:`~cytolens.engine.config`: :class:`ExperimentConfig`, the base of every experiment config;
- :mod:`~cytolens.engine.checkpoint`, :mod:`~cytolens.engine.seeds`, :mod:`~cytolens.engine.threads`,
  :mod:`~cytolens.engine.fingerprint`, :mod:`~cytolens.engine.parameters`, :mod:`~cytolens.engine.optimizers`.
"""

from cytolens.engine.checkpoint import load_checkpoint, load_weights, loading_state_from, save_checkpoint
from cytolens.engine.config import ExperimentConfig
from cytolens.engine.fingerprint import data_fingerprint, file_sha1
from cytolens.engine.optimizers import OPTIMIZERS, create_optimizer
from cytolens.engine.loop import EarlyStopping, FitLoop, FitResult, LoopSettings, Position, TimeBudget, TrainTask
from cytolens.engine.precision import PRECISIONS, resolve_precision
from cytolens.engine.run_folder import RunFolder, RunRecord, load_run, run_kind
from cytolens.engine.runtime import EngineOptions, Runtime, launch, shard_bounds
from cytolens.engine.seeds import derive_seed, seed_everything
from cytolens.engine.threads import configure_threads

__all__ = [
    "OPTIMIZERS", "PRECISIONS", "EarlyStopping", "EngineOptions", "ExperimentConfig", "FitLoop", "FitResult",
    "LoopSettings", "Position", "RunFolder", "RunRecord", "Runtime", "TimeBudget", "TrainTask", "configure_threads",
    "create_optimizer", "data_fingerprint", "derive_seed", "file_sha1", "launch", "load_checkpoint", "load_run",
    "load_weights", "loading_state_from", "resolve_precision", "run_kind", "save_checkpoint", "seed_everything", "shard_bounds",
]
