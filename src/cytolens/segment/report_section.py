"""The segmentation run's section of the report: Table 1 beside the paper's, dice per class, overlays, training
curves and the run's provenance, all read from the run folder (``evaluation/`` once ``segment evaluate`` ran)."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from cytolens.core.errors import CytolensError
from cytolens.data.io import read_image
from cytolens.engine.run_folder import RunRecord, load_run
from cytolens.report.figures import display_image, figure_png, new_figure
from cytolens.report.page import Headline, ReportFigure, ReportSection, Summary
from cytolens.report.provenance import run_provenance
from cytolens.report.tables import MISSING, format_number, table_html
from cytolens.segment.config import SegmentConfig

__all__ = ["report_section", "section_for_folder"]

TITLE = "Label-free segmentation of bright-field images (MIDL 2019)"
#: At most this many overlays of predicted fields.
MAX_OVERLAYS = 4


def section_for_folder(folder: Path) -> ReportSection | None:
    """The section of a segmentation run folder, or None if ``folder`` is not one."""
    try:
        record = load_run(folder, "segment", SegmentConfig)
    except CytolensError:
        return None
    return report_section(record)


def _number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _folds(folder: Path) -> list[dict]:
    folds = []
    for path in sorted(folder.glob("folds/fold*/done.json")):
        try:
            folds.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return folds


def _summary(config: SegmentConfig, table: pd.DataFrame | None, folds: list[dict], images: int | str) -> Summary:
    if table is None:
        return Summary([], "The run has no evaluation yet: run 'cytolens segment evaluate RUN' for Table 1.")
    rows = table.set_index("quantity")
    headlines = []
    for quantity, label in (("validation dice", "validation mean dice (best epoch, mean of folds)"),
                            ("CV dice", "cross-validated mean dice"),
                            ("dice on evaluated data", "mean dice on the evaluated images")):
        if quantity in rows.index and _number(rows.loc[quantity, "ours"]) is not None:
            paper = _number(rows.loc[quantity, "paper"]) if "paper" in rows.columns else None
            if paper is None and quantity == "CV dice":
                continue  # only beside the paper's own CV dice; the validation dice is the headline
            headlines.append(Headline(f"{config.model}: {label}", f"{float(rows.loc[quantity, 'ours']):.3f}",
                                      f"{paper:.3f}" if paper is not None else None))
    epochs = max((int(f.get("epochs_run", 0)) for f in folds), default=0)
    trained = (f"this run trained {len(folds)} fold(s) for {epochs} epoch(s) of {config.patches_per_epoch} "
               f"patches on {images} fields (config {config.name})")
    compared = [(h, _number(h.ours), _number(h.paper)) for h in headlines if h.paper is not None]
    if not compared:
        sentence = f"The paper reports no dice for this model here, so there is nothing to compare with; {trained}."
    else:
        headline, ours, paper = compared[0]
        difference = ours - paper
        sentence = (f"{abs(difference):.3f} {'above' if difference > 0 else 'below'} the paper's {paper:.3f}; "
                    f"{trained}. The paper's dice formula is not given, so compare with care.")
    return Summary(headlines, sentence)


def _table1(table: pd.DataFrame, config: SegmentConfig) -> str:
    shown = pd.DataFrame({"quantity": table["quantity"]})
    from cytolens.segment.evaluate import PAPER_TABLE1  # the paper's name for the model, for the column

    label = PAPER_TABLE1.get(config.model, {}).get("label")
    if "paper" in table.columns and table["paper"].notna().any():
        shown[f"paper: {label or 'paper'}"] = [format_number(_number(v)) for v in table["paper"]]
    shown[f"ours: {config.model}"] = [format_number(_number(v)) for v in table["ours"]]
    if "how ours is computed" in table.columns:
        shown["how ours is computed"] = table["how ours is computed"].fillna(MISSING)
    return table_html(shown, caption="Table 1: the model's size and its mean dice"
                      + (", the paper's numbers beside ours." if len(shown.columns) > 3 else "."))


def _per_class(metrics: dict) -> str:
    classes = metrics.get("classes") or list(metrics.get("dice", {}))
    def score(key: str, name: str) -> str:
        # None where the measure is undefined: precision of a class the model never predicted, recall of one
        # absent from the ground truth.
        value = _number((metrics.get(key) or {}).get(name))
        return f"{value:.3f}" if value is not None else MISSING

    measures = (("dice", "dice"), ("iou", "IoU"), ("precision", "precision"), ("recall", "recall"))
    rows = [{"class": name, **{measure: score(key, name) for key, measure in measures if key in metrics}}
            for name in classes]
    table = table_html(pd.DataFrame(rows), caption=(
        f"Per class on {metrics.get('images', '?')} evaluated images ({metrics.get('mode', '')}); pixel accuracy "
        f"{metrics.get('pixel_accuracy', float('nan')):.3f}."))
    return table + f'<p class="note">{html.escape(str(metrics.get("definition", "")))}</p>'



def _examples(manifest: pd.DataFrame, classes: list[str]) -> list[ReportFigure]:
    """Two fields: the bright-field input and the label map derived from its fluorescence."""
    rows = manifest[[Path(p).is_file() and Path(lp).is_file() for p, lp in
                     zip(manifest["path"], manifest["label_path"], strict=True)]].head(2)
    if rows.empty:
        return []
    try:
        fig, axes = new_figure(len(rows), 2, figsize=(7.2, 3.0 * len(rows)), squeeze=False, constrained_layout=True)
        for i, row in enumerate(rows.itertuples()):
            axes[i, 0].imshow(display_image(read_image(row.path, grayscale=True)), cmap="gray")
            axes[i, 0].set_title(f"{row.stem}: bright-field input", fontsize=9)
            labels = np.asarray(read_image(row.label_path))
            shown = axes[i, 1].imshow(labels, cmap="viridis", vmin=0, vmax=max(len(classes) - 1, 1),
                                      interpolation="nearest")
            axes[i, 1].set_title("ground truth: " + " / ".join(classes), fontsize=9)
            for ax in axes[i]:
                ax.set_axis_off()
        fig.colorbar(shown, ax=axes[:, 1], ticks=range(len(classes)), shrink=0.8).ax.set_yticklabels(classes)
    except (OSError, ValueError, CytolensError):
        return []  # the images moved: the numbers are still shown
    return [ReportFigure(figure_png(fig, dpi=80), "Two of the run's fields: the bright-field image the network sees "
                         "and the label map thresholded from the DAPI and whole-cell-stain fluorescence, the target.")]


def _curves(folder: Path) -> list[ReportFigure]:
    from cytolens.segment.curves import draw_training_curves, training_curves

    if not any(folder.glob("folds/fold*/history.csv")):
        return []
    fig = draw_training_curves(training_curves({folder.name: folder}))
    return [ReportFigure(figure_png(fig, dpi=90), "Training: the loss on training patches and the mean dice on the "
                         "validation fields against the number of patches seen (fold 0 solid, other folds dotted).")]


def _prediction_model(path: Path) -> str:
    """Which model ``segment predict`` used, in its own words (``ensemble of folds 0, 1 ...``)."""
    try:
        return str(json.loads(path.read_text(encoding="utf-8")).get("model") or "run's final model")
    except (OSError, ValueError):
        return "run's final model"


def overlay_caption(path: Path, model: str) -> str:
    """The caption of a ``segment predict`` overlay; it names the field's OME-Zarr images when they were written
    (``--format ome-zarr``), since the overlay is only a preview of them."""
    stem = path.name.removesuffix("_overlay.png")
    text = f"Field {stem}: the predicted classes drawn over its bright-field image, predicted by the {model}."
    images = [name for name in (f"{stem}.ome.zarr", f"{stem}_prob.ome.zarr") if (path.parent / name).is_dir()]
    if images:
        text += (f" Full resolution in {' and '.join(images)} (OME-Zarr 0.5: the image with labels/classes"
                 f"{' and labels/cells' if (path.parent / images[0] / 'labels' / 'cells').is_dir() else ''}"
                 f"{', and the class probabilities' if len(images) == 2 else ''}; napari opens them).")
    return text


def _time_per_step(folder: Path, config: SegmentConfig, folds: list[dict]) -> str | None:
    seconds = [float(s) for path in folder.glob("folds/fold*/history.csv")
               for s in pd.read_csv(path).get("seconds", pd.Series(dtype=float)).dropna()]
    if not seconds:
        return None
    per_epoch = float(np.mean(seconds))
    steps = math.ceil(config.patches_per_epoch / config.batch_size)
    rates = [float(f["samples_per_s"]) for f in folds if f.get("samples_per_s")]
    rate = f", {np.median(rates):.1f} patches/s" if rates else ""
    return (f"{per_epoch / steps:.3f} s per step of {config.batch_size} patches ({per_epoch:.1f} s per epoch of "
            f"{steps} steps, validation included{rate})")


def report_section(record: RunRecord[SegmentConfig]) -> ReportSection:
    """The report section of a segmentation run.

    Parameters
    ----------
    record : RunRecord of SegmentConfig
        From ``load_run(folder, "segment", SegmentConfig)``.

    Returns
    -------
    ReportSection
        Table 1 comes from ``evaluation/table1.csv`` (``cytolens segment evaluate``); a run not yet evaluated
        shows its training and provenance and says so.
    """
    folder, config = record.path, record.config
    section = ReportSection("segment", TITLE)
    evaluation = folder / "evaluation"
    table = pd.read_csv(evaluation / "table1.csv") if (evaluation / "table1.csv").is_file() else None
    metrics_path = evaluation / "metrics.json"
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else None
    manifest = pd.read_parquet(folder / "manifest.parquet") if (folder / "manifest.parquet").is_file() else None
    folds = _folds(folder)
    images = len(manifest) if manifest is not None else "?"
    data = record.info.get("data", "?")
    section.method.append(
        f"<p>{images} bright-field fields from <code>{html.escape(str(data))}</code>, each with a label map of "
        f"{html.escape(', '.join(config.classes))}. A {html.escape(config.model)} network learns the map from the "
        f"bright-field image alone, on {config.patch_size}×{config.patch_size} class-balanced patches "
        f"({config.patches_per_epoch} per epoch, batch {config.batch_size}) with the paper's augmentation; Adam at "
        f"{config.lr:g}, halved every {config.lr_halving_epochs} epochs; {config.folds}-fold split by field, "
        f"{len(folds)} fold(s) trained. Dice is scored on fields the scoring model did not train on.</p>")
    if manifest is not None and "label_path" in manifest.columns:
        section.examples = _examples(manifest, list(config.classes))
    section.summary = _summary(config, table, folds, images)
    if table is not None:
        section.results.append(_table1(table, config))
    if metrics is not None:
        section.results.append(_per_class(metrics))
    overlays = sorted((folder / "predictions").glob("*_overlay.png"))[:MAX_OVERLAYS]
    model = _prediction_model(folder / "predictions" / "prediction.json")
    section.figures = [ReportFigure(path, overlay_caption(path, model)) for path in overlays]
    section.figures += _curves(folder)
    section.provenance.append(run_provenance(record, time_per_step=_time_per_step(folder, config, folds),
                                             extra={"data": str(data)}))
    return section
