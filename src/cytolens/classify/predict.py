"""``cytolens classify predict``: a trained run folder applied to new images of any number and bit depth.

The run's own config decides the preprocessing (input size, intensity scaling, sharpening for +S variants)
and the final model (the ensemble of the fold models, or the best fold), so predictions match the
evaluation in the run's report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cytolens.classify.data import Task, preprocess_image
from cytolens.classify.models import create_model
from cytolens.errors import CytolensError, ImageReadError, OptionError
from cytolens.io import find_image_files, read_image
from cytolens.training import load_checkpoint


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
        If the run holds no checkpoint for the task and variant.
    """
    import json

    from cytolens.classify.protocol import VARIANT_SLUGS, checkpoint_path
    from cytolens.classify.results import load_run

    config, _, _ = load_run(run)
    folders = sorted((run / "units" / task.slug / VARIANT_SLUGS[variant]).glob("fold*/done.json"))
    records = [json.loads(p.read_text()) for p in folders]
    records = [r for r in records if checkpoint_path(run, task, variant, r["fold"]).is_file()]
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
        model.load_state_dict(load_checkpoint(checkpoint_path(run, task, variant, record["fold"])))
        model.eval()
        models.append(model)
    return models


def _choose_task(tasks: list[Task], classes: list[str], requested: str | None) -> Task:
    """The all-classes task by default; a named one (``"1 vs 0"`` means ``"0 vs 1"``) otherwise."""
    from cytolens.classify.data import build_tasks

    names = ", ".join(t.name for t in tasks)
    wanted = build_tasks(classes, ["all" if requested is None else requested])[0]
    found = next((t for t in tasks if t.classes == wanted.classes), None)
    if found is None:
        what = "model for all classes" if requested is None else f"model for task {requested!r}"
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
        Images held in memory at once.
    progress : callable, optional
        Called with 1 per image.

    Returns
    -------
    Predictions
        ``table`` has one row per readable image: ``path``, ``predicted`` (class name) and ``p_<class>``.
    """
    from cytolens.classify.results import load_run
    from cytolens.classify.trainer import predict_proba

    run = Path(run)
    config, manifest, tasks = load_run(run)
    chosen = _choose_task(tasks, list(manifest.sort_values("label")["class"].unique()), task)
    variant = config.predict_variant
    models = load_fold_models(run, chosen, variant, which="best" if config.final_model == "best_fold" else "all")
    use_tta = config.tta if tta is None else tta
    paths = find_image_files(images)
    rows: list[dict[str, object]] = []
    problems: list[tuple[Path, str]] = []
    for start in range(0, len(paths), batch_size):
        batch_paths, batch = [], []
        for path in paths[start : start + batch_size]:
            try:
                image = read_image(path, grayscale=True)
            except ImageReadError as exc:
                problems.append((path, exc.message))
            else:
                batch.append(
                    preprocess_image(
                        image,
                        input_size=config.input_size,
                        intensity=config.intensity,
                        sharpening=config.sharpen if variant.endswith("+S") else None,
                    )
                )
                batch_paths.append(path)
            if progress is not None:
                progress(1)
        if not batch:
            continue
        inputs = np.stack(batch)[:, None]
        proba = np.mean([predict_proba(m, inputs, tta=use_tta) for m in models], axis=0)
        for path, p in zip(batch_paths, proba):
            row: dict[str, object] = {"path": str(path), "predicted": chosen.classes[int(p.argmax())]}
            row.update({f"p_{name}": float(value) for name, value in zip(chosen.classes, p)})
            rows.append(row)
    columns = ["path", "predicted", *(f"p_{name}" for name in chosen.classes)]
    return Predictions(pd.DataFrame(rows, columns=columns), problems)
