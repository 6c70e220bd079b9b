"""The Shpilman et al. 2017 protocol on any class-folder dataset: ``cytolens classify train``.

1. The test set is held out first (``DATA/test/`` if present, else ``test_per_class`` images per class) and is
   never seen in training or model selection.
2. The training set is split once into grouped, stratified folds (every copy of an image stays in its fold).
3. For every task (all classes, and each pair of classes) and every variant (CNN, CNN+T with rotated copies
   added to the training folds only, CNN+T+S with sharpening on training and test images), one network is
   trained per fold with the paper's stopping rule (validation accuracy, patience 2).
4. The final model of a task and variant is the ensemble of its fold models (their mean probability), or the
   fold with the best validation accuracy when ``final_model: best_fold``.
5. The XGBoost baseline is trained on hand-crafted features of the same training images and evaluated on the
   same test set.

Each (task, variant, fold) is a unit whose outputs are written atomically with a ``done.json`` last, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cytolens.atomic import atomic_path, write_text_atomic
from cytolens.classify.config import ClassifyConfig
from cytolens.classify.data import Task, add_rotations, build_tasks, load_inputs
from cytolens.classify.models import create_model
from cytolens.classify.trainer import fit_classifier, predict_proba
from cytolens.config import save_config
from cytolens.console import console, progress_bar
from cytolens.datacheck import check_dataset
from cytolens.errors import CytolensError
from cytolens.layouts import write_manifest
from cytolens.run_folder import check_same_config, check_same_data
from cytolens.splits import grouped_stratified_kfold, holdout_per_class
from cytolens.training import configure_threads, save_checkpoint

VARIANT_SLUGS = {"CNN": "cnn", "CNN+T": "cnn_t", "CNN+T+S": "cnn_t_s"}


@dataclass
class Unit:
    """One network to train: a task, a variant and a fold."""

    task: Task
    variant: str
    fold: int
    seed: int

    def folder(self, run: Path) -> Path:
        """Where the unit's outputs live."""
        return run / "units" / self.task.slug / VARIANT_SLUGS[self.variant] / f"fold{self.fold}"


def checkpoint_path(run: Path, task: Task, variant: str, fold: int) -> Path:
    """Path of a fold model's weights."""
    return run / "checkpoints" / task.slug / VARIANT_SLUGS[variant] / f"fold{fold}.pt"


def prepare_manifest(data: str | Path, config: ClassifyConfig) -> tuple[pd.DataFrame, tuple[str, ...], dict]:
    """Check the dataset and assign every image its split (train/test) and training fold.

    Returns
    -------
    manifest : pandas.DataFrame
        Columns ``path, class, label, group, split, fold``; test images have fold −1.
    classes : tuple of str
    summary : dict
        The data check summary.

    Raises
    ------
    CytolensError
        If some images cannot be read (the first is named) or a class is too small for the protocol.
    """
    check = check_dataset(data, classes=config.classes, group_pattern=config.group_pattern)
    if not check.ok:
        path, problem = check.problems[0]
        raise CytolensError(
            f"{len(check.problems)} unreadable image(s), first {path}: {problem}; fix or remove them "
            f"('cytolens data check {data}' lists them all)",
            path=data,
        )
    samples = check.dataset.samples.copy()
    fixed_test = (samples["split"] == "test").to_numpy()
    if fixed_test.any():
        _check_fixed_test_set(samples, Path(data))
        is_test = fixed_test
    else:  # class folders, or DATA/train/ without DATA/test/: hold out test_per_class per class first
        is_test = holdout_per_class(
            samples["class"].to_numpy(), config.test_per_class, groups=samples["group"].to_numpy(), seed=config.seed
        )
    samples["split"] = np.where(is_test, "test", "train")
    if config.max_train_per_class is not None:
        samples = _subsample_training(samples, config.max_train_per_class, config.seed)
    train = samples["split"] == "train"
    samples["fold"] = -1
    samples.loc[train, "fold"] = grouped_stratified_kfold(
        samples.loc[train, "class"].to_numpy(), samples.loc[train, "group"].to_numpy(), n_splits=config.folds,
        seed=config.seed,
    )
    return samples.reset_index(drop=True), check.dataset.classes, check.summary()


def _check_fixed_test_set(samples: pd.DataFrame, data: Path) -> None:
    """A DATA/test/ folder must cover every class and share no group with DATA/train/."""
    tested = set(samples.loc[samples["split"] == "test", "class"])
    missing = [name for name in samples["class"].unique() if name not in tested]
    if missing:
        raise CytolensError(f"class {missing[0]!r} has no images in test/; every class needs test images", path=data)
    leaking = samples.groupby("group")["split"].nunique()
    leaking = leaking[leaking > 1]
    if len(leaking):
        raise CytolensError(
            f"group {leaking.index[0]!r} has images in both train/ and test/; a group must stay on one side",
            path=data,
        )


def data_fingerprint(manifest: pd.DataFrame) -> str:
    """A hash of which image is where (path, class, split, fold): a run resumes only on the same split."""
    import hashlib

    text = manifest[["path", "class", "split", "fold"]].to_csv(index=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _subsample_training(samples: pd.DataFrame, per_class: int, seed: int) -> pd.DataFrame:
    """Keep at most ``per_class`` training groups per class (reduced configs); test images are untouched."""
    rng = np.random.default_rng(seed)
    keep = samples["split"] == "test"
    for _, part in samples[samples["split"] == "train"].groupby("class"):
        groups = part["group"].unique()
        chosen = set(rng.permutation(groups)[:per_class])
        keep |= samples.index.isin(part.index[part["group"].isin(chosen)])
    return samples[keep]


def plan_units(tasks: list[Task], config: ClassifyConfig) -> list[Unit]:
    """Every (task, variant, fold), each with its own seed derived from the run seed."""
    units = []
    for t, task in enumerate(tasks):
        for v, variant in enumerate(config.variants):
            for fold in range(config.folds):
                seed = int(np.random.SeedSequence([config.seed, t, v, fold]).generate_state(1)[0])
                units.append(Unit(task, variant, fold, seed))
    return units


def run_protocol(data: str | Path, config: ClassifyConfig, out: str | Path) -> Path:
    """Run the whole protocol and write the run folder (see the module docstring).

    Parameters
    ----------
    data : str or Path
        A class-folder dataset (optionally with train/ and test/).
    config : ClassifyConfig
        Every setting; stored as ``out/config.yaml``.
    out : str or Path
        The run folder; an interrupted run with the same config resumes.

    Returns
    -------
    Path
        The run folder.
    """
    from cytolens.classify.results import write_results

    out = Path(out)
    check_same_config(out, config)
    out.mkdir(parents=True, exist_ok=True)
    configure_threads(config.training.num_threads)
    save_config(config, out / "config.yaml")
    manifest, classes, summary = prepare_manifest(data, config)
    check_same_data(out, data_fingerprint(manifest))
    write_manifest(manifest, out / "manifest.parquet")
    write_text_atomic(out / "data_check.json", json.dumps(summary, indent=2) + "\n")
    tasks = build_tasks(classes, config.tasks)

    paths = manifest["path"].tolist()
    sharpened_needed = any(v.endswith("+S") for v in config.variants)
    with progress_bar("loading images", len(paths) * (1 + sharpened_needed)) as advance:
        inputs = {False: load_inputs(paths, config, sharpened=False, progress=advance)}
        if sharpened_needed:
            inputs[True] = load_inputs(paths, config, sharpened=True, progress=advance)

    units = plan_units(tasks, config)
    with progress_bar("training", len(units)) as advance:
        for unit in units:
            if not (unit.folder(out) / "done.json").is_file():
                _train_unit(unit, manifest, inputs, config, out)
            advance(1)
    if config.xgboost.enabled:
        from cytolens.classify.baseline_protocol import run_xgboost_baseline

        run_xgboost_baseline(manifest, tasks, config, out)
    write_results(out)
    return out


def _train_unit(
    unit: Unit, manifest: pd.DataFrame, inputs: dict[bool, np.ndarray], config: ClassifyConfig, out: Path
) -> None:
    started = time.perf_counter()
    task = unit.task
    in_task = manifest["class"].isin(task.classes).to_numpy()
    label_of = {name: i for i, name in enumerate(task.classes)}
    labels = manifest["class"].map(label_of).to_numpy()
    train = in_task & (manifest["split"] == "train").to_numpy() & (manifest["fold"] != unit.fold).to_numpy()
    val = in_task & (manifest["fold"] == unit.fold).to_numpy()
    test = in_task & (manifest["split"] == "test").to_numpy()
    x = inputs[unit.variant.endswith("+S")]
    train_x, train_y = x[train], labels[train].astype(np.int64)
    if "+T" in unit.variant:
        # Rotated copies join the training folds only; validation and test keep the originals.
        train_x, train_y, _ = add_rotations(train_x, train_y, config.rotations)
    model = _new_model(config, len(task.classes), unit.seed)
    result = fit_classifier(
        model, train_x, train_y, x[val], labels[val].astype(np.int64), training=config.training, seed=unit.seed
    )
    folder = unit.folder(out)
    folder.mkdir(parents=True, exist_ok=True)
    history = result.history.assign(task=task.name, variant=unit.variant, fold=unit.fold)
    write_text_atomic(folder / "history.csv", history.to_csv(index=False))
    _save_array(folder / "val_proba.npy", predict_proba(result.model, x[val]))
    _save_array(folder / "test_proba.npy", predict_proba(result.model, x[test], tta=config.tta))
    if unit.variant == config.predict_variant:
        save_checkpoint(result.model.state_dict(), checkpoint_path(out, task, unit.variant, unit.fold))
    done = {
        "task": task.name,
        "variant": unit.variant,
        "fold": unit.fold,
        "seed": unit.seed,
        "best_epoch": result.best_epoch,
        "epochs": int(len(result.history)),
        "best_val_accuracy": result.best_val_accuracy,
        "train_images": int(len(train_x)),
        "val_images": int(val.sum()),
        "seconds": round(time.perf_counter() - started, 2),
    }
    # done.json is written last: its presence means every other output of the unit is complete.
    write_text_atomic(folder / "done.json", json.dumps(done, indent=2) + "\n")
    console.print(
        f"{task.name} · {unit.variant} · fold {unit.fold}: val accuracy {result.best_val_accuracy:.3f} "
        f"(epoch {result.best_epoch}/{len(result.history)}, {done['seconds']:.0f}s)",
        markup=False,
    )


def _new_model(config: ClassifyConfig, num_classes: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)  # the initial weights of a unit depend on its seed only
    return create_model(
        config.model, num_classes=num_classes, in_chans=1, input_size=config.input_size, **config.model_options
    )


def _save_array(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.save(handle, array)
