"""The MIDL 2019 training protocol on any image/label-pair dataset: ``cytolens segment train``.

1. The pairs are checked (:func:`cytolens.data.datacheck.check_label_pairs`); an unusable pair or an image smaller
   than a patch stops the run with one line naming the file.
2. Every image is assigned to one of ``folds`` validation folds (image-level K-fold: all patches of an image
   stay on one side, and every image is in exactly one validation fold).
3. For each fold in ``train_folds`` a network is trained on class-balanced random patches of the other folds'
   images, with the paper's augmentations, Adam (lr halved every ``lr_halving_epochs``), cross-entropy plus the
   Keras-style L2 penalty. Every ``validate_every`` epochs it predicts the fold's *whole* validation images in
   blended tiles; the checkpoint with the best validation mean dice is kept.
4. A fold's outputs are ``folds/fold<k>/history.csv``, ``checkpoints/fold<k>.pt`` and ``folds/fold<k>/done.json``,
   written last; a rerun with the same config and data skips finished folds and continues an unfinished one from
   ``folds/fold<k>/resume.pt`` (inside an epoch), which is deleted once the fold is done.

Training runs on :mod:`cytolens.engine`: folds one after another, each with DDP over every rank
(``--devices``); every global batch of patch indices is split over the ranks and the validation images are
sharded, their sums and confusion matrices all-reduced. Rank 0 alone writes the run folder (``run.json``,
``config.yaml``, ``manifest.parquet``, ``data_check.json``, folds, ``done.json`` last).

The validation confusion matrix of the best epoch is stored in ``done.json``: pooled over folds it gives the
cross-validated dice of Table 1 without predicting again (:mod:`cytolens.segment.evaluate`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from cytolens.core.atomic import write_text_atomic
from cytolens.core.console import console
from cytolens.data.datacheck import check_label_pairs
from cytolens.engine.optimizers import create_optimizer
from cytolens.engine import (
    EngineOptions, FitLoop, LoopSettings, Position, RunFolder, Runtime, TrainTask, configure_threads,
    data_fingerprint, derive_seed, file_sha1, launch, save_checkpoint,
)
from cytolens.core.errors import CytolensError, OptionError
from cytolens.data.io import normalize_intensity, read_image
from cytolens.data.layouts import write_manifest
from cytolens.segment.config import SegmentConfig
from cytolens.segment.inference import predict_tiled
from cytolens.segment.metrics import pixel_confusion, scores_from_confusion
from cytolens.segment.models import SegmentationModel, create_model
from cytolens.segment.sampling import PatchDataset, Prefetcher, collate_patches
from cytolens.data.splits import grouped_stratified_kfold

__all__ = ["SegmentTask", "checkpoint_path", "fold_folder", "prepare_manifest", "read_input", "resume_path",
           "run_training", "train_fold"]

MANIFEST_REQUIRED = ("path", "group", "split")


def fold_folder(run: Path, fold: int) -> Path:
    """Where fold ``fold``'s history and ``done.json`` live."""
    return Path(run) / "folds" / f"fold{fold}"


def checkpoint_path(run: Path, fold: int) -> Path:
    """The best-validation weights of fold ``fold``."""
    return Path(run) / "checkpoints" / f"fold{fold}.pt"


def resume_path(run: Path, fold: int) -> Path:
    """The fit loop's resume checkpoint of fold ``fold`` (deleted once the fold is done)."""
    return fold_folder(run, fold) / "resume.pt"


def read_input(path: str | Path, config: SegmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """Read an image and turn it into network input as the run's config says.

    Returns
    -------
    raw : (H, W[, C]) ndarray
        The image as stored (for overlays).
    normalised : (H, W) or (H, W, C) ndarray of float32
        Scaled to [0, 1] by ``config.intensity`` (per image, so exposure differences between fields vanish).

    Raises
    ------
    CytolensError
        If the file cannot be read or its channels do not match ``config.in_chans``.
    """
    raw = read_image(path, grayscale=config.in_chans == 1)
    channels = 1 if raw.ndim == 2 else raw.shape[2]
    if channels != config.in_chans:
        raise CytolensError(f"has {channels} channel(s); the run expects in_chans={config.in_chans}", path=path)
    intensity = config.intensity
    normalised = normalize_intensity(
        raw, method=intensity.method, bit_depth=intensity.bit_depth, percentiles=tuple(intensity.percentiles)
    )
    return raw, normalised


def read_labels(path: str | Path) -> np.ndarray:
    """A label image as ``(H, W)`` uint8 (uint16 beyond 255 classes), values checked by the data check."""
    labels = read_image(path)
    return labels.astype(np.uint8 if labels.max(initial=0) <= 255 else np.uint16, copy=False)


def prepare_manifest(data: str | Path, config: SegmentConfig) -> tuple[pd.DataFrame, dict]:
    """Check the pairs and assign every image its validation fold.

    Returns
    -------
    manifest : pandas.DataFrame
        One row per image: ``path, label_path, stem, group, split ("train"), fold, image_sha1``.
    summary : dict
        The data check summary.

    Raises
    ------
    CytolensError
        If a pair is unusable (the first is named), an image is smaller than a patch, or there are fewer
        images than folds.
    """
    check = check_label_pairs(data, classes=config.classes)
    if not check.ok:
        path, problem = check.problems[0]
        raise CytolensError(
            f"{len(check.problems)} unusable image/label pair(s), first {path}: {problem} "
            f"('cytolens data check {data}' lists them all)",
            path=data,
        )
    samples = check.dataset.samples.copy()
    files = check.files.set_index("stem").loc[samples["stem"]]
    small = files[(files["height"] < config.patch_size) | (files["width"] < config.patch_size)]
    if len(small):
        stem = small.index[0]
        raise CytolensError(
            f"is {small.loc[stem, 'height']}×{small.loc[stem, 'width']} pixels, smaller than the "
            f"{config.patch_size}×{config.patch_size} training patch; lower patch_size or remove the image",
            path=samples.loc[samples["stem"] == stem, "path"].iloc[0],
        )
    if len(samples) < config.folds:
        raise CytolensError(f"{len(samples)} images cannot fill {config.folds} folds; use fewer folds", path=data)
    # One pseudo-class: grouped K-fold by image (each image its own group), shuffled by the run's seed.
    samples["fold"] = grouped_stratified_kfold(
        np.zeros(len(samples), dtype=int), samples["group"].to_numpy(), n_splits=config.folds, seed=config.seed
    )
    samples["split"] = "train"
    # Evaluation recognises training images by content, not by name.
    samples["image_sha1"] = [file_sha1(p) for p in samples["path"]]
    return samples.reset_index(drop=True), check.summary()


def manifest_fingerprint(manifest: pd.DataFrame) -> str:
    """A hash of the images and labels (by content) and of which image is in which fold: a run resumes only
    on the same data and split."""
    table = manifest[["stem", "image_sha1", "fold"]].to_csv(index=False)
    return data_fingerprint(manifest["label_path"], table)


def new_model(config: SegmentConfig, seed: int | None = None) -> SegmentationModel:
    """The run's network with fresh weights (seeded when ``seed`` is given)."""
    if seed is not None:
        torch.manual_seed(seed)
    return create_model(
        config.model, num_classes=len(config.classes), in_chans=config.in_chans, **config.model_options
    )


def _check_sizes(model: SegmentationModel, config: SegmentConfig) -> None:
    multiple = model.input_multiple
    for key, value in (("patch_size", config.patch_size), ("inference.tile", config.inference.tile)):
        if value % multiple:
            raise OptionError(
                f"config key {key!r} must be a multiple of {multiple} for model {config.model!r} "
                f"(its total down-sampling), got {value}"
            )


def run_training(data: str | Path, config: SegmentConfig, out: str | Path,
                 options: EngineOptions = EngineOptions()) -> Path:
    """Run the protocol and write the run folder (see the module docstring).

    Parameters
    ----------
    data : str or Path
        Folder with ``images/`` (or ``brightfield/``) and ``labels/``; label values ``0..K-1`` in the order of
        ``config.classes``.
    config : SegmentConfig
        Every setting; stored as ``out/config.yaml``.
    out : str or Path
        The run folder; an interrupted run with the same config and data resumes, skipping finished folds and
        continuing an unfinished one from its last checkpoint.
    options : EngineOptions, optional
        Devices, precision (``auto`` takes the config's ``precision``), accelerator, determinism.

    Returns
    -------
    Path
        The run folder.
    """
    out = Path(out)
    _check_sizes(new_model(config), config)
    # The data are checked before any process starts, so a bad pair is one line and pins no run folder.
    manifest, summary = prepare_manifest(data, config)
    if options.precision is None:
        options = replace(options, precision=config.precision)
    launch(_train_on_ranks, options, str(data), config, str(out), manifest, summary)
    return out


def _train_on_ranks(runtime: Runtime, data: str, config: SegmentConfig, out_text: str, manifest: pd.DataFrame,
                    summary: dict[str, Any]) -> None:
    out = Path(out_text)
    configure_threads(config.num_threads, local_processes=runtime.local_processes)
    problem = ""
    if runtime.is_main:
        try:
            RunFolder(out, "segment").start(
                config, data_fingerprint=manifest_fingerprint(manifest), runtime=runtime.describe(),
                extra={"data": data, "images": len(manifest)},
            )
        except CytolensError as exc:  # every rank must stop, not only the one that found the problem
            problem = str(exc)
        else:
            write_manifest(manifest, out / "manifest.parquet", required=MANIFEST_REQUIRED)
            write_text_atomic(out / "data_check.json", json.dumps(summary, indent=2) + "\n")
    problem = runtime.broadcast(problem)
    if problem:
        raise CytolensError(problem)
    # Rank 0 decides which folds are left: a rank must never see a done.json that another has just written.
    pending = runtime.broadcast(
        [f for f in config.folds_to_train() if not (fold_folder(out, f) / "done.json").is_file()]
    )
    if not pending:
        if runtime.is_main:
            console.print(f"every fold of {out} is trained already", markup=False)
    else:
        images, labels = [], []
        for path, label_path in zip(manifest["path"], manifest["label_path"]):
            images.append(read_input(path, config)[1])
            labels.append(read_labels(label_path))
        for fold in pending:
            train_fold(runtime, fold, manifest, images, labels, config, out)
    if runtime.is_main:
        records = [json.loads((fold_folder(out, f) / "done.json").read_text(encoding="utf-8"))
                   for f in config.folds_to_train()]
        RunFolder(out, "segment").finish({
            "folds": [r["fold"] for r in records],
            "mean_best_val_mean_dice": float(np.mean([r["best_val_mean_dice"] for r in records])),
            "seconds": round(sum(r["seconds"] for r in records), 2),
        })
    runtime.barrier()


def fold_seed(config: SegmentConfig, fold: int) -> int:
    """Each fold's own seed, derived from the run seed (folds repeat independently of each other)."""
    return derive_seed(config.seed, fold)


class SegmentTask(TrainTask):
    """One fold's training for :class:`~cytolens.engine.FitLoop`: patches, Adam + StepLR, tiled validation.

    Parameters
    ----------
    runtime : Runtime
    config : SegmentConfig
    seed : int
        The fold's seed: initial weights, and the patches of ``(epoch, index)``.
    train, val : (images, labels)
        The fold's training and validation images (normalised) and label maps.
    history : Path
        The fold's ``history.csv``, rewritten at every checkpoint.
    """

    def __init__(self, runtime: Runtime, config: SegmentConfig, seed: int,
                 train: tuple[list[np.ndarray], list[np.ndarray]],
                 val: tuple[list[np.ndarray], list[np.ndarray]], history: Path) -> None:
        self.runtime = runtime
        self.history = history
        self.config = config
        self.num_classes = len(config.classes)
        self.dataset = PatchDataset(
            train[0], train[1], patches_per_epoch=config.patches_per_epoch, num_classes=self.num_classes,
            patch_size=config.patch_size, augment=config.augmentation.build(), seed=seed,
        )
        self.batches = math.ceil(config.patches_per_epoch / config.batch_size)
        # DDP needs every rank to take part in every step: each share of a global batch must be non-empty.
        last = config.patches_per_epoch - (self.batches - 1) * config.batch_size
        if min(config.batch_size, last) < runtime.world_size:
            raise OptionError(
                f"batches of {min(config.batch_size, last)} patches cannot be split over {runtime.world_size} "
                "processes; raise batch_size (and make patches_per_epoch a multiple of it) or use fewer --devices"
            )
        self.val_images, self.val_labels = val
        self.net = new_model(config, seed)
        optimizer = create_optimizer(self.net, "adam", lr=config.lr, l2=config.resolved_l2())
        self.scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_halving_epochs, gamma=0.5)
        self.model, self.optimizer = runtime.setup(self.net, optimizer)
        self.loss_fn = nn.CrossEntropyLoss()
        self.l2 = config.resolved_l2()
        self.best: dict[str, Any] = {"epoch": -1, "mean_dice": -math.inf, "val_loss": math.nan,
                                     "confusion": torch.zeros((self.num_classes, self.num_classes), dtype=torch.int64)}
        self._batches: Prefetcher | None = None
        self._next: tuple[int, int] | None = None

    def steps_per_epoch(self) -> int:
        return self.batches

    def _loader(self, epoch: int, first: int) -> Prefetcher:
        """This rank's batches of ``epoch`` from batch ``first`` on (a resumed run starts inside an epoch), drawn
        in a background thread while the previous batch trains."""
        # Patches depend on (seed, epoch, index) only, so any worker count or starting batch gives the same data.
        if self._batches is not None:
            self._batches.close()  # its thread reads the dataset's refs, which set_epoch replaces
        self.dataset.set_epoch(epoch)
        size, total = self.config.batch_size, self.config.patches_per_epoch
        runtime = self.runtime
        shares = [list(range(i * size, min((i + 1) * size, total)))[runtime.rank::runtime.world_size]
                  for i in range(first, self.batches)]
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=shares, num_workers=self.config.num_workers, collate_fn=collate_patches,
            pin_memory=runtime.device.type == "cuda",
        )
        return Prefetcher(loader)

    def train_step(self, position: Position) -> dict[str, float]:
        waited = time.perf_counter()
        if self._next != (position.epoch, position.index):
            self._batches = self._loader(position.epoch, position.index)
        inputs, targets = next(self._batches)
        self._next = (position.epoch, position.index + 1)
        inputs, targets = self.runtime.to_device(inputs), self.runtime.to_device(targets)
        waited = time.perf_counter() - waited
        lr = self.optimizer.param_groups[0]["lr"]
        with self.runtime.autocast():
            cross_entropy = self.loss_fn(self.model(inputs).float(), targets)
        self.optimizer.zero_grad(set_to_none=True)
        self.runtime.backward(cross_entropy)  # the L2 term is the optimiser's weight decay (create_optimizer)
        self.optimizer.step()
        start = position.index * self.config.batch_size
        samples = min(start + self.config.batch_size, self.config.patches_per_epoch) - start
        # The curve shows the data loss only, comparable with the validation cross-entropy.
        return {"train_loss": cross_entropy.detach(), "lr": lr, "samples": samples, "data_seconds": waited}

    def end_epoch(self, epoch: int) -> None:
        self.scheduler.step()

    def close(self) -> None:
        """Stop the background batch thread (a run stopped inside an epoch leaves one waiting)."""
        if self._batches is not None:
            self._batches.close()
            self._batches, self._next = None, None

    def _sync_buffers(self) -> None:
        """Rank 0's BatchNorm statistics on every rank: DDP syncs them before a training forward pass, after
        which each rank updated its own copy with its own share of the last batch."""
        if self.runtime.world_size > 1:
            buffers = self.runtime.broadcast({k: v.cpu() for k, v in self.net.named_buffers()})
            with torch.no_grad():
                for name, value in self.net.named_buffers():
                    value.copy_(buffers[name].to(value.device))

    def validate(self, epoch: int) -> dict[str, float]:
        """Cross-entropy and mean dice of the whole validation images (each rank predicts its shard)."""
        self._sync_buffers()
        k = self.num_classes
        inference = self.config.inference
        confusion = np.zeros((k, k), dtype=np.int64)
        nll, pixels = 0.0, 0
        for i in self.runtime.shard(len(self.val_images)):
            # The bare network, not the DDP wrapper: ranks predict different numbers of tiles.
            with self.runtime.autocast():
                probabilities = predict_tiled(
                    self.net, self.val_images[i], num_classes=k, tile=inference.tile, overlap=inference.overlap,
                    batch_size=inference.batch_size, tta=inference.tta, input_multiple=self.net.input_multiple,
                )
            truth = self.val_labels[i].astype(np.int64)
            picked = np.take_along_axis(probabilities, truth[np.newaxis], axis=0)[0]
            nll -= float(np.log(np.clip(picked, 1e-12, None)).sum())
            pixels += truth.size
            confusion += pixel_confusion(truth, probabilities.argmax(0), num_classes=k)
        totals = self.runtime.all_reduce_sum(np.concatenate([[nll, pixels], confusion.ravel()]))
        val_loss = float(totals[0] / max(totals[1], 1))
        confusion = np.rint(totals[2:]).astype(np.int64).reshape(k, k)
        mean_dice = float(scores_from_confusion(confusion, self.config.classes)["mean_dice"])
        # The same rule as the loop's early stopping (ties are no improvement): the kept weights and the kept
        # confusion matrix belong to the same epoch.
        if mean_dice > self.best["mean_dice"]:
            self.best = {"epoch": epoch, "mean_dice": mean_dice, "val_loss": val_loss,
                         "confusion": torch.from_numpy(confusion)}
        return {"val_loss": val_loss, "val_mean_dice": mean_dice}

    def after_checkpoint(self, epochs: list[dict[str, Any]], steps_log: list[dict[str, Any]]) -> None:
        # Written at every checkpoint so a long run's curve can be watched while it trains.
        frame = pd.DataFrame(epochs).reindex(columns=HISTORY_COLUMNS)
        write_text_atomic(self.history, frame.to_csv(index=False))

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "best": dict(self.best)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.best = dict(state["best"])

    def model_state(self) -> dict[str, torch.Tensor]:
        return self.net.state_dict()


#: The columns of ``folds/fold<k>/history.csv`` (curves and reports read them).
HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_mean_dice", "lr", "seconds"]


def train_fold(
    runtime: Runtime,
    fold: int,
    manifest: pd.DataFrame,
    images: list[np.ndarray],
    labels: list[np.ndarray],
    config: SegmentConfig,
    out: Path,
) -> dict[str, Any]:
    """Train fold ``fold``'s network on every rank; rank 0 writes its history, best weights and ``done.json``.

    Returns
    -------
    dict
        The ``done.json`` record.
    """
    started = time.perf_counter()
    seed = fold_seed(config, fold)
    is_val = (manifest["fold"] == fold).to_numpy()
    train_idx, val_idx = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise OptionError(f"fold {fold} needs training and validation images; use fewer folds")
    folder = fold_folder(out, fold)
    folder.mkdir(parents=True, exist_ok=True)
    task = SegmentTask(runtime, config, seed, ([images[i] for i in train_idx], [labels[i] for i in train_idx]),
                       ([images[i] for i in val_idx], [labels[i] for i in val_idx]), folder / "history.csv")
    settings = LoopSettings(
        seed=seed, max_epochs=config.epochs, validate_every=config.validate_every, monitor="val_mean_dice",
        mode="max", patience=config.patience, max_minutes=config.max_minutes, budget_unit="epoch",
        checkpoint_every=config.checkpoint_every,
    )
    try:
        result = FitLoop(runtime, settings, resume_path(out, fold), label=f"fold {fold}").fit(task)
    finally:
        task.close()
    best = task.best
    if result.best_state is None or best["epoch"] != result.best_epoch:
        raise CytolensError(f"fold {fold} has no validated epoch with a finite mean dice", path=folder)
    done = {
        "fold": fold,
        "seed": seed,
        "best_epoch": int(best["epoch"]),
        "best_val_mean_dice": float(best["mean_dice"]),
        "best_val_loss": float(best["val_loss"]),
        "val_confusion": torch.as_tensor(best["confusion"]).tolist(),
        "epochs_run": len(result.epochs),
        "epochs_planned": config.epochs,
        "stopped": result.stopped,
        "l2": task.l2,
        "train_images": manifest["stem"].iloc[train_idx].tolist(),
        "val_images": manifest["stem"].iloc[val_idx].tolist(),
        "device": str(runtime.device),
        "world_size": runtime.world_size,
        "precision": runtime.precision,
        "resumed_from_step": result.resumed_from,
        "samples_per_s": None if result.samples_per_s is None else round(result.samples_per_s, 2),
        "seconds": round(time.perf_counter() - started, 2),
    }
    if runtime.is_main:
        save_checkpoint(result.best_state, checkpoint_path(out, fold))
        # done.json is written last: its presence means the fold's checkpoint and history are complete.
        write_text_atomic(folder / "done.json", json.dumps(done, indent=2) + "\n")
        resume_path(out, fold).unlink(missing_ok=True)
        console.print(
            f"fold {fold}: best validation mean dice {best['mean_dice']:.4f} at epoch {best['epoch']}/"
            f"{len(result.epochs)} ({done['seconds']:.0f}s, {done['samples_per_s']} patches/s, stopped: "
            f"{result.stopped})", markup=False,
        )
    runtime.barrier()
    return done
