"""Figures of a classification run: learning curves, confusion matrices, reliability diagrams, accuracy with
intervals, and Grad-CAM maps of correctly and wrongly classified test cells."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cytolens.data.tasks import Task, slug
from cytolens.core.errors import CytolensError
from cytolens.report.evaluation_plots import (
    plot_accuracy_table,
    plot_confusion_matrix,
    plot_learning_curves,
    plot_reliability_diagram,
)
from cytolens.report.figures import new_figure, save_figure


def write_figures(run: Path, metrics: dict, predictions: pd.DataFrame) -> list[Path]:
    """Write every figure of a run into ``run/figures`` and return their paths."""
    from cytolens.classify.evaluate import read_classify_run, reliability_table

    config, manifest, tasks = read_classify_run(run)
    figures = run / "figures"
    written: list[Path] = []
    bars = []
    for task in tasks:
        task_metrics = metrics["tasks"][task.name]
        part = predictions[predictions["task"] == task.name]
        for method, values in task_metrics["methods"].items():
            written.append(
                plot_confusion_matrix(
                    np.asarray(values["confusion_matrix"]),
                    list(task.classes),
                    figures / "confusion" / f"{slug(task.name)}__{slug(method)}.png",
                    title=f"{task.name} · {method} (test, n={values['n']})",
                )
            )
            written.append(
                plot_reliability_diagram(
                    reliability_table(part[part["method"] == method], task),
                    figures / "reliability" / f"{slug(task.name)}__{slug(method)}.png",
                    ece=values["ece"],
                    title=f"{task.name} · {method}",
                )
            )
            low, high = values["ci95"]
            bars.append({"task": task.name, "method": method, "accuracy": values["accuracy"], "ci_low": low, "ci_high": high})
        for variant in config.variants:
            history = _history(run, task, variant)
            if len(history):
                written.append(
                    plot_learning_curves(
                        history,
                        figures / "learning_curves" / f"{slug(task.name)}__{slug(variant)}.png",
                        title=f"{task.name} · {variant}",
                    )
                )
    written.append(plot_accuracy_table(pd.DataFrame(bars), figures / "accuracy.png", title="Test accuracy, 95% Wilson intervals"))
    if config.gradcam_examples:
        for task in tasks:
            path = gradcam_figure(run, task, predictions, n_examples=config.gradcam_examples)
            if path is not None:
                written.append(path)
    return written


def _history(run: Path, task: Task, variant: str) -> pd.DataFrame:
    from cytolens.classify.training import VARIANT_SLUGS

    files = sorted((run / "units" / task.slug / VARIANT_SLUGS[variant]).glob("fold*/history.csv"))
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def gradcam_figure(run: Path, task: Task, predictions: pd.DataFrame, *, n_examples: int) -> Path | None:
    """Grad-CAM maps of the final variant's best fold model on correct and wrong test cells (by the run's
    predictions), each explaining the predicted class.

    Returns None when the run kept no checkpoint for the task (e.g. the variant was not trained).
    """
    import torch

    from cytolens.classify.data import load_inputs
    from cytolens.classify.gradcam import grad_cam
    from cytolens.classify.predict import load_fold_models
    from cytolens.classify.evaluate import read_classify_run

    config, _, _ = read_classify_run(run)
    variant = config.predict_variant
    try:
        models = load_fold_models(run, task, variant, which="best")
    except CytolensError:  # the run kept no checkpoint for this task: nothing to explain
        return None
    model = models[0]
    part = predictions[(predictions["task"] == task.name) & (predictions["method"] == variant)]
    rng = np.random.default_rng(config.seed)
    picks = []
    for correct in (True, False):
        rows = part[part["correct"] == correct]
        if len(rows):
            take = rng.choice(len(rows), size=min(n_examples, len(rows)), replace=False)
            picks.append(rows.iloc[np.sort(take)])
    if not picks:
        return None
    chosen = pd.concat(picks)
    inputs = load_inputs(chosen["path"].tolist(), config, sharpened=variant.endswith("+S"))
    raw = load_inputs(chosen["path"].tolist(), config, sharpened=False)
    # Explain the class the run predicted (the ensemble's), so each map matches its panel's label.
    maps = grad_cam(model, torch.from_numpy(inputs), target=[task.classes.index(p) for p in chosen["predicted"]])
    columns = len(chosen)
    fig, axes = new_figure(2, columns, figsize=(1.9 * columns, 4.2), squeeze=False, constrained_layout=True)
    for i, (_, row) in enumerate(chosen.iterrows()):
        axes[0, i].imshow(raw[i, 0], cmap="gray", vmin=0, vmax=1)
        axes[1, i].imshow(raw[i, 0], cmap="gray", vmin=0, vmax=1)
        axes[1, i].imshow(maps[i], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        mark = "✓" if row["correct"] else "✗"
        axes[0, i].set_title(f"{mark} true {row['class']}\npred {row['predicted']}", fontsize=7)
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(
        f"Grad-CAM of the best fold model for the predicted class · {task.name} · {variant} "
        f"(layer {getattr(model, 'gradcam_layer', '?')})",
        fontsize=9,
    )
    out = run / "figures" / "gradcam" / f"{slug(task.name)}.png"
    save_figure(fig, out, dpi=110)
    return out

