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

Each (task, variant, fold) is a unit: independent of every other, trained start to end by one rank (the units
are dealt round-robin over the ranks in a fixed order, so ``--devices 2`` gives each unit exactly the numbers of
one process with the same ``num_threads``). A unit's outputs are written atomically with its ``done.json`` last;
an interrupted unit resumes mid-epoch from ``units/<task>/<variant>/fold<k>/resume.pt``, and a rerun skips the
units that are done. Rank 0 alone writes the run folder's own files, the XGBoost baseline and the results.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cytolens.core.atomic import atomic_path, write_text_atomic
from cytolens.classify.config import ClassifyConfig
from cytolens.classify.data import add_rotations, load_inputs
from cytolens.data.tasks import Task, build_tasks
from cytolens.classify.models import create_model
from cytolens.classify.fit import fit_classifier, predict_proba
from cytolens.core.console import console, progress_bar, warning_line
from cytolens.data.datacheck import check_dataset
from cytolens.engine import (
    EngineOptions,
    RunFolder,
    Runtime,
    configure_threads,
    data_fingerprint,
    derive_seed,
    launch,
    save_checkpoint,
)
from cytolens.core.errors import CytolensError, OptionError, display_path
from cytolens.data.layouts import write_manifest
from cytolens.data.splits import grouped_stratified_kfold, holdout_per_class

__all__ = ["RUN_KIND", "VARIANT_SLUGS", "Unit", "checkpoint_path", "plan_units", "prepare_manifest", "run_protocol"]

#: The kind recorded in a classification run folder's ``run.json``.
RUN_KIND = "classify"
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


def prepare_manifest(data: str | Path, config: ClassifyConfig, *,
                     classes: Sequence[str] | None = None) -> tuple[pd.DataFrame, tuple[str, ...], dict]:
    """Check the dataset and assign every image its split (train/test) and training fold.

    Parameters
    ----------
    data : str or Path
        A class-folder dataset.
    config : ClassifyConfig
        Its ``classes`` order applies when the dataset's class folders are exactly those classes.
    classes : sequence of str, optional
        Classes chosen by the user (``--classes``), in label order; other folders are ignored.

    Returns
    -------
    manifest : pandas.DataFrame
        Columns ``path, class, label, group, split, fold``; test images have fold −1.
    classes : tuple of str
        The classes used, in label order.
    summary : dict
        The data check summary.

    Raises
    ------
    CytolensError
        If some images cannot be read (the first is named) or a class is too small for the protocol.
    """
    check = check_dataset(data, classes=classes, preferred_classes=config.classes, group_pattern=config.group_pattern)
    if not check.ok:
        path, problem = check.problems[0]
        raise CytolensError(
            f"{len(check.problems)} unreadable image(s), first {path}: {problem}; fix or remove them "
            f"('cytolens data check {data}' lists them all)",
            path=data,
        )
    if len(check.dataset.classes) < 2:
        raise CytolensError(f"only one class ({check.dataset.classes[0]!r}); classification needs at least two",
                            path=data)
    for path, message in check.warnings:  # the same wording as 'cytolens data check'
        warning_line(f"{display_path(path)}: {message}")
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


def manifest_fingerprint(manifest: pd.DataFrame) -> str:
    """The data a run stands on: every image's bytes and where it went (path, class, split, fold)."""
    table = manifest[["path", "class", "split", "fold"]].to_csv(index=False)
    return data_fingerprint(manifest["path"].tolist(), table)


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
                units.append(Unit(task, variant, fold, derive_seed(config.seed, t, v, fold)))
    return units


def run_protocol(data: str | Path, config: ClassifyConfig, out: str | Path,
                 options: EngineOptions = EngineOptions(), *, classes: Sequence[str] | None = None) -> Path:
    """Run the whole protocol and write the run folder (see the module docstring).

    Parameters
    ----------
    data : str or Path
        A class-folder dataset (optionally with train/ and test/).
    config : ClassifyConfig
        Every setting; stored as ``out/config.yaml``.
    out : str or Path
        The run folder; an interrupted run with the same config, data and precision resumes.
    options : EngineOptions
        Processes, devices and precision (``precision=None`` defers to the config's ``precision``).
    classes : sequence of str, optional
        The classes to use, in label order (other class folders are ignored). By default the dataset's own class
        folders in natural order, or the config's ``classes`` order when the folders are exactly those.

    Returns
    -------
    Path
        The run folder.
    """
    if options.precision is None:
        options = dataclasses.replace(options, precision=config.precision)
    launch(_protocol_on_rank, options, str(data), config, str(out), None if classes is None else list(classes))
    return Path(out)


def _protocol_on_rank(runtime: Runtime, data: str, config: ClassifyConfig, out_text: str,
                      classes: list[str] | None) -> None:
    """Every rank: take its share of the units, train them alone; rank 0 then writes the baseline and results."""
    from cytolens.classify.evaluate import write_results

    out = Path(out_text)
    configure_threads(config.num_threads, local_processes=runtime.local_processes)
    # Rank 0 checks the data and writes the run folder; a refusal must reach every rank, or the others would
    # wait for it forever.
    prepared: tuple[pd.DataFrame, tuple[str, ...]] | str | None = None
    if runtime.is_main:
        try:
            prepared = _start_run(data, config, out, runtime, classes)
        except CytolensError as exc:
            prepared = str(exc)
            runtime.broadcast(prepared)
            raise
    prepared = runtime.broadcast(prepared)
    if isinstance(prepared, str):
        raise CytolensError(prepared)
    manifest, classes = prepared
    tasks = build_tasks(classes, config.tasks)
    units = plan_units(tasks, config)
    # Round-robin in the plan's fixed order: a rerun with the same world size gives each rank the same units.
    mine = [u for u in units[runtime.rank::runtime.world_size] if not (u.folder(out) / "done.json").is_file()]

    started = time.perf_counter()
    failed: CytolensError | None = None
    finished = True
    if mine:
        inputs = _load_inputs(manifest, config, sharpened={u.variant.endswith("+S") for u in mine})
        local = runtime.local()
        with progress_bar(f"training (rank {runtime.rank})" if runtime.world_size > 1 else "training",
                          len(mine)) as advance:
            for unit in mine:
                left = None if config.max_minutes is None else config.max_minutes - (
                    time.perf_counter() - started) / 60
                if left is not None and left <= 0:
                    finished = False
                    break
                try:
                    finished = _train_unit(local, unit, manifest, inputs, config, out, max_minutes=left)
                except CytolensError as exc:
                    failed = exc
                    break
                if not finished:
                    break
                advance(1)
    # One collective instead of a barrier: every rank learns whether another failed or ran out of time.
    problems = runtime.all_reduce_sum(np.array([failed is not None, not finished], dtype=np.float64))
    if failed is not None:
        if not runtime.is_main:  # only rank 0's error reaches the caller: say this one here
            console.print(f"rank {runtime.rank}: {failed}", markup=False)
        raise failed
    if problems[0]:
        raise CytolensError("training failed on another rank (its message is above)", path=out)
    if problems[1]:
        if runtime.is_main:
            console.print(f"time budget of {config.max_minutes} min reached; rerun the same command to continue",
                          markup=False)
        return
    if not runtime.is_main:
        return
    if config.xgboost.enabled:
        from cytolens.classify.baseline_protocol import run_xgboost_baseline

        run_xgboost_baseline(manifest, tasks, config, out)
    metrics = write_results(out)
    RunFolder(out, RUN_KIND).finish({"units": len(units), "tasks": list(metrics["tasks"])})  # type: ignore[arg-type]


def _start_run(data: str, config: ClassifyConfig, out: Path, runtime: Runtime,
               classes: list[str] | None) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Rank 0: refuse another run's folder early, check and split the data, then write the run folder."""
    folder = RunFolder(out, RUN_KIND)
    folder.check_resumable(config, precision=runtime.precision)  # before reading every image
    manifest, used, summary = prepare_manifest(data, config, classes=classes)
    tasks = build_tasks(used, config.tasks)
    _check_units_have_images(manifest, tasks, config)
    folder.start(config, data_fingerprint=manifest_fingerprint(manifest), runtime=runtime.describe(),
                 extra={"data": str(data), "images": int(len(manifest)),
                        "units": len(tasks) * len(config.variants) * config.folds})
    write_manifest(manifest, out / "manifest.parquet")
    write_text_atomic(out / "data_check.json", json.dumps(summary, indent=2) + "\n")
    return manifest, used


def _check_units_have_images(manifest: pd.DataFrame, tasks: list[Task], config: ClassifyConfig) -> None:
    """Every unit needs training and validation images: said once, before any rank trains."""
    train = manifest["split"] == "train"
    for task in tasks:
        in_task = manifest["class"].isin(task.classes) & train
        for fold in range(config.folds):
            n_val = int((in_task & (manifest["fold"] == fold)).sum())
            n_train = int((in_task & (manifest["fold"] != fold)).sum())
            if not n_val or not n_train:
                raise OptionError(
                    f"task {task.name!r}, fold {fold} has {n_train} training and {n_val} validation images; "
                    "use fewer folds"
                )


def _load_inputs(manifest: pd.DataFrame, config: ClassifyConfig, *, sharpened: set[bool]) -> dict[bool, np.ndarray]:
    """Every image preprocessed, plain and/or sharpened (what this rank's units need)."""
    paths = manifest["path"].tolist()
    with progress_bar("loading images", len(paths) * len(sharpened)) as advance:
        return {s: load_inputs(paths, config, sharpened=s, progress=advance) for s in sorted(sharpened)}


def _train_unit(runtime: Runtime, unit: Unit, manifest: pd.DataFrame, inputs: dict[bool, np.ndarray],
                config: ClassifyConfig, out: Path, *, max_minutes: float | None) -> bool:
    """Train one unit and write its outputs, ``done.json`` last; False if the time budget stopped it first."""
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
    folder = unit.folder(out)
    folder.mkdir(parents=True, exist_ok=True)
    model = _new_model(config, len(task.classes), unit.seed)
    fit = fit_classifier(
        runtime, model, train_x, train_y, x[val], labels[val].astype(np.int64), training=config.training,
        seed=unit.seed, checkpoint=folder / "resume.pt", checkpoint_every=config.checkpoint_every,
        max_minutes=max_minutes, label=f"{task.name} · {unit.variant} · fold {unit.fold}",
    )
    if fit.result.stopped == "max_minutes":
        return False  # resume.pt holds the unit; the next session continues it
    history = fit.history.assign(task=task.name, variant=unit.variant, fold=unit.fold)
    write_text_atomic(folder / "history.csv", history.to_csv(index=False))
    _save_array(folder / "val_proba.npy", predict_proba(fit.model, x[val], runtime=runtime))
    _save_array(folder / "test_proba.npy", predict_proba(fit.model, x[test], tta=config.tta, runtime=runtime))
    if unit.variant == config.predict_variant:
        weights = {k: v.detach().cpu() for k, v in fit.model.state_dict().items()}
        save_checkpoint(weights, checkpoint_path(out, task, unit.variant, unit.fold))
    done = {
        "task": task.name,
        "variant": unit.variant,
        "fold": unit.fold,
        "seed": unit.seed,
        "best_epoch": fit.best_epoch,
        "epochs": int(len(fit.history)),
        "stopped": fit.result.stopped,
        "best_val_accuracy": fit.best_val_accuracy,
        "train_images": int(len(train_x)),
        "val_images": int(val.sum()),
        "resumed_from_step": fit.result.resumed_from,
        "samples_per_s": fit.result.samples_per_s,
        "precision": runtime.precision,
        "seconds": round(time.perf_counter() - started, 2),
    }
    # done.json is written last: its presence means every other output of the unit is complete.
    write_text_atomic(folder / "done.json", json.dumps(done, indent=2) + "\n")
    (folder / "resume.pt").unlink(missing_ok=True)
    console.print(
        f"{task.name} · {unit.variant} · fold {unit.fold}: val accuracy {fit.best_val_accuracy:.3f} "
        f"(epoch {fit.best_epoch}/{len(fit.history)}, {done['seconds']:.0f}s)",
        markup=False,
    )
    return True


def _new_model(config: ClassifyConfig, num_classes: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)  # the initial weights of a unit depend on its seed only
    return create_model(
        config.model, num_classes=num_classes, in_chans=1, input_size=config.input_size, **config.model_options
    )


def _save_array(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.save(handle, array)
