"""Embed every cell of a cell store into ``single_cells.parquet``: a trained GAN, its random control, or classical
features.

``PROFILES/single_cells.parquet`` has one row per cell: the cell store's ``Metadata_`` columns,
``Metadata_Cell_Index`` (the row in the store), then the features — ``GAN_0`` … ``GAN_99`` (the discriminator's
100-d linear layer) or the CellProfiler-style names of :mod:`cytolens.profile.features`. pycytominer reads it as
is; its feature inference only recognises ``Cells_``/``Nuclei_``/``Cytoplasm_`` names, so pass
``features=[...]`` for the ``GAN_`` columns.

The store is processed in chunks of ``batch_size`` cells, so memory stays flat. Each finished chunk is written
to ``PROFILES/.embed_chunks/`` and an interrupted run resumes from the first missing chunk, provided the
store, the feature extractor and the chunk size are the same (``state.json`` records them); otherwise it starts
over. The chunks are then joined into ``single_cells.parquet`` (one row group each) and removed.
``PROFILES/profile.json`` describes the result (feature kind, label, paper method, counts).

With ``--devices N`` (or under torchrun/srun) the cells of every chunk are shared among the ranks
(:meth:`~cytolens.engine.Runtime.shard`), each rank embeds its share on its device, and the shares are gathered
back in cell order (:meth:`~cytolens.engine.Runtime.gather_rows`); rank 0 alone writes, so the files are exactly
those one process writes.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cytolens.core.atomic import atomic_path, write_text_atomic
from cytolens.engine import EngineOptions, Runtime, configure_threads, file_sha1, launch
from cytolens.core.errors import CytolensError, OptionError
from cytolens.profile.crops.cell_store import CellStore
from cytolens.profile.profiles import PROFILE_JSON, SINGLE_CELLS

__all__ = ["DEFAULT_RANDOM_CONFIG", "Embedder", "embed", "resolve_embedder"]

CHUNKS = ".embed_chunks"
DEFAULT_RANDOM_CONFIG = "cytogan-lsgan"
GAN_PREFIX = "GAN_"


@dataclass
class Embedder:
    """A function of crops to vectors, with the names of its columns and what identifies it.

    Attributes
    ----------
    function : callable
        ``(n, 96, 96, 3) float32 in [0, 1] -> (n, F) float32``.
    columns : list of str
        The F feature names.
    kind : str
        ``"gan"``, ``"random"`` or ``"classical"``.
    label : str
        Short name for tables (``lsgan``, ``classical``, ``random-lsgan``).
    method : str
        The column of CytoGAN's Table 1 it belongs to: ``dcgan``, ``wgan``, ``lsgan``, ``classical`` or
        ``random``.
    identity : dict
        What must match for a resumed run to reuse earlier chunks.
    """

    function: Callable[[np.ndarray], np.ndarray]
    columns: list[str]
    kind: str
    label: str
    method: str
    identity: dict[str, Any]


def _gan_name(run: Path) -> str:
    import yaml

    config = run / "config.yaml"
    try:
        return str((yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("model", "gan")).lower()
    except (OSError, yaml.YAMLError):
        return "gan"


def resolve_embedder(run: str | Path | None = None, features: str | None = None, *, seed: int = 0,
                     device: Any = None) -> Embedder:
    """The feature extractor for a run and/or a ``features`` choice.

    Parameters
    ----------
    run : path, optional
        A ``profile train`` run folder.
    features : str, optional
        ``"gan"`` (the run's trained discriminator; the default when ``run`` is given), ``"classical"``,
        ``"random"`` (the run's architecture with random weights, or :data:`DEFAULT_RANDOM_CONFIG` without a
        run) or ``"random:<config>"`` (a shipped config name or a YAML path).
    seed : int, default 0
        Seed of the random control's initial weights.
    device : torch.device, optional
        Where a discriminator runs (default: CUDA if present, else the CPU).
    """
    choice = features or ("gan" if run is not None else None)
    if choice is None:
        raise OptionError("give a GAN run folder or `--features classical` / `--features random[:CONFIG]`")
    if choice == "classical":
        from cytolens.profile.features import FEATURES_VERSION, classical_features, feature_names

        return Embedder(
            function=lambda crops: classical_features(crops),
            columns=feature_names(),
            kind="classical",
            label="classical",
            method="classical",
            identity={"kind": "classical", "version": FEATURES_VERSION},
        )
    if choice == "gan":
        if run is None:
            raise OptionError("`--features gan` needs a run folder written by 'cytolens profile train'")
        from cytolens.profile.gan.models import load_feature_extractor

        run = Path(run)
        extractor = load_feature_extractor(run, device=device)
        checkpoint = run / "checkpoints" / "last.pt"
        gan = _gan_name(run)
        return Embedder(
            function=extractor,
            columns=[f"{GAN_PREFIX}{i}" for i in range(extractor.dim)],
            kind="gan",
            label=f"{gan} ({run.name})",
            method=gan,
            identity={"kind": "gan", "run": str(run.resolve()), "checkpoint_sha1": file_sha1(checkpoint)},
        )
    if choice == "random" or choice.startswith("random:"):
        from cytolens.profile.gan.models import random_feature_extractor

        config = choice.partition(":")[2]
        if not config:
            config = str(Path(run) / "config.yaml") if run is not None else DEFAULT_RANDOM_CONFIG
        extractor = random_feature_extractor(config, seed=seed, device=device)
        gan = _gan_name(Path(config).parent) if Path(config).is_file() else Path(config).stem.removeprefix("cytogan-")
        return Embedder(
            function=extractor,
            columns=[f"{GAN_PREFIX}{i}" for i in range(extractor.dim)],
            kind="random",
            label=f"random D ({gan})",
            method="random",
            identity={"kind": "random", "config": config, "seed": int(seed)},
        )
    raise OptionError(f"`features` must be 'gan', 'classical', 'random' or 'random:<config>', got {choice!r}")


def _metadata(index: pd.DataFrame, start: int, stop: int) -> pd.DataFrame:
    meta = index.iloc[start:stop][[c for c in index.columns if str(c).startswith("Metadata_")]].reset_index(drop=True)
    meta["Metadata_Cell_Index"] = np.arange(start, stop, dtype=np.int64)
    return meta


def embed(
    cells: str | Path,
    out: str | Path,
    *,
    run: str | Path | None = None,
    features: str | None = None,
    seed: int = 0,
    batch_size: int = 1024,
    progress: Callable[[int], None] | None = None,
    options: EngineOptions | None = None,
) -> Path:
    """Embed every cell of a cell store into ``OUT/single_cells.parquet``.

    Parameters
    ----------
    cells : path
        A cell store (``profile crop``).
    out : path
        The profiles folder (created).
    run, features, seed
        The extractor, see :func:`resolve_embedder`.
    batch_size : int, default 1024
        Cells per chunk (read, embedded and written together).
    progress : callable, optional
        Called with the number of cells done after each chunk (also for chunks reused on resume); one process
        only (spawned ranks cannot call back).
    options : EngineOptions, optional
        Devices and precision (default: one process, fp32).

    Returns
    -------
    Path
        ``OUT/single_cells.parquet``. If it already exists for the same store and extractor it is kept.
    """
    if int(batch_size) != batch_size or batch_size < 1:
        raise OptionError(f"`batch_size` must be a positive integer, got {batch_size!r}")
    options = options or EngineOptions()
    if options.precision is None:  # profiles compare across runs: fp32 unless asked otherwise
        options = replace(options, precision="32-true")
    if options.devices > 1:
        progress = None
    launch(_embed_on_rank, options, Path(cells), Path(out), run, features, int(seed), int(batch_size), progress)
    return Path(out) / SINGLE_CELLS


def _embed_on_rank(runtime: Runtime, cells: Path, out: Path, run: str | Path | None, features: str | None,
                   seed: int, batch_size: int, progress: Callable[[int], None] | None) -> None:
    configure_threads(None, local_processes=runtime.local_processes)
    store = CellStore(cells)
    embedder = resolve_embedder(run, features, seed=seed, device=runtime.device)
    target = out / SINGLE_CELLS
    info_path = out / PROFILE_JSON
    source = {"cells": str(cells.resolve()), "n_cells": len(store), "store": store.metadata}
    state = {"identity": embedder.identity, "source": source, "batch_size": batch_size,
             "precision": runtime.precision}
    if target.is_file() and info_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("identity") == embedder.identity and info.get("source", {}).get("n_cells") == len(store) and \
                info.get("source", {}).get("cells") == source["cells"]:
            if progress is not None:
                progress(len(store))
            return
    if len(store) == 0:
        raise CytolensError("the cell store has no cells", path=cells)

    chunk_dir = out / CHUNKS
    n_chunks = (len(store) + batch_size - 1) // batch_size
    missing: list[int] = []
    if runtime.is_main:
        out.mkdir(parents=True, exist_ok=True)
        state_path = chunk_dir / "state.json"
        if chunk_dir.is_dir() and (not state_path.is_file() or json.loads(state_path.read_text()) != json.loads(
                json.dumps(state, default=str))):
            shutil.rmtree(chunk_dir)  # chunks of another store, extractor, chunk size or precision: start over
        chunk_dir.mkdir(exist_ok=True)
        write_text_atomic(state_path, json.dumps(state, indent=2, default=str) + "\n")
        missing = [k for k in range(n_chunks) if not _chunk_path(chunk_dir, k).is_file()]
    missing = runtime.broadcast(missing)  # one view of what is left, whatever each rank's file system shows

    index = store.index
    # One schema for every chunk, from the whole index: a chunk whose MOA is all missing keeps a string column.
    meta_schema = pa.Schema.from_pandas(_metadata(index, 0, len(store)), preserve_index=False)
    schema = pa.schema(list(meta_schema) + [pa.field(name, pa.float32()) for name in embedder.columns])
    todo = set(missing)
    started = time.perf_counter()
    for k in range(n_chunks):
        start, stop = k * batch_size, min((k + 1) * batch_size, len(store))
        if k in todo:
            vectors = runtime.gather_rows(_embed_share(runtime, store, embedder, start, stop), stop - start)
            if runtime.is_main:
                table = pd.concat(
                    [_metadata(index, start, stop), pd.DataFrame(vectors, columns=embedder.columns)], axis=1
                )
                with atomic_path(_chunk_path(chunk_dir, k)) as tmp:
                    pq.write_table(pa.Table.from_pandas(table, schema=schema, preserve_index=False), tmp)
        if progress is not None:
            progress(stop - start)
    seconds = time.perf_counter() - started
    if not runtime.is_main:
        runtime.barrier()
        return

    with atomic_path(target) as tmp, pq.ParquetWriter(str(tmp), schema) as writer:
        for k in range(n_chunks):
            writer.write_table(pq.read_table(_chunk_path(chunk_dir, k), schema=schema))
    info = {
        "kind": embedder.kind,
        "label": embedder.label,
        "method": embedder.method,
        "identity": embedder.identity,
        "source": source,
        "n_cells": len(store),
        "n_features": len(embedder.columns),
        "feature_prefix": GAN_PREFIX if embedder.kind != "classical" else None,
        "seconds": round(seconds, 1),
    }
    write_text_atomic(info_path, json.dumps(info, indent=2, default=str) + "\n")
    shutil.rmtree(chunk_dir)
    runtime.barrier()  # the other ranks return once the files are complete


def _chunk_path(chunk_dir: Path, k: int) -> Path:
    return chunk_dir / f"chunk-{k:06d}.parquet"


def _embed_share(runtime: Runtime, store: CellStore, embedder: Embedder, start: int, stop: int) -> np.ndarray:
    """This rank's share of cells ``start:stop``, embedded: float32 (share, F)."""
    share = runtime.shard(stop - start)
    if len(share) == 0:
        return np.zeros((0, len(embedder.columns)), np.float32)
    with runtime.autocast():
        vectors = np.asarray(embedder.function(store.crops(slice(start + share.start, start + share.stop))),
                             dtype=np.float32)
    if vectors.shape != (len(share), len(embedder.columns)):
        raise CytolensError(f"the extractor returned shape {vectors.shape} for {len(share)} cells")
    return vectors
