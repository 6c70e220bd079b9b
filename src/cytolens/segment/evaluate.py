"""``cytolens segment evaluate``: scores of a trained run on labelled images, and the paper's Table 1.

Which model scores which image
------------------------------
Images are recognised by content (SHA-1 of the image file, stored in the run's manifest), so a copied or renamed
training image is still recognised. A training image is scored **only by the fold model that did not train on
it** (the model of its own validation fold): out-of-fold, never leaking. A training image whose validation fold
was not trained (``train_folds`` a subset) cannot be scored without leakage and is skipped, and the count says
so. Any other image is new data and is scored by the run's final model (the fold ensemble by default).

Dice
----
:data:`DICE_DEFINITION` is printed with every result; the scores come from :mod:`cytolens.segment.metrics`.

Outputs in ``RUN/evaluation/`` (or ``--out``): ``metrics.json``, ``per_image.csv``, ``confusion.csv`` (rows true
class, columns predicted class, pixel counts), ``table1.md`` and ``table1.csv``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cytolens.core.atomic import write_text_atomic
from cytolens.data.datacheck import check_label_pairs
from cytolens.engine import file_sha1
from cytolens.core.errors import CytolensError
from cytolens.segment.inference import predict_tiled_labels
from cytolens.segment.metrics import evaluate_images, scores_from_confusion
from cytolens.segment.config import SegmentConfig
from cytolens.segment.predict import FoldEnsemble, SegmentRun, final_model, load_models, load_segment_run

__all__ = ["DICE_DEFINITION", "PAPER_CLASSES", "PAPER_TABLE1", "evaluate_run", "is_papers_task", "table1",
           "table1_markdown"]

DICE_DEFINITION = (
    "dice of class c = 2·TP / (2·TP + FP + FN), counted over all pixels of the evaluated images (their confusion "
    "matrices summed); mean dice = unweighted mean over the K classes, background included; IoU = TP / (TP + FP "
    "+ FN); pixel accuracy = correct pixels / all pixels. Per-image means are in per_image.csv."
)

#: The classes of the paper's label images, in label order.
PAPER_CLASSES: tuple[str, ...] = ("background", "nucleus", "cytoplasm")
#: MIDL 2019, Table 1 (Keras parameter counts; validation dice; the 5-fold CV dice reported for DeepLabv3+ only).
PAPER_TABLE1: dict[str, dict[str, Any]] = {
    "unet": {"label": "U-Net", "parameters": 1_942_023, "validation_dice": 0.9102, "cv_dice": None},
    "fcdensenet103": {"label": "Tiramisu", "parameters": 9_419_011, "validation_dice": 0.927, "cv_dice": None},
    "deeplabv3plus_xception65": {
        "label": "DeepLabv3+", "parameters": 41_253_023, "validation_dice": 0.9395, "cv_dice": 0.9503,
    },
}


def is_papers_task(config: SegmentConfig) -> bool:
    """Whether a run is the paper's task: one of its three models on its classes (background, nucleus, cytoplasm).

    Only then are the paper's numbers placed beside ours.
    """
    return config.model in PAPER_TABLE1 and tuple(config.classes) == PAPER_CLASSES


def table1(run: SegmentRun, evaluation: dict[str, Any] | None = None) -> pd.DataFrame:
    """The paper's Table 1 for this run's model, the paper's numbers beside ours.

    Rows: Keras-style parameter count at the run's input channels and classes; validation dice (mean over the
    trained folds of each fold's best validation mean dice); CV dice (the best-epoch validation confusion
    matrices of the trained folds summed, i.e. every validation image scored by the model that did not train on
    it, pooled); and, with ``evaluation`` (a :func:`evaluate_run` summary), the dice on the evaluated data.

    Returns
    -------
    pandas.DataFrame
        Columns ``quantity``, ``paper``, ``ours``, ``how ours is computed``.
    """
    from cytolens.segment.models import count_parameters
    from cytolens.segment.training import new_model

    config = run.config
    paper = PAPER_TABLE1.get(config.model, {}) if is_papers_task(config) else {}
    folds = sorted(run.folds, key=lambda r: r["fold"])
    fold_list = ", ".join(str(r["fold"]) for r in folds)
    confusion = np.sum([np.asarray(r["val_confusion"], dtype=np.int64) for r in folds], axis=0)
    validation_images = sum(len(r["val_images"]) for r in folds)
    parameters = count_parameters(new_model(config))["keras"]
    rows = [
        ("parameters", paper.get("parameters"), parameters,
         f"Keras-style count (BatchNorm statistics included) at {config.in_chans} input channel(s), "
         f"{len(config.classes)} classes"),
        ("validation dice", paper.get("validation_dice"), float(np.mean([r["best_val_mean_dice"] for r in folds])),
         f"mean over trained fold(s) {fold_list} of each fold's best validation mean dice"),
        ("CV dice", paper.get("cv_dice"), scores_from_confusion(confusion, config.classes)["mean_dice"],
         f"{validation_images} validation images of fold(s) {fold_list}, each scored by the model that did not "
         f"train on it, pixels pooled ({config.folds}-fold split)"),
    ]
    if evaluation is not None:
        rows.append(("dice on evaluated data", None, evaluation["mean_dice"],
                     f"{evaluation['images']} images, {evaluation['mode']}"))
    # object dtype: a count stays an integer beside the dice values and a missing paper number stays None.
    table = pd.DataFrame(rows, columns=["quantity", "paper", "ours", "how ours is computed"], dtype=object)
    return table if paper else table.drop(columns="paper")


def table1_markdown(table: pd.DataFrame, run: SegmentRun) -> str:
    """Table 1 as markdown: the paper's column only when the run is the paper's task (see :func:`table1`)."""
    label = PAPER_TABLE1.get(run.config.model, {}).get("label", "(not in the paper)")

    def show(value: Any) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return "—"
        return f"{value:,}" if isinstance(value, (int, np.integer)) else f"{value:.4f}"

    papers = "paper" in table.columns
    lines = [f"# Table 1 (MIDL 2019) — {run.config.model} ({run.config.name})", ""]
    if papers:
        lines += [f"| | paper: {label} | ours: {run.config.model} | how ours is computed |", "|---|---:|---:|---|"]
        lines += [f"| {r.quantity} | {show(r.paper)} | {show(r.ours)} | {r._4} |" for r in table.itertuples()]
    else:
        lines += [f"| | ours: {run.config.model} | how ours is computed |", "|---|---:|---|"]
        lines += [f"| {r.quantity} | {show(r.ours)} | {r._3} |" for r in table.itertuples()]
    lines += [
        "",
        f"Dice: {DICE_DEFINITION}",
        "",
        "The paper's U-Net and Tiramisu dice come from one 153/17 hold-out split and its DeepLabv3+ CV dice from "
        "5-fold cross-validation; its dice formula is not given (a Keras dice over one-hot tensors of all classes "
        "equals pixel accuracy for hard predictions), so compare with care.",
    ]
    return "\n".join(lines) + "\n"


def _assign_scorers(run: SegmentRun, samples: pd.DataFrame) -> list[str | int | None]:
    """For each sample: its validation fold (a training image), ``"ensemble"`` (new) or None (cannot score)."""
    fold_of = dict(zip(run.manifest["image_sha1"], run.manifest["fold"].astype(int)))
    trained = {int(r["fold"]) for r in run.folds}
    scorers: list[str | int | None] = []
    for path in samples["path"]:
        fold = fold_of.get(file_sha1(path))
        if fold is None:
            scorers.append("ensemble")
        else:
            scorers.append(fold if fold in trained else None)
    return scorers


def evaluate_run(
    run: str | Path,
    data: str | Path,
    *,
    out: str | Path | None = None,
    tta: bool | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Score a run on a labelled dataset and write ``metrics.json``, ``per_image.csv``, ``confusion.csv`` and
    Table 1 (see the module docstring for which model scores which image).

    Parameters
    ----------
    run : str or Path
        A run folder written by ``cytolens segment train``.
    data : str or Path
        Folder with ``images/`` (or ``brightfield/``) and ``labels/`` in the run's classes.
    out : str or Path, optional
        Output folder; default ``RUN/evaluation``.
    tta : bool, optional
        Test-time augmentation; default the run's ``inference.tta``.
    progress : callable, optional
        Called with 1 per image.

    Returns
    -------
    dict
        The summary written to ``metrics.json``: :func:`~cytolens.segment.metrics.evaluate_images`' scores plus
        ``mode``, ``definition``, ``scored_out_of_fold``, ``scored_by_ensemble``, ``skipped``.

    Raises
    ------
    CytolensError
        If a pair is unusable, or no image can be scored without leakage.
    """
    from cytolens.segment.training import read_input, read_labels

    loaded = load_segment_run(run)
    config = loaded.config
    check = check_label_pairs(data, classes=config.classes)
    if not check.ok:
        path, problem = check.problems[0]
        raise CytolensError(f"{len(check.problems)} unusable pair(s), first {path}: {problem}", path=data)
    samples = check.dataset.samples
    scorers = _assign_scorers(loaded, samples)
    skipped = [stem for stem, s in zip(samples["stem"], scorers) if s is None]
    out_of_fold = sum(isinstance(s, int) for s in scorers)
    new = sum(s == "ensemble" for s in scorers)
    if out_of_fold + new == 0:
        raise CytolensError(
            f"all {len(skipped)} images are training images whose validation fold was not trained; scoring them "
            "would leak (train more folds, or evaluate on other images)", path=data,
        )
    use_tta = config.inference.tta if tta is None else tta
    models: dict[str | int, FoldEnsemble] = {}
    descriptions = {}

    def model_for(scorer: str | int) -> FoldEnsemble:
        if scorer not in models:
            if scorer == "ensemble":
                models[scorer], descriptions[scorer] = final_model(loaded)
            else:
                models[scorer] = FoldEnsemble(load_models(loaded, [int(scorer)]))
        return models[scorer]

    def pairs() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        for stem, path, label_path, scorer in zip(samples["stem"], samples["path"], samples["label_path"], scorers):
            if scorer is not None:
                model = model_for(scorer)
                predicted = predict_tiled_labels(
                    model, read_input(path, config)[1], num_classes=len(config.classes), tile=config.inference.tile,
                    overlap=config.inference.overlap, batch_size=config.inference.batch_size, tta=use_tta,
                    input_multiple=model.input_multiple,
                )
                yield stem, read_labels(label_path), predicted
            if progress is not None:
                progress(1)

    table, summary = evaluate_images(pairs(), class_names=config.classes)
    scored = [s for s in scorers if s is not None]
    table.insert(1, "scored_by", [f"fold {s} (out-of-fold)" if isinstance(s, int) else "ensemble" for s in scored])
    if new == 0:
        mode = "training data: out-of-fold predictions only (each image scored by the model that did not train on it)"
    elif out_of_fold == 0:
        mode = f"new data: {descriptions.get('ensemble', 'final model')}"
    else:
        mode = f"mixed: {out_of_fold} training images out-of-fold, {new} new images by the final model"
    confusion = summary.pop("confusion")
    summary.update(
        mode=mode, definition=DICE_DEFINITION, tta=use_tta, scored_out_of_fold=out_of_fold, scored_by_ensemble=new,
        skipped=skipped, skipped_reason=("training images whose validation fold was not trained" if skipped else ""),
        confusion=confusion.tolist(), classes=config.classes, run=str(loaded.path), data=str(Path(data)),
    )
    destination = Path(out) if out is not None else loaded.path / "evaluation"
    destination.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_finite(summary), indent=2, default=_json_default, allow_nan=False)
    write_text_atomic(destination / "metrics.json", text + "\n")
    write_text_atomic(destination / "per_image.csv", table.to_csv(index=False))
    frame = pd.DataFrame(confusion, index=[f"true_{c}" for c in config.classes],
                         columns=[f"predicted_{c}" for c in config.classes])
    write_text_atomic(destination / "confusion.csv", frame.to_csv(index_label="truth"))
    table_1 = table1(loaded, summary)
    write_text_atomic(destination / "table1.csv", table_1.to_csv(index=False))
    write_text_atomic(destination / "table1.md", table1_markdown(table_1, loaded))
    return summary


def _finite(value: Any) -> Any:
    """NaN (an undefined score, e.g. dice of a class absent from truth and prediction) becomes JSON null."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return None
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
