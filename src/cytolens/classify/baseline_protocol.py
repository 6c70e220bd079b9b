"""The XGBoost baseline inside the protocol: hand-crafted features of the same images, the same test set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cytolens.core.atomic import atomic_path
from cytolens.classify.config import ClassifyConfig
from cytolens.data.tasks import Task
from cytolens.core.console import progress_bar


def baseline_folder(run: Path, task: Task) -> Path:
    """Where a task's XGBoost model and test probabilities live."""
    return run / "xgboost" / task.slug


def load_feature_table(paths: list[str], run: Path) -> pd.DataFrame:
    """Features of every image, computed once per run and cached in ``run/features.parquet``."""
    from cytolens.classify.features import FEATURES_VERSION, feature_table

    cache = run / "features.parquet"
    if cache.is_file():
        table = pd.read_parquet(cache)
        if table.attrs.get("features_version") == FEATURES_VERSION and set(paths) <= set(table.index):
            return table.loc[paths]
    with progress_bar("hand-crafted features", len(paths)) as advance:
        table = feature_table(paths, progress=advance)
    with atomic_path(cache) as tmp:
        table.to_parquet(tmp)
    return table


def run_xgboost_baseline(manifest: pd.DataFrame, tasks: list[Task], config: ClassifyConfig, run: Path) -> None:
    """Fit one XGBoost model per task on the training images and save its test-set probabilities.

    The model sees the training folds together (it has no early stopping to select on); the test set is
    the protocol's held-out set, so its numbers sit beside the CNN's in every table.
    """
    from cytolens.classify.baseline import fit_xgboost

    features = load_feature_table(manifest["path"].tolist(), run)
    for t, task in enumerate(tasks):
        folder = baseline_folder(run, task)
        if (folder / "test_proba.npy").is_file():
            continue
        in_task = manifest["class"].isin(task.classes).to_numpy()
        labels = manifest["class"].map({name: i for i, name in enumerate(task.classes)}).to_numpy()
        train = in_task & (manifest["split"] == "train").to_numpy()
        test = in_task & (manifest["split"] == "test").to_numpy()
        model = fit_xgboost(
            features[train], labels[train].astype(int), config=config.xgboost, seed=config.seed + t,
            num_classes=len(task.classes),
        )
        folder.mkdir(parents=True, exist_ok=True)
        model.save(folder / "model")
        with atomic_path(folder / "test_proba.npy") as tmp, tmp.open("wb") as handle:
            np.save(handle, model.predict_proba(features[test]).astype(np.float32))
