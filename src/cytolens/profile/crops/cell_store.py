"""The cell store: single-cell crops on disk in a chunked array, with a Parquet index of their metadata.

A cell store is a folder::

    CELLS/crops.zarr      uint8 array (N, S, S, 3): crop i, channels R=DNA, G=tubulin, B=actin, 0..255 = 0..1
    CELLS/cells.parquet   N rows, row i describes crop i: Metadata_ columns (Plate, Well, Site, Compound, ...)
    CELLS/store.json      crop size, channel names, normalisation; written last, so its presence marks a
                          complete store

Crops are appended field by field, so memory stays flat however large the dataset; readers fetch any rows
without loading the rest. uint8 is enough: crops are already normalised to [0, 1] (CytoGAN scales each crop's
channels by their maximum) and it halves the size of float16 for datasets of half a million cells.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import zarr

from cytolens.core.atomic import atomic_path, write_text_atomic
from cytolens.core.errors import LayoutError
from cytolens.core.files import read_json_object, read_parquet_table

CROPS_NAME = "crops.zarr"
INDEX_NAME = "cells.parquet"
META_NAME = "store.json"
CHANNELS = ("DNA", "tubulin", "actin")
# Crops per zarr chunk along the cell axis: ~7 MB per chunk at 96x96x3, a few fields' worth of cells.
CHUNK_CELLS = 256


class CellStoreWriter:
    """Append crops and their metadata rows to a new cell store.

    Parameters
    ----------
    path : str or Path
        The store folder. An incomplete store left there by an interrupted run is replaced.
    crop_size : int
        Side of the square crops in pixels (96 in CytoGAN).
    metadata : dict
        Written to ``store.json`` (normalisation, masking, source dataset, ...).
    """

    def __init__(self, path: str | Path, *, crop_size: int, metadata: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.crop_size = int(crop_size)
        self.metadata = dict(metadata or {})
        if (self.path / CROPS_NAME).exists():
            shutil.rmtree(self.path / CROPS_NAME)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / META_NAME).unlink(missing_ok=True)
        self._array = zarr.create_array(
            store=str(self.path / CROPS_NAME),
            shape=(0, self.crop_size, self.crop_size, len(CHANNELS)),
            chunks=(CHUNK_CELLS, self.crop_size, self.crop_size, len(CHANNELS)),
            dtype="uint8",
        )
        self._rows: list[pd.DataFrame] = []
        self._count = 0

    def append(self, crops: np.ndarray, rows: pd.DataFrame) -> None:
        """Append ``crops`` (n, S, S, 3) float in [0, 1] or uint8, described by ``rows`` (n rows)."""
        if len(crops) != len(rows):
            raise ValueError(f"got {len(crops)} crops but {len(rows)} metadata rows")
        if len(crops) == 0:
            return
        expected = (self.crop_size, self.crop_size, len(CHANNELS))
        if tuple(crops.shape[1:]) != expected:
            raise ValueError(f"crops must have shape (n, {expected[0]}, {expected[1]}, {expected[2]}), got {crops.shape}")
        data = to_uint8(crops)
        start = self._count
        self._array.resize((start + len(data), *expected))
        self._array[start : start + len(data)] = data
        self._count += len(data)
        self._rows.append(rows.reset_index(drop=True))

    def close(self) -> Path:
        """Write the index and ``store.json`` (the completion marker); return the store folder."""
        index = pd.concat(self._rows, ignore_index=True) if self._rows else pd.DataFrame()
        with atomic_path(self.path / INDEX_NAME) as tmp:
            index.to_parquet(tmp, index=False)
        meta = {"n_cells": self._count, "crop_size": self.crop_size, "channels": list(CHANNELS), **self.metadata}
        write_text_atomic(self.path / META_NAME, json.dumps(meta, indent=2) + "\n")
        return self.path


def to_uint8(crops: np.ndarray) -> np.ndarray:
    """Map crops in [0, 1] (any float dtype) to uint8 0..255; uint8 input is returned unchanged."""
    if crops.dtype == np.uint8:
        return crops
    return np.round(np.clip(crops, 0.0, 1.0) * 255.0).astype(np.uint8)


class CellStore:
    """Read a complete cell store: ``len(store)``, ``store.index`` (DataFrame), ``store.crops(rows)``.

    Parameters
    ----------
    path : str or Path
        The store folder written by :class:`CellStoreWriter`.

    Raises
    ------
    LayoutError
        If the folder is not a complete cell store.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta_path = self.path / META_NAME
        if not meta_path.is_file():
            raise LayoutError(f"{self.path}: not a complete cell store (no {META_NAME}; was the crop run interrupted?)")
        self.metadata: dict[str, Any] = read_json_object(meta_path)
        self.index = read_parquet_table(self.path / INDEX_NAME)
        self._array = zarr.open_array(str(self.path / CROPS_NAME), mode="r")
        if self._array.shape[0] != len(self.index):
            raise LayoutError(
                f"{self.path}: {self._array.shape[0]} crops but {len(self.index)} rows in {INDEX_NAME}"
            )

    def __len__(self) -> int:
        return int(self._array.shape[0])

    @property
    def crop_size(self) -> int:
        """Side of the square crops in pixels."""
        return int(self._array.shape[1])

    def crops(self, rows: Sequence[int] | np.ndarray | slice | None = None) -> np.ndarray:
        """Return crops as float32 (n, S, S, 3) in [0, 1]; ``rows`` selects cells (default: all)."""
        if rows is None:
            data = self._array[:]
        elif isinstance(rows, slice):
            data = self._array[rows]
        else:
            order = np.asarray(rows, dtype=np.int64)
            # zarr reads sorted, unique coordinates fastest; restore the caller's order afterwards.
            unique, inverse = np.unique(order, return_inverse=True)
            data = self._array.get_orthogonal_selection((unique, slice(None), slice(None), slice(None)))[inverse]
        return np.asarray(data, dtype=np.float32) / 255.0
