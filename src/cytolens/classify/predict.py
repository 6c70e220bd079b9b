"""``cytolens classify predict``: a trained run folder applied to new images of any number and bit depth.

The run's own config decides the preprocessing (input size, intensity scaling, sharpening for +S variants)
and the final model (the ensemble of the fold models, or the best fold), so predictions match the
evaluation in the run's report.

With ``--devices N`` each rank classifies a contiguous share of the images (:meth:`Runtime.shard`) and the
probabilities are gathered in image order, so rank 0 writes exactly the table one process writes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cytolens.classify.config import ClassifyConfig
from cytolens.classify.data import preprocess_image
from cytolens.data.tasks import Task
from cytolens.classify.models import create_model
from cytolens.engine import EngineOptions, Runtime, launch, load_weights
from cytolens.core.errors import CytolensError, ImageReadError, OptionError
from cytolens.core.files import read_json_object
from cytolens.data.io import find_image_files, read_image


def load_fold_models(run: Path, task: Task, variant: str, *, which: str = "all") -> list[torch.nn.Module]:
    """Load the fold models of a task and variant from a run folder.

    Parameters
    ----------
    run : Path
        The run folder.
    task : Task
    variant : str
    which : {"all", "best"}
        Every fold model, or only the one with the best validation accuracy.

    Raises
    ------
    CytolensError
        If the run holds no checkpoint for the task and variant, a finished fold lost its checkpoint, or a
        fold's ``done.json`` is damaged.
    """
    from cytolens.classify.training import VARIANT_SLUGS, checkpoint_path
    from cytolens.classify.evaluate import read_classify_run

    config, _, _ = read_classify_run(run)
    records = []
    for done in sorted((run / "units" / task.slug / VARIANT_SLUGS[variant]).glob("fold*/done.json")):
        record = read_json_object(done)
        try:
            fold = int(record["fold"])
        except (ValueError, TypeError, KeyError) as exc:
            raise CytolensError("done.json is damaged: no fold number; train this fold again", path=done) from exc
        # A fold that finished but lost its weights would quietly leave the ensemble a fold short.
        if not checkpoint_path(run, task, variant, fold).is_file():
            raise CytolensError(f"fold {fold} finished but its checkpoint is missing; restore it or train the "
                                "fold again", path=checkpoint_path(run, task, variant, fold))
        records.append(record)
    if not records:
        raise CytolensError(f"no trained model for task {task.name!r}, variant {variant}", path=run)
    if which == "best":
        records = [max(records, key=lambda r: r["best_val_accuracy"])]
    models = []
    for record in records:
        model = create_model(
            config.model, num_classes=len(task.classes), in_chans=1, input_size=config.input_size,
            **config.model_options,
        )
        load_weights(model, checkpoint_path(run, task, variant, record["fold"]))
        model.eval()
        models.append(model)
    return models


def _choose_task(tasks: list[Task], classes: list[str], requested: str | None) -> Task:
    """The all-classes task by default; a named one (``"1 vs 0"`` means ``"0 vs 1"``) otherwise."""
    from cytolens.data.tasks import build_tasks

    names = ", ".join(t.name for t in tasks)
    wanted = build_tasks(classes, ["all" if requested is None else requested])[0]
    found = next((t for t in tasks if t.classes == wanted.classes), None)
    if found is None:
        what = "model for all classes" if requested in (None, "all") else f"model for task {requested!r}"
        raise OptionError(f"this run has no {what}; its tasks: {names} (use --task)")
    return found


@dataclass
class Predictions:
    """Predicted classes and probabilities, and the files that could not be read."""

    table: pd.DataFrame
    problems: list[tuple[Path, str]] = field(default_factory=list)


def predict_images(
    run: str | Path,
    images: str | Path,
    *,
    task: str | None = None,
    tta: bool | None = None,
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
    options: EngineOptions = EngineOptions(),
) -> Predictions:
    """Classify images with a trained run.

    Parameters
    ----------
    run : str or Path
        A run folder written by ``cytolens classify train``.
    images : str or Path
        An image file or a folder of them (searched recursively); any size, 8/16-bit or float.
    task : str, optional
        Which task's model to use: the all-classes task by default, or e.g. ``"0 vs 1"``.
    tta : bool, optional
        Average over the 8 rotations/flips of each image; default: the run config's ``tta``.
    batch_size : int, default 32
        Images held in memory at once (per rank).
    progress : callable, optional
        Called with 1 per image (a single process only: spawned ranks cannot call back).
    options : EngineOptions
        Processes and devices; ``precision="auto"`` uses the precision the run was trained at.

    Returns
    -------
    Predictions
        ``table`` has one row per readable image, in file order: ``path``, ``predicted`` (class name) and
        ``p_<class>``.
    """
    from cytolens.classify.training import RUN_KIND
    from cytolens.engine import load_run

    if options.precision is None:
        # Predict as the run evaluated its test set; fp16 autocast exists on CUDA only.
        trained = load_run(run, RUN_KIND, ClassifyConfig).info.get("precision")
        if trained in ("32-true", "bf16-mixed") or (trained == "16-mixed" and options.device_type() == "cuda"):
            options = dataclasses.replace(options, precision=trained)
    spawned = options.devices > 1 or options.num_nodes > 1
    return launch(_predict_on_rank, options, str(run), str(images), task, tta, batch_size,
                  None if spawned else progress)


def _predict_on_rank(runtime: Runtime, run_text: str, images: str, task: str | None, tta: bool | None,
                     batch_size: int, progress: Callable[[int], None] | None) -> Predictions:
    """Every rank: classify its share of the images; the probabilities are gathered in file order."""
    from cytolens.classify.evaluate import read_classify_run
    from cytolens.classify.fit import predict_proba

    run = Path(run_text)
    config, manifest, tasks = read_classify_run(run)
    chosen = _choose_task(tasks, list(manifest.sort_values("label")["class"].unique()), task)
    variant = config.predict_variant
    local = runtime.local()  # inference needs no DDP wrapper: each rank runs whole models on its own images
    models = [local.setup_module(m) for m in
              load_fold_models(run, chosen, variant, which="best" if config.final_model == "best_fold" else "all")]
    use_tta = config.tta if tta is None else tta
    paths = find_image_files(images)
    # Shard whole batches, not images: every batch holds the files it holds in one process, so each
    # probability is computed from the same batch and the gathered table equals one process's to the bit.
    batches = runtime.shard(-(-len(paths) // batch_size))
    # Column 0 says whether the image could be read; unread rows keep zeros and are dropped after gathering.
    rows = np.zeros((len(batches), batch_size, 1 + len(chosen.classes)), dtype=np.float32)
    for b, index in enumerate(batches):
        batch, where = [], []
        for j, path in enumerate(paths[index * batch_size:(index + 1) * batch_size]):
            try:
                image = read_image(path, grayscale=True)
            except ImageReadError:
                pass  # named by rank 0 after gathering
            else:
                batch.append(preprocess_image(image, input_size=config.input_size, intensity=config.intensity,
                                              sharpening=config.sharpen if variant.endswith("+S") else None))
                where.append(j)
            if progress is not None:
                progress(1)
        if not batch:
            continue
        inputs = np.stack(batch)[:, None]
        proba = torch.stack([predict_proba(m, inputs, tta=use_tta, runtime=local, as_numpy=False)
                             for m in models]).mean(0)
        rows[b, where, 0] = 1
        rows[b, where, 1:] = proba.cpu().numpy()
    gathered = runtime.gather_rows(rows, -(-len(paths) // batch_size)).reshape(-1, rows.shape[-1])[:len(paths)]
    if not runtime.is_main:
        return Predictions(pd.DataFrame())
    table = []
    problems: list[tuple[Path, str]] = []
    for path, row in zip(paths, gathered):
        if not row[0]:
            problems.append((path, _read_problem(path)))
            continue
        p = row[1:]
        record: dict[str, object] = {"path": str(path), "predicted": chosen.classes[int(p.argmax())]}
        record.update({f"p_{name}": float(value) for name, value in zip(chosen.classes, p)})
        table.append(record)
    columns = ["path", "predicted", *(f"p_{name}" for name in chosen.classes)]
    return Predictions(pd.DataFrame(table, columns=columns), problems)


def _read_problem(path: Path) -> str:
    """Why ``path`` cannot be read (asked again on rank 0: messages are not gathered, only probabilities)."""
    try:
        read_image(path, grayscale=True)
    except ImageReadError as exc:
        return exc.message
    return "unreadable"
