"""``cytolens segment predict``: a trained run applied to whole images of any size, optionally with cell objects.

The run's own config decides the preprocessing (channels, intensity scaling) and the tiling. The final model is
the run's ``final_model``: by default the **ensemble** of the trained fold models, whose softmax probabilities
are averaged pixel by pixel (:class:`FoldEnsemble`), or the single fold with the best validation mean dice
(``best_fold``). The ensemble is itself a network, so :func:`~cytolens.segment.inference.predict_bands` runs
it tile by tile; it is prepared once for inference (BatchNorm folded into the convolutions, channels-last
weights, :func:`~cytolens.segment.inference.prepare_for_inference`) and runs under the precision's autocast
(``--precision``; ``auto`` is the run's, bf16 mixed precision where the CPU multiplies bf16 natively).

Memory does not grow with the image: a large TIFF is read a band of rows at a time
(:func:`~cytolens.data.tiles.open_image_rows`; percentile scaling counts a histogram first), predicted in bands
and written in bands (:class:`~cytolens.segment.outputs.SegmentationWriter`, or
:class:`~cytolens.segment.ome_zarr.OmeZarrSegmentationWriter` for OME-Zarr), and the overlay is a preview of at
most 2048 pixels on its longest side (full size for smaller images). Only ``--cells`` holds whole-image arrays:
the watershed that splits cells works on the whole label image.

Per image ``<stem>``, the output folder receives, with ``output_format="tiff"`` (the default), ``<stem>.tif``
(uint8 class labels), ``<stem>_overlay.png``, optionally ``<stem>_prob.tif`` (K-page float32 probabilities) and,
with cells, ``<stem>_cells.tif`` (uint16 or uint32 cell ids from :func:`~cytolens.segment.cells.split_cells`).
With ``output_format="ome-zarr"`` the same arrays go into OME-Zarr (NGFF 0.5) images instead
(:class:`~cytolens.segment.ome_zarr.OmeZarrSegmentationWriter`): ``<stem>.ome.zarr`` holds the input image with
its ``labels/classes`` and ``labels/cells``, ``<stem>_prob.ome.zarr`` the probabilities, both multiscale and
scaled by the pixel size. One ``cells.csv`` for all images (:func:`~cytolens.segment.cells.cell_table` columns,
``Metadata_image`` = stem, ``Metadata_cells_file`` = the cell label image), which profiling reads, and
``images.csv`` (one row per image: size, class fractions and the files written, relative to the folder).

With ``--devices N`` the images are sharded over N processes (:meth:`~cytolens.engine.Runtime.shard`): each writes
its images' files and its rows, and rank 0 merges the rows in image order, so the folder equals the one a
single process writes. :func:`cell_segmenter` gives other capabilities (profiling) a run's cells as a function.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray
from torch import nn

from cytolens.core.atomic import write_text_atomic
from cytolens.engine import EngineOptions, Runtime, configure_threads, launch, load_run, load_weights
from cytolens.core.errors import CytolensError, ImageReadError
from cytolens.core.files import read_json_object, read_parquet_table
from cytolens.data.io import normalize_intensity, read_channel_names
from cytolens.data.pixel_size import PixelSize
from cytolens.data.tiles import ImageRows, band_percentiles, open_image_rows
from cytolens.segment.config import SegmentConfig
from cytolens.segment.inference import RowReader, argmax_into, predict_bands, predict_tiled_labels, \
    prepare_for_inference
from cytolens.segment.ome_zarr import OmeZarrSegmentationWriter
from cytolens.segment.outputs import SegmentationWriter

#: The ``--format`` choices of ``segment predict``.
OUTPUT_FORMATS = ("tiff", "ome-zarr")

__all__ = ["OUTPUT_FORMATS", "CellSegmenter", "FoldEnsemble", "Predictions", "SegmentRun", "cell_segmenter",
           "find_input_images", "final_model", "load_models", "load_segment_run", "predict_images"]


@dataclass
class SegmentRun:
    """A segmentation run folder: its config, manifest and the ``done.json`` records of finished folds."""

    path: Path
    config: SegmentConfig
    manifest: pd.DataFrame
    folds: list[dict]

    @property
    def num_classes(self) -> int:
        return len(self.config.classes)


def load_segment_run(run: str | Path) -> SegmentRun:
    """Read a run folder written by ``cytolens segment train`` (:func:`cytolens.engine.load_run`, kind
    ``segment``); a run still training is usable once one fold is done.

    Raises
    ------
    CytolensError
        If ``run`` is not a segmentation run folder or has no finished fold.
    """
    from cytolens.segment.training import checkpoint_path, fold_folder

    run = Path(run)
    config = load_run(run, "segment", SegmentConfig).config
    if not (run / "manifest.parquet").is_file():
        raise CytolensError("holds no manifest.parquet yet; run 'cytolens segment train' to finish a fold", path=run)
    manifest = read_parquet_table(run / "manifest.parquet")
    folds = []
    for fold in range(config.folds):
        done = fold_folder(run, fold) / "done.json"
        if done.is_file() and checkpoint_path(run, fold).is_file():
            folds.append(read_json_object(done))
    if not folds:
        raise CytolensError("holds no trained fold yet; run 'cytolens segment train' to finish one", path=run)
    return SegmentRun(run, config, manifest, folds)


def default_device() -> torch.device:
    """Where a single process predicts: a CUDA GPU when there is one (or as ``CYTOLENS_DEVICE`` says)."""
    return torch.device(EngineOptions().device_type())


def load_models(run: SegmentRun, folds: list[int], device: torch.device | None = None) -> list[nn.Module]:
    """The best-validation networks of ``folds``, in eval mode on ``device`` (default :func:`default_device`)."""
    from cytolens.segment.training import checkpoint_path, new_model

    device = device or default_device()
    models = []
    for fold in folds:
        model = new_model(run.config)
        load_weights(model, checkpoint_path(run.path, fold))
        models.append(model.eval().to(device))
    return models


class FoldEnsemble(nn.Module):
    """Several fold networks as one: returns ``log(mean softmax)``, so its softmax is the mean probability.

    Tiled inference applies a softmax to whatever a network returns; the log of the averaged probabilities
    makes that softmax give back exactly the average (the probabilities already sum to one).
    """

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        if not models:
            raise CytolensError("an ensemble needs at least one model")
        self.members = nn.ModuleList(models)
        self.input_multiple = int(np.lcm.reduce([int(getattr(m, "input_multiple", 1)) for m in models]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if len(self.members) == 1:
            return self.members[0](images)
        mean = torch.stack([torch.softmax(m(images).float(), dim=1) for m in self.members]).mean(0)
        return torch.log(mean.clamp_min(1e-12))


def final_model(run: SegmentRun, which: str | None = None,
                device: torch.device | None = None) -> tuple[FoldEnsemble, str]:
    """The run's final model and a sentence saying what it is.

    Parameters
    ----------
    which : {"ensemble", "best_fold"}, optional
        Default: the run config's ``final_model``.
    device : torch.device, optional
        Default :func:`default_device`.
    """
    which = which or run.config.final_model
    if which == "best_fold":
        record = max(run.folds, key=lambda r: r["best_val_mean_dice"])
        folds = [record["fold"]]
        text = f"fold {record['fold']} (best validation mean dice {record['best_val_mean_dice']:.4f})"
    else:
        folds = [r["fold"] for r in run.folds]
        text = f"ensemble of folds {', '.join(map(str, folds))} (mean of their softmax probabilities)"
    return FoldEnsemble(load_models(run, folds, device)), text


def find_input_images(images: str | Path) -> list[Path]:
    """Image files to segment: one file, a dataset root (its ``images/`` or ``brightfield/``), or any folder."""
    from cytolens.data.io import find_image_files
    from cytolens.data.label_pairs import IMAGE_FOLDERS

    images = Path(images)
    for name in IMAGE_FOLDERS:
        if images.is_dir() and (images / name).is_dir():
            # A dataset root also holds labels/ and fluorescence folders, which are not inputs.
            return find_image_files(images / name)
    return find_image_files(images)


@dataclass
class Predictions:
    """What :func:`predict_images` wrote, and the files it could not read."""

    table: pd.DataFrame
    cells: pd.DataFrame | None = None
    model: str = ""
    problems: list[tuple[Path, str]] = field(default_factory=list)


def class_map(classes: list[str]) -> np.ndarray:
    """Lookup from the run's class indices to split_cells' 0 background / 1 nucleus / 2 cytoplasm."""
    missing = [name for name in ("nucleus", "cytoplasm") if name not in classes]
    if missing:
        raise CytolensError(f"cell objects need classes named 'nucleus' and 'cytoplasm'; this run's are {classes}")
    lookup = np.zeros(len(classes), dtype=np.uint8)
    lookup[classes.index("nucleus")], lookup[classes.index("cytoplasm")] = 1, 2
    return lookup


Labels = NDArray[np.int32]


class CellSegmenter:
    """A trained run as a function: a normalised image ``(H, W[, C])`` in, ``(nuclei, cells)`` label images out.

    Cells come from :func:`~cytolens.segment.cells.split_cells` on the run's final model's prediction; cell ``k``
    has nucleus ``k`` (the nucleus-class pixels inside it). :meth:`normalise` applies the run's intensity
    scaling to a raw image; ``in_chans`` is the number of channels the network expects.
    """

    def __init__(self, run: SegmentRun, device: torch.device | None = None) -> None:
        self.config = run.config
        self.in_chans = run.config.in_chans
        self.lookup = class_map(run.config.classes)
        model, self.description = final_model(run, device=device)
        self.model = prepare_for_inference(model)

    def normalise(self, raw: np.ndarray) -> np.ndarray:
        """``raw`` ``(H, W[, C])`` scaled to network input as the run's config says."""
        intensity = self.config.intensity
        return normalize_intensity(raw, method=intensity.method, bit_depth=intensity.bit_depth,
                                   percentiles=tuple(intensity.percentiles))

    def __call__(self, image: np.ndarray) -> tuple[Labels, Labels]:
        from cytolens.segment.cells import split_cells

        inference = self.config.inference
        labels = predict_tiled_labels(
            self.model, np.asarray(image, dtype=np.float32), num_classes=len(self.config.classes),
            tile=inference.tile, overlap=inference.overlap, batch_size=inference.batch_size, tta=inference.tta,
            input_multiple=self.model.input_multiple,
        )
        three = self.lookup[labels]
        cells = split_cells(three).astype(np.int32)
        nuclei = np.where(three == 1, cells, 0).astype(np.int32)
        return nuclei, cells


def cell_segmenter(run: str | Path, device: torch.device | None = None) -> CellSegmenter:
    """The nuclei and cells of a ``cytolens segment train`` run, as a callable (see :class:`CellSegmenter`).

    Raises
    ------
    CytolensError
        If ``run`` is not a finished-fold segmentation run, or its classes lack ``nucleus`` and ``cytoplasm``.
    """
    return CellSegmenter(load_segment_run(run), device)


def predict_images(
    run: str | Path,
    images: str | Path,
    out: str | Path,
    *,
    tta: bool | None = None,
    probabilities: bool = False,
    cells: bool = False,
    which: str | None = None,
    pixel_size_um: float | None = None,
    output_format: str = "tiff",
    progress: Callable[[int], None] | None = None,
    options: EngineOptions = EngineOptions(),
) -> Predictions:
    """Segment images with a trained run and write labels, overlays and optionally probabilities and cells.

    Parameters
    ----------
    run : str or Path
        A run folder written by ``cytolens segment train``.
    images : str or Path
        An image, a folder of images (searched recursively) or a dataset root with ``images/``/``brightfield/``.
    out : str or Path
        Output folder (see the module docstring for its files).
    tta : bool, optional
        Average over the 8 rotations/flips of each tile; default: the run's ``inference.tta``.
    probabilities : bool, default False
        Also write the probabilities: ``<stem>_prob.tif``, or ``<stem>_prob.ome.zarr`` for OME-Zarr.
    cells : bool, default False
        Also split cells (:func:`~cytolens.segment.cells.split_cells`) into ``<stem>_cells.tif`` (OME-Zarr:
        ``<stem>.ome.zarr/labels/cells``) and measure them into ``cells.csv``; the run needs classes named
        ``nucleus`` and ``cytoplasm``.
    which : {"ensemble", "best_fold"}, optional
        The final model; default the run config's ``final_model``.
    pixel_size_um : float, optional
        Pixel side in µm for the µm² areas of ``cells.csv``, overriding each file's own calibration; by default
        it is read from the file (OME-XML ``PhysicalSizeX/Y`` or ImageJ's resolution and unit,
        :func:`~cytolens.data.pixel_size.read_pixel_size`), and an image without one gets areas in pixels only.
        The OME-Zarr images carry it as their scale (in micrometres; scale 1 and no unit when unknown).
        ``images.csv`` records the size used and where it came from.
    output_format : {"tiff", "ome-zarr"}, default "tiff"
        TIFF files, or OME-Zarr (NGFF 0.5) images with labels (see the module docstring).
    progress : callable, optional
        Called with 1 per image (single process only: a callback does not cross to spawned processes).
    options : EngineOptions, optional
        Processes (``devices``: the images are sharded over them), precision (``auto``: the run's), accelerator.

    Returns
    -------
    Predictions
        ``table``: one row per image (``stem, path, height, width, fraction_<class>``, the files written:
        ``labels_file``, ``overlay_file`` and, as written, ``image_file`` (OME-Zarr), ``probabilities_file``,
        ``cells_file``; ``cells``).
    """
    from cytolens.core.errors import check_choice

    check_choice("output_format", output_format, OUTPUT_FORMATS)
    loaded = load_segment_run(run)  # a wrong run folder is reported before any process starts
    if cells:
        class_map(loaded.config.classes)
    if options.precision is None:
        options = replace(options, precision=loaded.config.precision)
    if options.devices > 1 or options.num_nodes > 1:
        progress = None
    return launch(_predict_on_ranks, options, str(run), str(images), str(out), tta, probabilities, cells, which,
                  pixel_size_um, output_format, progress)


def _predict_on_ranks(runtime: Runtime, run: str, images: str, out_text: str, tta: bool | None,
                      probabilities: bool, cells: bool, which: str | None, pixel_size_um: float | None,
                      output_format: str, progress: Callable[[int], None] | None) -> Predictions:
    loaded = load_segment_run(run)
    config = loaded.config
    configure_threads(config.num_threads, local_processes=runtime.local_processes)
    lookup = class_map(config.classes) if cells else None
    paths = find_input_images(images)
    # Each rank predicts its images alone: no DDP wrapper, whose collectives would need equal shares.
    model, description = final_model(loaded, which, device=runtime.device)
    model = prepare_for_inference(model)
    use_tta = config.inference.tta if tta is None else tta
    out = Path(out_text)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    cell_tables: list[pd.DataFrame] = []
    problems: list[tuple[str, str]] = []
    for index in runtime.shard(len(paths)):
        path = paths[index]
        stem = path.name.split(".")[0]
        try:
            row, table = _predict_one(runtime, model, loaded, path, out, stem, tta=use_tta,
                                      probabilities=probabilities, lookup=lookup, pixel_size_um=pixel_size_um,
                                      output_format=output_format)
        except ImageReadError as exc:  # unreadable, or the wrong number of channels: skip and report
            problems.append((str(path), exc.message))
        else:
            rows.append(row)
            if table is not None:
                cell_tables.append(table)
        if progress is not None:
            progress(1)
    rows, cell_tables, problems = _merge_shards(runtime, out, rows, cell_tables, problems)
    table = pd.DataFrame(rows)
    cell_frame = None
    if cells:
        cell_frame = pd.concat(cell_tables, ignore_index=True) if cell_tables else pd.DataFrame()
    if runtime.is_main:
        write_text_atomic(out / "images.csv", table.to_csv(index=False))
        if cell_frame is not None:
            write_text_atomic(out / "cells.csv", cell_frame.to_csv(index=False))
        summary = {"run": str(loaded.path), "model": description, "tta": use_tta, "images": len(rows),
                   "format": output_format,
                   "classes": config.classes, "problems": [{"path": p, "problem": m} for p, m in problems]}
        write_text_atomic(out / "prediction.json", json.dumps(summary, indent=2) + "\n")
    runtime.barrier()
    return Predictions(table, cell_frame, description, [(Path(p), m) for p, m in problems])


def normalised_rows(image: ImageRows, config: SegmentConfig) -> RowReader:
    """Rows of ``image`` as network input, ``(rows, W, C)`` float32, scaled as the run's config says.

    Equal to :func:`~cytolens.segment.training.read_input`'s normalised image, row for row: an image read
    whole is normalised whole; a streamed one is scaled band by band, with the per-image percentiles (for
    ``percentile`` scaling) counted beforehand in one pass over the bands (:func:`band_percentiles`).
    """
    intensity = config.intensity

    def scale(raw: np.ndarray, lo: np.ndarray | None = None, hi: np.ndarray | None = None) -> np.ndarray:
        if lo is None or hi is None:
            data = normalize_intensity(raw, method=intensity.method, bit_depth=intensity.bit_depth,
                                       percentiles=tuple(intensity.percentiles))
        else:  # normalize_intensity's percentile arithmetic, with the whole image's percentiles
            span = np.where(hi > lo, hi - lo, np.float32(1))
            data = np.clip((np.asarray(raw, dtype=np.float32) - lo) / span, 0.0, 1.0).astype(np.float32, copy=False)
        return data if data.ndim == 3 else data[..., np.newaxis]

    if not image.streamed:
        whole = scale(image.read(0, image.shape[0]))
        return lambda start, stop: whole[start:stop]
    if intensity.method != "percentile":
        return lambda start, stop: scale(image.read(start, stop))
    lo, hi = band_percentiles(image, tuple(intensity.percentiles))
    return lambda start, stop: scale(image.read(start, stop), lo, hi)


def _release_freed_memory() -> None:
    """Hand freed heap memory back to the system (glibc's ``malloc_trim``; nothing elsewhere).

    Every band allocates and frees arrays of a few to tens of megabytes; glibc keeps such freed blocks in its
    heap, so without this the resident size creeps up band after band on a wide image.
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc() -> Any:
    import ctypes
    import ctypes.util
    import os

    if os.environ.get("CYTOLENS_NO_MALLOC_TRIM"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_LIBC = _load_libc()


def _pixel_size(path: Path, pixel_size_um: float | None) -> PixelSize | None:
    """``--pixel-size`` when given (square pixels), otherwise the file's own calibration (OME-XML or ImageJ)."""
    from cytolens.data.pixel_size import read_pixel_size

    if pixel_size_um is not None:
        return PixelSize(pixel_size_um, pixel_size_um, "--pixel-size")
    return read_pixel_size(path)


def _predict_one(runtime: Runtime, model: nn.Module, loaded: SegmentRun, path: Path, out: Path, stem: str, *,
                 tta: bool, probabilities: bool, lookup: np.ndarray | None, pixel_size_um: float | None,
                 output_format: str = "tiff") -> tuple[dict[str, Any], pd.DataFrame | None]:
    """Segment one image band by band into ``out``; returns its ``images.csv`` row and its cell table.

    The image is read in bands (:func:`~cytolens.data.tiles.open_image_rows`), predicted in bands and written in
    bands (:class:`~cytolens.segment.outputs.SegmentationWriter` or
    :class:`~cytolens.segment.ome_zarr.OmeZarrSegmentationWriter`), so memory is one band of tiles plus the
    writer's buffers and the overlay preview. Cells (``lookup`` given) are the exception: the watershed of
    :func:`~cytolens.segment.cells.split_cells` works on the whole label image, which is then kept.

    Raises
    ------
    ImageReadError
        If the image cannot be read or has the wrong number of channels.
    """
    from cytolens.segment.cells import cell_table, split_cells

    config = loaded.config
    inference = config.inference
    # Read only where it is used: the µm² areas of cells.csv and the OME-Zarr scale.
    pixel_size = _pixel_size(path, pixel_size_um) if lookup is not None or output_format == "ome-zarr" else None
    instances = None
    with open_image_rows(path, grayscale=config.in_chans == 1) as image:
        channels = 1 if len(image.shape) == 2 else image.shape[2]
        if channels != config.in_chans:
            raise ImageReadError(f"has {channels} channel(s); the run expects in_chans={config.in_chans}",
                                 path=path)
        height, width = image.shape[:2]
        reader = normalised_rows(image, config)
        counts = np.zeros(loaded.num_classes, dtype=np.int64)
        whole_labels = np.empty((height, width), np.uint8 if loaded.num_classes <= 256 else np.uint16) \
            if lookup is not None else None
        writer: SegmentationWriter | OmeZarrSegmentationWriter
        if output_format == "ome-zarr":
            # The file's own channel names, where they still describe what the network saw (not after a
            # conversion to gray).
            names = read_channel_names(path)
            writer = OmeZarrSegmentationWriter(out, stem, height, width, loaded.num_classes, channels=channels,
                                               image_dtype=image.dtype, probabilities=probabilities,
                                               class_names=config.classes, pixel_size=pixel_size,
                                               channel_names=names if names and len(names) == channels else None)
        else:
            writer = SegmentationWriter(out, stem, height, width, loaded.num_classes, probabilities=probabilities,
                                        class_names=config.classes)
        with writer:
            with runtime.autocast():
                for start, stop, band in predict_bands(
                    model, (reader, (height, width, channels)), num_classes=loaded.num_classes,
                    tile=inference.tile, overlap=inference.overlap, batch_size=inference.batch_size, tta=tta,
                    input_multiple=model.input_multiple,
                ):  # fmt: skip
                    labels = whole_labels[start:stop] if whole_labels is not None else \
                        np.empty((stop - start, width), writer.label_dtype)
                    argmax_into(labels, band)
                    counts += np.bincount(labels.ravel(), minlength=loaded.num_classes)
                    writer.add(start, labels, band if probabilities else None, image.read(start, stop))
                    _release_freed_memory()
            if lookup is not None and whole_labels is not None:
                # Inside the writer's block, so the cell ids appear together with the rest, or not at all.
                three = lookup[whole_labels]
                instances = split_cells(three)
                writer.add_cells(instances)
    row: dict[str, Any] = {"stem": stem, "path": str(path), "height": height, "width": width}
    row.update({f"fraction_{n}": float(counts[k] / (height * width)) for k, n in enumerate(config.classes)})
    # The files written, relative to the output folder (which can then be moved as a whole).
    for name in ("image", "labels", "probabilities", "cells", "overlay"):
        if name in writer.paths:
            row[f"{name}_file"] = writer.paths[name].relative_to(out).as_posix()
    if pixel_size is not None or lookup is not None:
        row["pixel_size_um"] = pixel_size.side_um if pixel_size is not None else None
        row["pixel_size_from"] = pixel_size.source if pixel_size is not None else ""
    if instances is None:
        return row, None
    row["cells"] = int(instances.max(initial=0))
    table = cell_table(instances, three, pixel_size_um=row["pixel_size_um"], image_id=stem)
    table.insert(1, "Metadata_cells_file", row["cells_file"])
    return row, table


def _merge_shards(runtime: Runtime, out: Path, rows: list[dict[str, Any]], cell_tables: list[pd.DataFrame],
                  problems: list[tuple[str, str]]
                  ) -> tuple[list[dict[str, Any]], list[pd.DataFrame], list[tuple[str, str]]]:
    """Every rank's rows, cell tables and problems, in image order, on rank 0 (the shards are contiguous, so
    rank order is image order). Ranks hand them over through files in ``out``, removed once read: a cell table
    can be far larger than a collective should carry."""
    if runtime.world_size == 1:
        return rows, cell_tables, problems
    part = out / f".shard-{runtime.rank}"
    write_text_atomic(part.with_suffix(".json"), json.dumps({"rows": rows, "problems": problems}))
    if cell_tables:
        pd.concat(cell_tables, ignore_index=True).to_parquet(part.with_suffix(".parquet"), index=False)
    runtime.barrier()
    if not runtime.is_main:
        return rows, cell_tables, problems
    all_rows, all_cells, all_problems = [], [], []
    for rank in range(runtime.world_size):
        part = out / f".shard-{rank}"
        shard = json.loads(part.with_suffix(".json").read_text(encoding="utf-8"))
        all_rows += shard["rows"]
        all_problems += [tuple(p) for p in shard["problems"]]
        if part.with_suffix(".parquet").is_file():
            all_cells.append(pd.read_parquet(part.with_suffix(".parquet")))
            part.with_suffix(".parquet").unlink()
        part.with_suffix(".json").unlink()
    return all_rows, all_cells, all_problems
