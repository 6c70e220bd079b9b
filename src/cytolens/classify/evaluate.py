"""Tables, statistics and figures of a classification run, computed from what the run folder holds.

Everything here reads the run folder (config, manifest, per-unit outputs), so results can be rebuilt at any
time (``cytolens classify report RUN``) without retraining.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from cytolens.core.atomic import write_text_atomic
from cytolens.evaluation.calibration import brier_score, expected_calibration_error, reliability_curve
from cytolens.classify.config import ClassifyConfig
from cytolens.data.tasks import SHPILMAN2017_CLASSES, Task, build_tasks, slug
from cytolens.engine import load_run
from cytolens.core.errors import CytolensError
from cytolens.data.layouts import read_manifest
from cytolens.evaluation.stats import (
    confusion_matrix,
    mcnemar_exact,
    most_confused_pairs,
    paired_t_test,
    proportion_interval,
)

XGBOOST = "XGBoost"
# Shpilman et al. 2017, Table IV (test accuracy, %), keyed by each task's classes. Experts from Table I.
PAPER_TABLE_IV: dict[tuple[str, ...], dict[str, float]] = {
    ("0", "0.1", "1"): {"best expert": 62.67, "expert vote": 62.00, "CNN": 57.67, "CNN+T": 59.00, "CNN+T+S": 66.00},
    ("0", "0.1"): {"best expert": 90.50, "expert vote": 89.00, "CNN": 79.50, "CNN+T": 84.00, "CNN+T+S": 88.50},
    ("0", "1"): {"best expert": 93.00, "expert vote": 90.50, "CNN": 88.00, "CNN+T": 90.50, "CNN+T+S": 91.00},
    ("0.1", "1"): {"best expert": 52.00, "expert vote": 51.00, "CNN": 55.00, "CNN+T": 56.00, "CNN+T+S": 70.50},
}
PAPER_COLUMNS: tuple[str, ...] = ("best expert", "expert vote", "CNN", "CNN+T", "CNN+T+S")


def paper_numbers(task: Task, dataset_classes: Sequence[str]) -> dict[str, float] | None:
    """The paper's Table IV row for ``task``, or None when it is not the paper's task on the paper's classes.

    A task is the paper's when the dataset's classes are the paper's (folders ``0``, ``0.1``, ``1``) and the task
    is one the paper ran; any other dataset, whatever its class names, gets no paper numbers beside its own.
    """
    if tuple(dataset_classes) != SHPILMAN2017_CLASSES:
        return None
    return PAPER_TABLE_IV.get(tuple(task.classes))


def read_classify_run(run: str | Path) -> tuple[ClassifyConfig, pd.DataFrame, list[Task]]:
    """Read a classification run folder's config, manifest and tasks.

    Raises
    ------
    CytolensError
        If ``run`` is not a classification run folder (no ``run.json`` of kind ``classify``).
    """
    from cytolens.classify.training import RUN_KIND

    record = load_run(run, RUN_KIND, ClassifyConfig)
    manifest = read_manifest(record.path / "manifest.parquet")
    classes = list(manifest.sort_values("label")["class"].unique())
    return record.config, manifest, build_tasks(classes, record.config.tasks)


def _unit_folders(run: Path, task: Task, variant: str) -> list[Path]:
    from cytolens.classify.training import VARIANT_SLUGS

    base = run / "units" / task.slug / VARIANT_SLUGS[variant]
    return sorted((p for p in base.glob("fold*") if (p / "done.json").is_file()), key=lambda p: int(p.name[4:]))


def final_probabilities(run: Path, task: Task, variant: str, final_model: str) -> tuple[np.ndarray, list[dict]]:
    """Test-set probabilities of a task's final model (fold ensemble or best fold) and the folds' records."""
    folders = _unit_folders(run, task, variant)
    if not folders:
        raise CytolensError(f"no finished fold for task {task.name!r}, variant {variant}", path=run)
    records = [json.loads((f / "done.json").read_text()) for f in folders]
    probas = [np.load(f / "test_proba.npy") for f in folders]
    if final_model == "best_fold":
        best = int(np.argmax([r["best_val_accuracy"] for r in records]))
        return probas[best], records
    return np.mean(probas, axis=0), records


def _fold_test_accuracies(run: Path, task: Task, variant: str, y_true: np.ndarray) -> list[float]:
    return [float((np.load(f / "test_proba.npy").argmax(1) == y_true).mean()) for f in _unit_folders(run, task, variant)]


def collect_predictions(run: str | Path) -> pd.DataFrame:
    """One row per test image, task and method: true class, predicted class, probability of every class."""
    run = Path(run)
    config, manifest, tasks = read_classify_run(run)
    classes = list(manifest.sort_values("label")["class"].unique())
    rows = []
    for task in tasks:
        test = manifest[(manifest["split"] == "test") & manifest["class"].isin(task.classes)]
        methods = [(v, None) for v in config.variants]
        if config.xgboost.enabled:
            methods.append((XGBOOST, run / "xgboost" / task.slug / "test_proba.npy"))
        for method, path in methods:
            if path is None:
                proba, _ = final_probabilities(run, task, method, config.final_model)
            elif path.is_file():
                proba = np.load(path)
            else:
                continue
            table = pd.DataFrame(
                {
                    "task": task.name,
                    "method": method,
                    "path": test["path"].to_numpy(),
                    "class": test["class"].to_numpy(),
                    "predicted": np.asarray(task.classes)[proba.argmax(1)],
                }
            )
            for name in classes:
                table[f"p_{name}"] = proba[:, task.classes.index(name)] if name in task.classes else np.nan
            rows.append(table)
    predictions = pd.concat(rows, ignore_index=True)
    predictions["correct"] = predictions["class"] == predictions["predicted"]
    return predictions


def _method_metrics(part: pd.DataFrame, task: Task) -> dict[str, object]:
    y_true = part["class"].map({c: i for i, c in enumerate(task.classes)}).to_numpy()
    y_pred = part["predicted"].map({c: i for i, c in enumerate(task.classes)}).to_numpy()
    proba = part[[f"p_{c}" for c in task.classes]].to_numpy(dtype=float)
    proba = proba / proba.sum(axis=1, keepdims=True)  # guard float32 rounding before the checks
    correct = int((y_true == y_pred).sum())
    matrix = confusion_matrix(y_true, y_pred, n_classes=len(task.classes))
    low, high = proportion_interval(correct, len(part), method="wilson")
    return {
        "n": len(part),
        "correct": correct,
        "accuracy": correct / len(part),
        "ci95": [low, high],
        "ece": expected_calibration_error(proba, y_true),
        "brier": brier_score(proba, y_true),
        "confusion_matrix": matrix.tolist(),
        "most_confused": [list(p) for p in most_confused_pairs(matrix, list(task.classes))],
    }


def _comparisons(predictions: pd.DataFrame, methods: list[str]) -> list[dict[str, object]]:
    """Paired tests between every two methods scored on the same test images."""
    out = []
    correct = {m: predictions[predictions["method"] == m].set_index("path")["correct"] for m in methods}
    for a, b in combinations(methods, 2):
        aligned = pd.concat([correct[a], correct[b]], axis=1, join="inner").to_numpy(dtype=bool)
        mc = mcnemar_exact(aligned[:, 0], aligned[:, 1])
        tt = paired_t_test(aligned[:, 0], aligned[:, 1])
        out.append(
            {
                "a": a,
                "b": b,
                "accuracy_difference": float(aligned[:, 0].mean() - aligned[:, 1].mean()),
                "mcnemar_a_only": mc.b,
                "mcnemar_b_only": mc.c,
                "mcnemar_p": mc.p_value,
                "paired_t": tt.statistic,
                "paired_t_p": tt.p_value,
            }
        )
    return out


def compute_metrics(run: str | Path, predictions: pd.DataFrame | None = None) -> dict[str, object]:
    """Every number of the run: per task and method, accuracy with a 95% interval, calibration, confusion,
    cross-validation accuracy over folds, and paired comparisons between methods."""
    run = Path(run)
    config, manifest, tasks = read_classify_run(run)
    predictions = collect_predictions(run) if predictions is None else predictions
    tasks_out: dict[str, object] = {}
    for task in tasks:
        part = predictions[predictions["task"] == task.name]
        methods = list(dict.fromkeys(part["method"]))
        per_method = {}
        y_true = part[part["method"] == methods[0]]["class"].map({c: i for i, c in enumerate(task.classes)}).to_numpy()
        for method in methods:
            metrics = _method_metrics(part[part["method"] == method], task)
            if method != XGBOOST:
                _, records = final_probabilities(run, task, method, config.final_model)
                val = [r["best_val_accuracy"] for r in records]
                fold_test = _fold_test_accuracies(run, task, method, y_true)
                metrics.update(
                    {
                        "folds": len(records),
                        # Each fold's best-epoch validation accuracy: optimistic, the same fold chose the epoch.
                        "cv_best_val_accuracy_mean": float(np.mean(val)),
                        "cv_best_val_accuracy_sd": float(np.std(val, ddof=1)) if len(val) > 1 else 0.0,
                        "fold_test_accuracy_mean": float(np.mean(fold_test)),
                        "fold_test_accuracy_sd": float(np.std(fold_test, ddof=1)) if len(fold_test) > 1 else 0.0,
                        "fold_test_accuracies": fold_test,
                        "epochs": [r["epochs"] for r in records],
                        "train_seconds": float(sum(r["seconds"] for r in records)),
                    }
                )
            per_method[method] = metrics
        tasks_out[task.name] = {
            "classes": list(task.classes),
            "n_test": int(len(part) / max(len(methods), 1)),
            "methods": per_method,
            "paired_tests": _comparisons(part, methods),
        }
    classes = list(manifest.sort_values("label")["class"].unique())
    return {
        "config": config.name,
        "final_model": config.final_model,
        "deviations": config.deviations,
        "classes": classes,
        "images": {
            "train": int((manifest["split"] == "train").sum()),
            "test": int((manifest["split"] == "test").sum()),
        },
        "tasks": tasks_out,
        # Only the paper's tasks on the paper's classes; empty for any other dataset.
        "paper_table_iv": {task.name: numbers for task in tasks
                           if (numbers := paper_numbers(task, classes)) is not None},
    }


def table_iv(metrics: dict[str, object]) -> pd.DataFrame:
    """Table IV: test accuracy (%) per task, ours beside the paper's where the task is one of the paper's."""
    rows = []
    papers: dict[str, dict[str, float]] = metrics["paper_table_iv"]  # type: ignore[assignment]
    for task_name, task in metrics["tasks"].items():  # type: ignore[union-attr]
        row: dict[str, object] = {"task": task_name, "n_test": task["n_test"]}
        if papers:  # the paper's columns exist only for a dataset of the paper's classes
            paper = papers.get(task_name, {})
            for column in PAPER_COLUMNS:
                row[f"paper {column}"] = paper.get(column, np.nan)
        for method, values in task["methods"].items():
            low, high = values["ci95"]
            row[method] = round(100 * values["accuracy"], 2)
            row[f"{method} 95% CI"] = f"{100 * low:.1f}–{100 * high:.1f}"
        rows.append(row)
    return pd.DataFrame(rows)


def write_results(run: str | Path) -> dict[str, object]:
    """Write predictions.csv, metrics.json, Table IV (CSV and markdown), confusion tables and figures."""
    from cytolens.classify.figures import write_figures

    run = Path(run)
    predictions = collect_predictions(run)
    write_text_atomic(run / "predictions.csv", predictions.to_csv(index=False))
    metrics = compute_metrics(run, predictions)
    write_text_atomic(run / "metrics.json", json.dumps(metrics, indent=2, default=_json_default) + "\n")
    table = table_iv(metrics)
    write_text_atomic(run / "table_iv.csv", table.to_csv(index=False))
    write_text_atomic(run / "table_iv.md", _markdown(table) + "\n")
    for task_name, task in metrics["tasks"].items():  # type: ignore[union-attr]
        for method, values in task["methods"].items():
            frame = pd.DataFrame(
                values["confusion_matrix"],
                index=[f"true {c}" for c in task["classes"]],
                columns=[f"predicted {c}" for c in task["classes"]],
            )
            name = f"{slug(task_name)}__{slug(method)}.csv"
            write_text_atomic(run / "confusion" / name, frame.to_csv())
    write_figures(run, metrics, predictions)
    return metrics


def reliability_table(part: pd.DataFrame, task: Task) -> pd.DataFrame:
    """Reliability curve of one method's test predictions in a task."""
    y_true = part["class"].map({c: i for i, c in enumerate(task.classes)}).to_numpy()
    proba = part[[f"p_{c}" for c in task.classes]].to_numpy(dtype=float)
    return reliability_curve(proba / proba.sum(axis=1, keepdims=True), y_true)


def _markdown(table: pd.DataFrame) -> str:
    columns = list(table.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in table.iterrows():
        cells = ["" if isinstance(v, float) and np.isnan(v) else (f"{v:.2f}" if isinstance(v, float) else str(v)) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _json_default(value: object) -> object:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
