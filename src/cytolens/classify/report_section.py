"""The classification run's section of the report: Table IV with intervals, the headline against the paper,
the figures that matter and the run's provenance.

Everything is read from the run folder (``metrics.json``, ``table_iv.csv``, ``figures/``, the fold trainings'
``done.json``), so the page shows the numbers of the files beside it.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from cytolens.classify.config import ClassifyConfig
from cytolens.core.errors import CytolensError
from cytolens.engine.run_folder import RunRecord, load_run
from cytolens.report.figures import class_montage_figure, figure_png
from cytolens.report.page import Headline, ReportFigure, ReportSection, Summary
from cytolens.report.provenance import run_provenance
from cytolens.report.tables import format_interval, format_percent, table_html

__all__ = ["report_section", "section_for_folder"]

TITLE = "Classification of paclitaxel response (Shpilman et al. 2017)"

#: How each method of Table IV is called on the page.
METHOD_NAMES = {
    "CNN": "CNN",
    "CNN+T": "CNN + rotations",
    "CNN+T+S": "CNN + rotations + sharpening",
    "XGBoost": "XGBoost on features",
    "best expert": "best expert",
    "expert vote": "experts' vote",
}


def _method_name(method: str) -> str:
    return METHOD_NAMES.get(method, method)


def section_for_folder(folder: Path) -> ReportSection | None:
    """The section of a classification run folder, or None if ``folder`` is not one."""
    try:
        record = load_run(folder, "classify", ClassifyConfig)
    except CytolensError:
        return None
    return report_section(record)


def _headline_task(metrics: dict) -> str | None:
    """The task with every class (the paper's 3-class task); the first task when none has them all."""
    tasks = metrics.get("tasks") or {}
    for name, task in tasks.items():
        if sorted(task.get("classes", [])) == sorted(metrics.get("classes", [])):
            return name
    return next(iter(tasks), None)


def _best_cnn(task: dict) -> str | None:
    cnns = {m: r for m, r in task["methods"].items() if m.startswith("CNN")}
    return max(cnns, key=lambda m: (cnns[m]["accuracy"], m)) if cnns else None


def _paper_value(table: pd.DataFrame | None, task: str, method: str) -> float | None:
    column = f"paper {method}"
    if table is None or column not in table.columns:
        return None
    rows = table.loc[table["task"].astype(str) == task, column]
    return float(rows.iloc[0]) if len(rows) and pd.notna(rows.iloc[0]) else None


def _summary(record: RunRecord[ClassifyConfig], metrics: dict, table: pd.DataFrame | None) -> Summary:
    task_name = _headline_task(metrics)
    if task_name is None:
        return Summary([], "The run holds no evaluated task yet.")
    task = metrics["tasks"][task_name]
    best = _best_cnn(task)
    config = record.config
    trained = (f"this run trained at most {config.training.max_epochs} epoch(s) per fold on "
               f"{metrics.get('images', {}).get('train', '?')} training images (config {config.name})")
    if best is None:
        return Summary([], f"No CNN variant in this run; {trained}.")
    result = task["methods"][best]
    ours = format_interval(result["accuracy"], *result["ci95"])
    paper = _paper_value(table, task_name, best)
    headlines = [Headline(f"{task_name}: test accuracy, best CNN ({_method_name(best)})", ours,
                          format_percent(paper, scale=1) if paper is not None else None)]
    xgboost = task["methods"].get("XGBoost")
    if xgboost is not None:
        headlines.append(Headline(f"{task_name}: XGBoost on features", format_interval(xgboost["accuracy"],
                                                                                       *xgboost["ci95"])))
    if paper is None:
        sentence = (f"The paper has no number for this task and these classes, so there is nothing to compare "
                    f"with; {trained}, tested on {result['n']} images.")
    else:
        difference = 100 * result["accuracy"] - paper
        low, high = (100 * v for v in result["ci95"])
        side = "above" if difference > 0 else "below"
        inside = low <= paper <= high
        sentence = (
            f"{abs(difference):.1f} points {side} the paper" if abs(difference) >= 0.05 else "Equal to the paper"
        ) + (
            f"; the paper's {paper:.1f} % lies inside our 95 % interval, so on {result['n']} test images the "
            "difference is within chance" if inside else
            f"; the paper's {paper:.1f} % lies outside our 95 % interval ({low:.1f}–{high:.1f}), a real difference "
            f"on {result['n']} test images"
        ) + f". {trained[0].upper()}{trained[1:]}."
    return Summary(headlines, sentence)


def _table_iv(table: pd.DataFrame) -> str:
    """Table IV with each method's accuracy and interval in one cell, the paper's columns (if any) first."""
    shown = pd.DataFrame({"task": table["task"].astype(str)})
    if "n_test" in table.columns:
        shown["test images"] = table["n_test"]
    for column in table.columns:
        if column.startswith("paper "):
            shown[f"paper: {_method_name(column.removeprefix('paper '))}"] = [
                format_percent(v, scale=1) for v in table[column]]
    for column in table.columns:
        if column in ("task", "n_test") or column.startswith("paper ") or column.endswith(" 95% CI"):
            continue
        intervals = table.get(f"{column} 95% CI")
        cells = []
        for position, value in enumerate(table[column]):
            text = format_percent(value, scale=1)
            interval = None if intervals is None else intervals.iloc[position]
            cells.append(f"{text} ({interval})" if isinstance(interval, str) and interval and text != "—" else text)
        shown[f"ours: {_method_name(column)}"] = cells
    caption = ("Table IV: test accuracy per task, with 95 % Wilson intervals"
               + (" and the paper's numbers beside ours." if any(c.startswith("paper") for c in shown) else "."))
    return table_html(shown, caption=caption)


def _methods_detail(task_name: str, task: dict) -> str:
    rows = []
    for method, result in task["methods"].items():
        folds = result.get("fold_test_accuracies")
        rows.append({
            "method": _method_name(method),
            "test accuracy (95 % interval)": format_interval(result["accuracy"], *result["ci95"]),
            "correct / test images": f"{result['correct']} / {result['n']}",
            "fold models' test accuracy": (f"{100 * np.mean(folds):.1f} ± {100 * np.std(folds):.1f} %"
                                           if folds else "—"),
            "calibration error (ECE)": f"{result['ece']:.3f}" if result.get("ece") is not None else "—",
            "Brier score": f"{result['brier']:.3f}" if result.get("brier") is not None else "—",
            "epochs per fold": ", ".join(str(e) for e in result.get("epochs", [])) or "—",
        })
    return table_html(pd.DataFrame(rows), caption=f"Every method on the task {task_name}: the final model's "
                      "test accuracy, the fold models' spread, and how well its probabilities are calibrated.")


def _figure(path: Path, caption: str) -> list[ReportFigure]:
    return [ReportFigure(path, caption)] if path.is_file() else []


def _slug(name: str) -> str:
    """The file-name form of a task or method name in ``figures/`` (``"3 classes"`` -> ``"3_classes"``,
    ``"CNN+T"`` -> ``"CNNpT"``), as the run's figure writer spells it."""
    return name.replace(" ", "_").replace("/", "-").replace("+", "p")


def _figures(folder: Path, task_name: str | None, best: str | None) -> list[ReportFigure]:
    figures = folder / "figures"
    found = _figure(figures / "accuracy.png",
                    "Test accuracy of every method on every task; the bars are 95 % Wilson intervals.")
    if task_name is None or best is None:
        return found
    name = f"{_slug(task_name)}__{_slug(best)}.png"
    found += _figure(figures / "confusion" / name,
                     f"Confusion matrix of the {_method_name(best)} model on the {task_name} test images: rows are "
                     "the true class, columns the predicted one.")
    found += _figure(figures / "learning_curves" / name,
                     f"Learning curves of the {_method_name(best)} model on {task_name}: loss and accuracy per epoch "
                     "on the training and validation folds.")
    found += _figure(figures / "reliability" / name,
                     f"Reliability of the {_method_name(best)} model's probabilities on {task_name}: a calibrated "
                     "model's bars follow the diagonal.")
    found += _figure(figures / "gradcam" / f"{_slug(task_name)}.png",
                     f"Grad-CAM maps on {task_name}: where the network looked in correctly (✓) and wrongly (✗) "
                     "classified test cells.")
    return found


def _examples(folder: Path, classes: list[str], seed: int) -> list[ReportFigure]:
    try:
        manifest = pd.read_parquet(folder / "manifest.parquet")
        manifest = manifest[manifest["path"].map(lambda p: Path(p).is_file())]
        if manifest.empty:
            return []
        fig = class_montage_figure(manifest, classes, per_class=4, seed=seed, row_label="class {name}")
    except (OSError, ValueError, KeyError, CytolensError):
        return []  # the images moved or were deleted: the report still shows every number
    return [ReportFigure(figure_png(fig, dpi=80),
                         f"Example images of the run's data, four per class ({', '.join(classes)}), drawn at random.")]


def _time_per_step(folder: Path) -> str | None:
    seconds, epochs, rates = 0.0, 0, []
    for path in folder.glob("units/*/*/fold*/done.json"):
        try:
            done = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        seconds += float(done.get("seconds") or 0.0)
        epochs += int(done.get("epochs") or 0)
        if done.get("samples_per_s"):
            rates.append(float(done["samples_per_s"]))
    if not epochs:
        return None
    return (f"{seconds / epochs:.2f} s per epoch over {epochs} epochs of fold training; "
            f"median {np.median(rates):.0f} training images/s")


def report_section(record: RunRecord[ClassifyConfig]) -> ReportSection:
    """The report section of a classification run.

    Parameters
    ----------
    record : RunRecord of ClassifyConfig
        From ``load_run(folder, "classify", ClassifyConfig)``.

    Returns
    -------
    ReportSection
        Its summary compares the best CNN variant on the task with every class with the paper, when the
        run's Table IV has the paper's columns.
    """
    folder, config = record.path, record.config
    section = ReportSection("classify", TITLE)
    metrics_path, table_path = folder / "metrics.json", folder / "table_iv.csv"
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else None
    table = pd.read_csv(table_path, dtype={"task": str}) if table_path.is_file() else None
    classes = list((metrics or {}).get("classes") or config.classes or [])
    images = (metrics or {}).get("images", {})
    data = record.info.get("data", "?")
    section.method.append(
        f"<p>{len(classes)} classes ({html.escape(', '.join(classes))}) from <code>{html.escape(str(data))}</code>: "
        f"{images.get('train', '?')} training and {images.get('test', '?')} held-out test images, resized to "
        f"{config.input_size}×{config.input_size}. Each task ({html.escape(', '.join((metrics or {}).get('tasks', {})))}) "
        f"trains the paper's CNN with {config.folds}-fold grouped cross-validation (rotated copies of one cell "
        f"stay in one fold; at most {config.training.max_epochs} epoch(s), early stop after "
        f"{config.training.patience} epochs without improvement), as plain CNN, with rotations (+T) and with "
        f"rotations and sharpening (+T+S); the final model is the {html.escape(config.final_model)} of the fold "
        "models, scored once on the test images. XGBoost on hand-made features is the classical baseline.</p>")
    section.examples = _examples(folder, classes, config.seed)
    if metrics is None or table is None:
        section.summary = Summary([], "The run has not finished: no metrics yet (rerun its command to resume).")
    else:
        section.summary = _summary(record, metrics, table)
        section.results.append(_table_iv(table))
        task_name = _headline_task(metrics)
        if task_name is not None:
            section.results.append(_methods_detail(task_name, metrics["tasks"][task_name]))
    task_name = _headline_task(metrics) if metrics else None
    best = _best_cnn(metrics["tasks"][task_name]) if metrics and task_name else None
    section.figures = _figures(folder, task_name, best)
    section.provenance.append(run_provenance(record, time_per_step=_time_per_step(folder),
                                             extra={"data": str(data)}))
    return section
