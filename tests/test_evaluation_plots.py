"""Tests for cytolens.report.evaluation_plots: each figure is a non-empty PNG and no temp file is left behind."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from cytolens.core.errors import OptionError
from cytolens.report.evaluation_plots import (
    plot_accuracy_table,
    plot_confusion_matrix,
    plot_learning_curves,
    plot_reliability_diagram,
)
from cytolens.evaluation.calibration import expected_calibration_error, reliability_curve

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_single_png(path: Path, folder: Path) -> None:
    assert path.exists() and path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 1000
    assert sorted(p.name for p in folder.iterdir()) == [path.name]  # no leftover temp files
    assert plt.get_fignums() == []  # the figure was closed


def history_table(epochs_per_fold: list[int]) -> pd.DataFrame:
    rows = []
    for fold, epochs in enumerate(epochs_per_fold):
        for epoch in range(1, epochs + 1):
            rows.append(
                {
                    "fold": fold,
                    "epoch": epoch,
                    "train_loss": 1.0 / epoch + 0.01 * fold,
                    "val_loss": 1.2 / epoch + 0.05,
                    "train_accuracy": 1 - 0.5 / epoch,
                    "val_accuracy": 0.9 - 0.5 / epoch,
                }
            )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("normalize", [False, True])
def test_confusion_matrix_plot(tmp_path, normalize):
    matrix = np.array([[84, 16, 0], [6, 58, 36], [3, 53, 44]])
    path = plot_confusion_matrix(matrix, ["0", "0.1", "1"], tmp_path / "cm.png", title="3 classes", normalize=normalize)
    assert path == tmp_path / "cm.png"
    assert_single_png(path, tmp_path)


def test_confusion_matrix_plot_empty_row_and_bad_shape(tmp_path):
    path = plot_confusion_matrix([[3, 1], [0, 0]], ["a", "b"], tmp_path / "cm.png", normalize=True)
    assert_single_png(path, tmp_path)
    with pytest.raises(OptionError, match="square"):
        plot_confusion_matrix([[1, 2]], ["a"], tmp_path / "bad.png")


@pytest.mark.parametrize("with_ece", [False, True])
def test_reliability_diagram(tmp_path, with_ece):
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet([1, 1, 1], 200)
    y_true = rng.integers(0, 3, 200)
    curve = reliability_curve(probabilities, y_true, n_bins=10)
    ece = expected_calibration_error(probabilities, y_true, n_bins=10) if with_ece else None
    path = plot_reliability_diagram(curve, tmp_path / "out" / "reliability.png", ece=ece, title="calibration")
    assert_single_png(path, tmp_path / "out")


@pytest.mark.parametrize("epochs", [[5], [8, 5, 6], [1]])
def test_learning_curves_single_fold_and_early_stopping(tmp_path, epochs):
    path = plot_learning_curves(history_table(epochs), tmp_path / "curves.png", title="training")
    assert_single_png(path, tmp_path)


def test_learning_curves_missing_column(tmp_path):
    with pytest.raises(OptionError, match="val_accuracy"):
        plot_learning_curves(history_table([3]).drop(columns="val_accuracy"), tmp_path / "curves.png")
    assert list(tmp_path.iterdir()) == []


def test_accuracy_table(tmp_path):
    table = pd.DataFrame(
        {
            "task": ["3 classes", "3 classes", "0.1 vs 1", "0.1 vs 1"],
            "method": ["best expert", "CNN+T+S", "best expert", "CNN+T+S"],
            "accuracy": [0.6267, 0.66, 0.52, 0.705],
            "ci_low": [0.57, 0.60, 0.45, 0.64],
            "ci_high": [0.68, 0.71, 0.59, 0.76],
        }
    )
    path = plot_accuracy_table(table, tmp_path / "accuracy.png", title="Table IV")
    assert_single_png(path, tmp_path)
    bad = table.assign(ci_low=0.9)
    with pytest.raises(OptionError, match="ci_low"):
        plot_accuracy_table(bad, tmp_path / "bad.png")
