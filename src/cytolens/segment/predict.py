"""``cytolens segment predict``: a trained run applied to whole images of any size, optionally with cell objects.

The run's own config decides the preprocessing (channels, intensity scaling) and the tiling. The final model is
the run's ``final_model``: by default the **ensemble** of the trained fold models, whose softmax probabilities
are averaged pixel by pixel (:class:`FoldEnsemble`), or the single fold with the best validation mean dice
(``best_fold``). The ensemble is itself a network, so :func:`~cytolens.segment.inference.predict_tiled_labels`
runs it tile by tile and memory stays bounded by one band of tiles whatever the image size.

Per image ``<stem>``, the output folder receives ``<stem>.tif`` (uint8 class labels), ``<stem>_overlay.png``,
optionally ``<stem>_prob.tif`` (K-page float32 probabilities) and, with cells, ``<stem>_cells.tif`` (uint16 or
uint32 cell ids from :func:`~cytolens.segment.cells.split_cells`) and one ``cells.csv`` for all images
(:func:`~cytolens.segment.cells.cell_table` columns, ``Metadata_image`` = stem), which profiling reads.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from torch import nn

from cytolens.atomic import write_text_atomic
from cytolens.config import validate_config
from cytolens.errors import CytolensError
from cytolens.io import write_tiff
from cytolens.segment.config import SegmentConfig
from cytolens.segment.inference import predict_tiled_labels
from cytolens.segment.outputs import write_segmentation
from cytolens.training import load_checkpoint, select_device

__all__ = ["FoldEnsemble", "Predictions", "SegmentRun", "find_input_images", "load_models", "load_run",
           "predict_images"]


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


def load_run(run: str | Path) -> SegmentRun:
    """Read a run folder written by ``cytolens segment train``.

    Raises
    ------
    CytolensError
        If ``run`` is not a segmentation run folder or has no finished fold.
    """
    from cytolens.segment.protocol import checkpoint_path, fold_folder

    run = Path(run)
    config_path = run / "config.yaml"
    if not config_path.is_file() or not (run / "manifest.parquet").is_file():
        raise CytolensError("not a segmentation run folder (no config.yaml and manifest.parquet)", path=run)
    config = validate_config(yaml.safe_load(config_path.read_text(encoding="utf-8")), SegmentConfig, path=config_path)
    manifest = pd.read_parquet(run / "manifest.parquet")
    folds = []
    for fold in range(config.folds):
        done = fold_folder(run, fold) / "done.json"
        if done.is_file() and checkpoint_path(run, fold).is_file():
            folds.append(json.loads(done.read_text(encoding="utf-8")))
    if not folds:
        raise CytolensError("holds no trained fold yet; run 'cytolens segment train' to finish one", path=run)
    return SegmentRun(run, config, manifest, folds)


def load_models(run: SegmentRun, folds: list[int]) -> list[nn.Module]:
    """The best-validation networks of ``folds``, in eval mode on :func:`~cytolens.training.select_device`."""
    from cytolens.segment.protocol import checkpoint_path, new_model

    device = select_device()
    models = []
    for fold in folds:
        model = new_model(run.config)
        model.load_state_dict(load_checkpoint(checkpoint_path(run.path, fold)))
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


def final_model(run: SegmentRun, which: str | None = None) -> tuple[FoldEnsemble, str]:
    """The run's final model and a sentence saying what it is.

    Parameters
    ----------
    which : {"ensemble", "best_fold"}, optional
        Default: the run config's ``final_model``.
    """
    which = which or run.config.final_model
    if which == "best_fold":
        record = max(run.folds, key=lambda r: r["best_val_mean_dice"])
        folds = [record["fold"]]
        text = f"fold {record['fold']} (best validation mean dice {record['best_val_mean_dice']:.4f})"
    else:
        folds = [r["fold"] for r in run.folds]
        text = f"ensemble of folds {', '.join(map(str, folds))} (mean of their softmax probabilities)"
    return FoldEnsemble(load_models(run, folds)), text


def find_input_images(images: str | Path) -> list[Path]:
    """Image files to segment: one file, a dataset root (its ``images/`` or ``brightfield/``), or any folder."""
    from cytolens.io import find_image_files
    from cytolens.label_pairs import IMAGE_FOLDERS

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


def _class_map(classes: list[str]) -> np.ndarray:
    """Lookup from the run's class indices to split_cells' 0 background / 1 nucleus / 2 cytoplasm."""
    missing = [name for name in ("nucleus", "cytoplasm") if name not in classes]
    if missing:
        raise CytolensError(f"cell objects need classes named 'nucleus' and 'cytoplasm'; this run's are {classes}")
    lookup = np.zeros(len(classes), dtype=np.uint8)
    lookup[classes.index("nucleus")], lookup[classes.index("cytoplasm")] = 1, 2
    return lookup


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
    progress: Callable[[int], None] | None = None,
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
        Also write ``<stem>_prob.tif``.
    cells : bool, default False
        Also split cells (:func:`~cytolens.segment.cells.split_cells`) into ``<stem>_cells.tif`` and measure
        them into ``cells.csv``; the run needs classes named ``nucleus`` and ``cytoplasm``.
    which : {"ensemble", "best_fold"}, optional
        The final model; default the run config's ``final_model``.
    pixel_size_um : float, optional
        Adds µm² areas to ``cells.csv``.
    progress : callable, optional
        Called with 1 per image.

    Returns
    -------
    Predictions
        ``table``: one row per image (``stem, path, height, width, fraction_<class>``, ``cells``).
    """
    from cytolens.segment.cells import cell_table, split_cells
    from cytolens.segment.protocol import read_input

    loaded = load_run(run)
    config = loaded.config
    lookup = _class_map(config.classes) if cells else None
    paths = find_input_images(images)
    model, description = final_model(loaded, which)
    use_tta = config.inference.tta if tta is None else tta
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, cell_tables, problems = [], [], []
    for path in paths:
        stem = path.name.split(".")[0]
        try:
            raw, image = read_input(path, config)
        except CytolensError as exc:  # unreadable, or the wrong number of channels: skip and report
            problems.append((path, exc.message))
        else:
            with tempfile.TemporaryDirectory(dir=out) as scratch:
                prob_path = Path(scratch) / "prob.npy" if probabilities else None
                labels = predict_tiled_labels(
                    model, image, num_classes=loaded.num_classes, tile=config.inference.tile,
                    overlap=config.inference.overlap, batch_size=config.inference.batch_size, tta=use_tta,
                    input_multiple=model.input_multiple, prob_path=prob_path,
                )
                stack = np.load(prob_path, mmap_mode="r") if prob_path is not None else None
                write_segmentation(out, stem, labels, probabilities=stack, image=raw, class_names=config.classes)
                del stack  # release the memory map before the scratch folder goes
            counts = np.bincount(labels.ravel(), minlength=loaded.num_classes)
            row = {"stem": stem, "path": str(path), "height": labels.shape[0], "width": labels.shape[1]}
            row.update({f"fraction_{n}": float(counts[k] / labels.size) for k, n in enumerate(config.classes)})
            if lookup is not None:
                three = lookup[labels]
                instances = split_cells(three)
                top = int(instances.max(initial=0))
                write_tiff(out / f"{stem}_cells.tif", instances.astype(np.uint16 if top <= 65535 else np.uint32))
                cell_tables.append(cell_table(instances, three, pixel_size_um=pixel_size_um, image_id=stem))
                row["cells"] = top
            rows.append(row)
        if progress is not None:
            progress(1)
    table = pd.DataFrame(rows)
    cell_frame = None
    if cells:
        cell_frame = pd.concat(cell_tables, ignore_index=True) if cell_tables else pd.DataFrame()
        write_text_atomic(out / "cells.csv", cell_frame.to_csv(index=False))
    summary = {"run": str(loaded.path), "model": description, "tta": use_tta, "images": len(rows),
               "classes": config.classes, "problems": [{"path": str(p), "problem": m} for p, m in problems]}
    write_text_atomic(out / "prediction.json", json.dumps(summary, indent=2) + "\n")
    return Predictions(table, cell_frame, description, problems)
