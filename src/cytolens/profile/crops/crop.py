"""``cytolens profile crop``: single-cell crops from a BBBC021-layout dataset, into a cell store.

For every field (DNA, tubulin and actin TIFFs) the cells are segmented (:mod:`cytolens.profile.crops.cell_segmentation`)
and a ``crop_size`` × ``crop_size`` × 3 crop (R = DNA, G = tubulin, B = actin) is cut around each cell, centred
on the centre of the cell's bounding box as in CytoGAN. Options:

* ``mask_neighbours``: pixels of other segmented cells are set to 0 (CytoGAN masks them; background is kept).
* ``normalisation``: ``crop_max`` (CytoGAN), ``plate_percentile`` or ``illumination`` (see
  :mod:`cytolens.profile.crops.normalisation`).
* ``border``: a cell whose crop would leave the field is **skipped** by default, as CytoGAN does (a cut-off
  crop holds a cut-off cell, and zero padding is a border the network would learn); ``pad`` keeps it, filling
  the outside with zeros. The number skipped is reported per plate.

Resume and memory: plates are processed one at a time (or in parallel with ``workers``), each into its own part
store under ``OUT/parts/<plate>/`` that is complete only once its ``store.json`` exists; a rerun skips complete
parts, then copies the parts into the final store in chunks and removes them. The final ``store.json`` is written
last, so an interrupted run never leaves a store that looks complete. Memory holds one field (and one chunk of
crops) at a time, whatever the size of the dataset.

Ranks (``--devices N``, torchrun or srun): the plates left to crop are shared among the ranks
(:meth:`~cytolens.engine.Runtime.shard`), each rank writes the part stores of its plates, and rank 0 merges all
parts in plate order once every rank is done: the same rows in the same order as one process writes.

Index columns (pycytominer style): ``Metadata_Plate, Metadata_Well, Metadata_Site, Metadata_Replicate,
Metadata_Compound, Metadata_Concentration, Metadata_MOA`` (None where the MOA table has no entry),
``Metadata_Batch`` (the week), ``Metadata_TableNumber, Metadata_ImageNumber, Metadata_ObjectNumber`` (the cell's
label in its field), ``Metadata_Cell_X, Metadata_Cell_Y`` (crop centre in field pixels),
``Metadata_Nucleus_X, Metadata_Nucleus_Y`` (nucleus centroid), ``Metadata_Nucleus_Area, Metadata_Cell_Area`` (px).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import ndimage as ndi

from cytolens.core.atomic import write_text_atomic
from cytolens.data.bbbc021 import CHANNELS, read_bbbc021
from cytolens.engine import EngineOptions, Runtime, launch
from cytolens.core.errors import CytolensError, ImageReadError, OptionError, check_choice
from cytolens.data.io import read_image
from cytolens.profile.crops.cell_segmentation import Segmenter, make_segmenter
from cytolens.profile.crops.cell_store import CHUNK_CELLS, META_NAME, CellStore, CellStoreWriter, to_uint8
from cytolens.profile.crops.normalisation import (
    NORMALISATIONS, PERCENTILES, PlateStatistics, crop_maximum, normalise_field, plate_statistics,
)

BORDERS: tuple[str, ...] = ("skip", "pad")
PARTS = "parts"
SETTINGS_NAME = "crop_settings.json"
INDEX_COLUMNS: tuple[str, ...] = (
    "Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_Replicate", "Metadata_Compound",
    "Metadata_Concentration", "Metadata_MOA", "Metadata_Batch", "Metadata_TableNumber", "Metadata_ImageNumber",
    "Metadata_ObjectNumber", "Metadata_Cell_X", "Metadata_Cell_Y", "Metadata_Nucleus_X", "Metadata_Nucleus_Y",
    "Metadata_Nucleus_Area", "Metadata_Cell_Area",
)
_COPY_CHUNK = 2 * CHUNK_CELLS


def read_field(row: pd.Series | dict) -> NDArray[np.float32]:
    """The three channels of a field (a row of :func:`~cytolens.data.bbbc021.read_bbbc021`) as (3, H, W) float32.

    Raises
    ------
    ImageReadError
        If a file is missing or unreadable, has more than one channel, or the channels differ in size.
    """
    images = []
    for channel in CHANNELS:
        image = read_image(row[f"path_{channel}"])
        if image.ndim != 2:  # the rule and the words of 'cytolens data check'
            raise ImageReadError(f"the {channel} image must have one channel, got {image.shape[2]}",
                                 path=row[f"path_{channel}"])
        images.append(image)
    if len({image.shape for image in images}) > 1:
        raise ImageReadError(f"channels differ in size: {', '.join('×'.join(map(str, i.shape)) for i in images)}",
                             path=row["path_DAPI"])
    return np.stack(images).astype(np.float32)


def extract_crops(
    image: NDArray[np.float32],
    nuclei: NDArray[np.integer],
    cells: NDArray[np.integer],
    *,
    crop_size: int = 96,
    mask_neighbours: bool = False,
    border: str = "skip",
) -> tuple[NDArray[np.float32], pd.DataFrame, int]:
    """Cut one crop per cell out of a field.

    Parameters
    ----------
    image : (3, H, W) ndarray of float32
        The field's channels (DNA, tubulin, actin), already normalised if the method is per plate.
    nuclei, cells : (H, W) ndarray of int
        Labels; cell ``k`` has nucleus ``k``.
    crop_size : int
        Side of the crops.
    mask_neighbours : bool
        Zero the pixels of other cells.
    border : {"skip", "pad"}
        What to do with cells whose crop leaves the field.

    Returns
    -------
    crops : (n, S, S, 3) ndarray of float32
        In the field's units (not yet scaled by ``crop_max``).
    rows : pandas.DataFrame
        ``Metadata_ObjectNumber, Metadata_Cell_X, Metadata_Cell_Y, Metadata_Nucleus_X, Metadata_Nucleus_Y,
        Metadata_Nucleus_Area, Metadata_Cell_Area`` per crop.
    skipped : int
        Cells skipped at the border.
    """
    height, width = cells.shape
    half = crop_size // 2
    n = int(cells.max(initial=0))
    flat_cells, flat_nuclei = cells.ravel().astype(np.int64), nuclei.ravel().astype(np.int64)
    cell_area = np.bincount(flat_cells, minlength=n + 1)
    nucleus_area = np.bincount(flat_nuclei, minlength=n + 1)
    yy, xx = np.indices(cells.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        nucleus_y = np.bincount(flat_nuclei, weights=yy.ravel(), minlength=n + 1) / nucleus_area
        nucleus_x = np.bincount(flat_nuclei, weights=xx.ravel(), minlength=n + 1) / nucleus_area
    crops, rows, skipped = [], [], 0
    for label, box in enumerate(ndi.find_objects(cells), start=1):
        if box is None:
            continue
        centre_y = (box[0].start + box[0].stop - 1) / 2
        centre_x = (box[1].start + box[1].stop - 1) / 2
        top, left = int(np.floor(centre_y + 0.5)) - half, int(np.floor(centre_x + 0.5)) - half
        bottom, right = top + crop_size, left + crop_size
        outside = top < 0 or left < 0 or bottom > height or right > width
        if outside and border == "skip":
            skipped += 1
            continue
        crop = np.zeros((3, crop_size, crop_size), dtype=np.float32)
        labels = np.zeros((crop_size, crop_size), dtype=cells.dtype)
        y0, x0, y1, x1 = max(top, 0), max(left, 0), min(bottom, height), min(right, width)
        crop[:, y0 - top : y1 - top, x0 - left : x1 - left] = image[:, y0:y1, x0:x1]
        labels[y0 - top : y1 - top, x0 - left : x1 - left] = cells[y0:y1, x0:x1]
        if mask_neighbours:
            crop[:, (labels != 0) & (labels != label)] = 0.0
        crops.append(np.moveaxis(crop, 0, -1))
        rows.append({"Metadata_ObjectNumber": label, "Metadata_Cell_X": centre_x, "Metadata_Cell_Y": centre_y,
                     "Metadata_Nucleus_X": float(nucleus_x[label]), "Metadata_Nucleus_Y": float(nucleus_y[label]),
                     "Metadata_Nucleus_Area": int(nucleus_area[label]), "Metadata_Cell_Area": int(cell_area[label])})
    stack = np.stack(crops) if crops else np.zeros((0, crop_size, crop_size, 3), dtype=np.float32)
    return stack, pd.DataFrame(rows, columns=list(INDEX_COLUMNS[10:])), skipped


def _field_metadata(row: pd.Series, n: int) -> dict[str, Any]:
    moa = row["MOA"] if isinstance(row["MOA"], str) else None
    return {"Metadata_Plate": [row["Plate"]] * n, "Metadata_Well": [row["Well"]] * n,
            "Metadata_Site": [int(row["Site"])] * n, "Metadata_Replicate": [int(row["Replicate"])] * n,
            "Metadata_Compound": [row["Compound"]] * n, "Metadata_Concentration": [float(row["Concentration"])] * n,
            "Metadata_MOA": pd.Series([moa] * n, dtype=object), "Metadata_Batch": [row["Batch"]] * n,
            "Metadata_TableNumber": [int(row["TableNumber"])] * n,
            "Metadata_ImageNumber": [int(row["ImageNumber"])] * n}


def _sample_rows(fields: pd.DataFrame, count: int) -> pd.DataFrame:
    if len(fields) <= count:
        return fields
    return fields.iloc[np.linspace(0, len(fields) - 1, count).round().astype(int)]


def _plate_stats(fields: pd.DataFrame, settings: dict[str, Any], cache: Path) -> PlateStatistics | None:
    """Per-plate statistics for the plate normalisations, computed once and cached beside the part store."""
    if settings["normalisation"] == "crop_max":
        return None
    if cache.is_file():
        return PlateStatistics.load(cache)
    loaders = []
    for _, row in _sample_rows(fields, settings["sample_fields"]).iterrows():
        loaders.append(lambda row=row: read_field(row))
    usable = []
    for load in loaders:  # leave unreadable fields out of the sample; they are reported when cropped
        try:
            load()
        except ImageReadError:
            continue
        usable.append(load)
    if not usable:
        raise CytolensError("no readable field to compute its normalisation from", path=fields["path_DAPI"].iloc[0])
    stats = plate_statistics(usable, illumination=settings["normalisation"] == "illumination",
                             percentiles=tuple(settings["percentiles"]))
    stats.save(cache)
    return stats


def crop_plate(fields: pd.DataFrame, part: Path, settings: dict[str, Any],
               progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Crop every field of one plate into the part store ``part``; returns the plate's summary."""
    segmenter: Segmenter = make_segmenter(settings["segmentation"])
    stats = _plate_stats(fields, settings, part.parent / f"{part.name}.stats.npz")
    writer = _BufferedWriter(CellStoreWriter(part, crop_size=settings["crop_size"], metadata={}))
    summary: dict[str, Any] = {"fields": len(fields), "cells": 0, "skipped_border": 0, "problems": []}
    for _, row in fields.iterrows():
        try:
            raw = read_field(row)
        except ImageReadError as exc:
            summary["problems"].append({"path": str(exc.path), "problem": exc.message})
        else:
            nuclei, cells = segmenter(raw[0], raw[1], raw[2])
            image = normalise_field(raw, stats) if stats is not None else raw
            crops, rows, skipped = extract_crops(image, nuclei, cells, crop_size=settings["crop_size"],
                                                 mask_neighbours=settings["mask_neighbours"], border=settings["border"])
            if settings["normalisation"] == "crop_max":
                crops = crop_maximum(crops)
            meta = pd.DataFrame(_field_metadata(row, len(rows)))
            writer.append(crops, pd.concat([meta, rows], axis=1)[list(INDEX_COLUMNS)])
            summary["cells"] += len(rows)
            summary["skipped_border"] += skipped
        if progress is not None:
            progress(1)
    writer.close(metadata={"plate_summary": summary})
    return summary


class _BufferedWriter:
    """Hands crops to a :class:`CellStoreWriter` a whole chunk at a time: every zarr chunk is then written once,
    instead of being rewritten by each field's few crops. Holds at most one chunk of crops."""

    def __init__(self, writer: CellStoreWriter) -> None:
        self.writer = writer
        self.crops: list[NDArray[np.uint8]] = []
        self.rows: list[pd.DataFrame] = []
        self.count = 0

    def append(self, crops: NDArray[np.float32], rows: pd.DataFrame) -> None:
        if len(crops):
            self.crops.append(to_uint8(crops))
            self.rows.append(rows)
            self.count += len(crops)
        if self.count >= CHUNK_CELLS:
            self.flush(whole_chunks=True)

    def flush(self, *, whole_chunks: bool = False) -> None:
        """Write the buffer (only whole chunks of it, keeping the rest, with ``whole_chunks``)."""
        if not self.count:
            return
        crops, rows = np.concatenate(self.crops), pd.concat(self.rows, ignore_index=True)
        take = (self.count // CHUNK_CELLS) * CHUNK_CELLS if whole_chunks else self.count
        self.writer.append(crops[:take], rows.iloc[:take])
        self.count -= take
        self.crops = [crops[take:]] if self.count else []
        self.rows = [rows.iloc[take:].reset_index(drop=True)] if self.count else []

    def close(self, metadata: dict[str, Any]) -> None:
        self.flush()
        self.writer.metadata = metadata
        self.writer.close()


def _crop_plate_job(job: tuple[pd.DataFrame, Path, dict[str, Any]]) -> dict[str, Any]:
    return crop_plate(*job)


def _fingerprint(fields: pd.DataFrame) -> str:
    text = fields[["ImageNumber", "Plate", "Well", "Compound", "Concentration", "path_DAPI"]].to_csv(index=False)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def crop_dataset(
    data: str | Path,
    out: str | Path,
    *,
    crop_size: int = 96,
    normalisation: str = "crop_max",
    mask_neighbours: bool = False,
    segmentation: str = "classical",
    border: str = "skip",
    sample_fields: int = 24,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
    options: EngineOptions | None = None,
) -> Path:
    """Segment every field of a BBBC021-layout dataset and write one crop per cell into a cell store.

    Parameters
    ----------
    data : str or Path
        A BBBC021-layout dataset (the real one or ``cytolens synth cellpainting``'s).
    out : str or Path
        The cell store folder (see :mod:`cytolens.profile.crops.cell_store`). A rerun after an interruption resumes;
        a complete store made with the same settings from the same data is returned as is.
    crop_size : int
        Side of the square crops (CytoGAN: 96).
    normalisation : {"crop_max", "plate_percentile", "illumination"}
        See :mod:`cytolens.profile.crops.normalisation`.
    mask_neighbours : bool
        Zero other cells' pixels in each crop.
    segmentation : str
        ``"classical"`` or ``"segment:RUN"`` (a trained ``cytolens segment`` run).
    border : {"skip", "pad"}
        Skip cells whose crop leaves the field (CytoGAN), or zero-pad them.
    sample_fields : int
        Fields per plate sampled for the plate normalisations' statistics.
    workers : int
        Plates processed in parallel.
    progress : callable, optional
        Called with the number of fields done (per field with one worker, per plate otherwise; not with ranks).
    options : EngineOptions, optional
        Ranks to share the plates among (``devices``, ``num_nodes``, or a torchrun/srun launch); ``workers`` is
        then not used. Default: this process (with ``workers``).

    Returns
    -------
    Path
        The store folder; its ``store.json`` holds the settings and a per-plate summary (fields, cells, cells
        skipped at the border, unreadable fields).

    Raises
    ------
    LayoutError
        If ``data`` is not a BBBC021-layout dataset.
    OptionError
        For an unknown option value.
    CytolensError
        If ``out`` holds a store or an interrupted run made with other settings or other data.
    """
    check_choice("normalisation", normalisation, NORMALISATIONS)
    check_choice("border", border, BORDERS)
    for name, value, low in (("crop_size", crop_size, 8), ("sample_fields", sample_fields, 1), ("workers", workers, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise OptionError(f"`{name}` must be an integer of at least {low}, got {value!r}.")
    if segmentation != "classical":
        make_segmenter(segmentation)  # fail early on a bad run folder
    fields = read_bbbc021(data)
    out = Path(out)
    settings = {"crop_size": int(crop_size), "normalisation": normalisation, "mask_neighbours": bool(mask_neighbours),
                "segmentation": segmentation, "border": border, "sample_fields": int(sample_fields),
                "percentiles": list(PERCENTILES), "source": str(Path(data).resolve()),
                "data_fingerprint": _fingerprint(fields)}
    settings_path = out / SETTINGS_NAME
    if settings_path.is_file() and json.loads(settings_path.read_text(encoding="utf-8")) != settings:
        raise CytolensError("holds cells cropped with other settings or from other data; choose another --out or "
                            "delete the folder", path=out)
    if (out / META_NAME).is_file() and not settings_path.is_file():
        raise CytolensError("holds a cell store this command did not write; choose another --out", path=out)
    if (out / META_NAME).is_file():
        return out
    write_text_atomic(settings_path, json.dumps(settings, indent=2) + "\n")

    plates = list(dict.fromkeys(fields["Plate"]))
    parts = {plate: out / PARTS / _safe_name(plate) for plate in plates}
    todo = []
    for plate in plates:
        if (parts[plate] / META_NAME).is_file():
            if progress is not None:
                progress(int((fields["Plate"] == plate).sum()))
        else:
            todo.append((fields[fields["Plate"] == plate].reset_index(drop=True), parts[plate], settings))
    if options is not None:
        launch(_crop_on_rank, options, out, plates, parts, todo, settings)
        return out
    if workers == 1 or len(todo) <= 1:
        for job in todo:
            crop_plate(*job, progress=progress)
    else:
        with ProcessPoolExecutor(max_workers=int(workers)) as pool:
            for job, _ in zip(todo, pool.map(_crop_plate_job, todo)):
                if progress is not None:
                    progress(len(job[0]))
    _merge_parts(out, plates, parts, settings)
    return out


def _crop_on_rank(runtime: Runtime, out: Path, plates: list[str], parts: dict[str, Path],
                  todo: list[tuple[pd.DataFrame, Path, dict[str, Any]]], settings: dict[str, Any]) -> None:
    """Crop this rank's share of the plates left, then (rank 0) merge every part once all ranks are done."""
    share = runtime.shard(len(todo))
    for job in todo[share.start : share.stop]:
        crop_plate(*job)
    runtime.barrier()
    if runtime.is_main:
        _merge_parts(out, plates, parts, settings)
    runtime.barrier()


def _merge_parts(out: Path, plates: list[str], parts: dict[str, Path], settings: dict[str, Any]) -> None:
    """Copy the complete part stores into the store ``out`` in plate order, write its ``store.json``, drop them."""
    summary = {plate: CellStore(parts[plate]).metadata["plate_summary"] for plate in plates}
    metadata = {**{k: v for k, v in settings.items() if k != "percentiles" or settings["normalisation"] != "crop_max"},
                "segmentation_method": settings["segmentation"], "plates": summary,
                "skipped_border": int(sum(s["skipped_border"] for s in summary.values())),
                "problems": [p for s in summary.values() for p in s["problems"]]}
    writer = _BufferedWriter(CellStoreWriter(out, crop_size=settings["crop_size"], metadata=metadata))
    for plate in plates:
        part = CellStore(parts[plate])
        for start in range(0, len(part), _COPY_CHUNK):
            stop = min(start + _COPY_CHUNK, len(part))
            writer.append(part.crops(slice(start, stop)), part.index.iloc[start:stop])
    writer.close(metadata=metadata)
    shutil.rmtree(out / PARTS, ignore_errors=True)


def _safe_name(plate: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in plate)
