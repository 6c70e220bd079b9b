"""The MIDL 2019 training protocol on any image/label-pair dataset: ``cytolens segment train``.

1. The pairs are checked (:func:`cytolens.datacheck.check_label_pairs`); an unusable pair or an image smaller
   than a patch stops the run with one line naming the file.
2. Every image is assigned to one of ``folds`` validation folds (image-level K-fold: all patches of an image
   stay on one side, and every image is in exactly one validation fold).
3. For each fold in ``train_folds`` a network is trained on class-balanced random patches of the other folds'
   images, with the paper's augmentations, Adam (lr halved every ``lr_halving_epochs``), cross-entropy plus the
   Keras-style L2 penalty. Every ``validate_every`` epochs it predicts the fold's *whole* validation images in
   blended tiles; the checkpoint with the best validation mean dice is kept.
4. A fold's outputs are ``folds/fold<k>/history.csv``, ``checkpoints/fold<k>.pt`` and ``folds/fold<k>/done.json``,
   written last; a rerun with the same config and data skips finished folds.

The validation confusion matrix of the best epoch is stored in ``done.json``: pooled over folds it gives the
cross-validated dice of Table 1 without predicting again (:mod:`cytolens.segment.evaluate`).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from cytolens.atomic import write_text_atomic
from cytolens.config import save_config
from cytolens.console import console, progress_bar
from cytolens.datacheck import check_label_pairs
from cytolens.errors import CytolensError, OptionError
from cytolens.io import normalize_intensity, read_image
from cytolens.layouts import write_manifest
from cytolens.run_folder import check_same_config, check_same_data
from cytolens.segment.config import SegmentConfig
from cytolens.segment.inference import predict_tiled
from cytolens.segment.metrics import pixel_confusion, scores_from_confusion
from cytolens.segment.models import SegmentationModel, create_segmentation_model, l2_penalty
from cytolens.segment.sampling import PatchDataset
from cytolens.splits import grouped_stratified_kfold
from cytolens.training import configure_threads, save_checkpoint, seed_everything, select_device

__all__ = ["checkpoint_path", "fold_folder", "prepare_manifest", "read_input", "run_training", "train_fold"]

MANIFEST_REQUIRED = ("path", "group", "split")


def fold_folder(run: Path, fold: int) -> Path:
    """Where fold ``fold``'s history and ``done.json`` live."""
    return Path(run) / "folds" / f"fold{fold}"


def checkpoint_path(run: Path, fold: int) -> Path:
    """The best-validation weights of fold ``fold``."""
    return Path(run) / "checkpoints" / f"fold{fold}.pt"


def file_sha1(path: str | Path) -> str:
    """SHA-1 of a file's bytes: evaluation recognises training images by content, not by name."""
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    samples["image_sha1"] = [file_sha1(p) for p in samples["path"]]
    return samples.reset_index(drop=True), check.summary()


def data_fingerprint(manifest: pd.DataFrame) -> str:
    """A hash of which image (by content) is in which fold: a run resumes only on the same data and split."""
    text = manifest[["stem", "image_sha1", "fold"]].to_csv(index=False)
    text += "".join(file_sha1(p) for p in manifest["label_path"])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def new_model(config: SegmentConfig, seed: int | None = None) -> SegmentationModel:
    """The run's network with fresh weights (seeded when ``seed`` is given)."""
    if seed is not None:
        torch.manual_seed(seed)
    return create_segmentation_model(
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


def run_training(data: str | Path, config: SegmentConfig, out: str | Path) -> Path:
    """Run the protocol and write the run folder (see the module docstring).

    Parameters
    ----------
    data : str or Path
        Folder with ``images/`` (or ``brightfield/``) and ``labels/``; label values ``0..K-1`` in the order of
        ``config.classes``.
    config : SegmentConfig
        Every setting; stored as ``out/config.yaml``.
    out : str or Path
        The run folder; an interrupted run with the same config and data resumes, skipping finished folds.

    Returns
    -------
    Path
        The run folder.
    """
    out = Path(out)
    check_same_config(out, config)
    _check_sizes(new_model(config), config)
    configure_threads(config.num_threads)
    manifest, summary = prepare_manifest(data, config)
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    check_same_data(out, data_fingerprint(manifest))
    write_manifest(manifest, out / "manifest.parquet", required=MANIFEST_REQUIRED)
    write_text_atomic(out / "data_check.json", json.dumps(summary, indent=2) + "\n")

    pending = [f for f in config.folds_to_train() if not (fold_folder(out, f) / "done.json").is_file()]
    if not pending:
        console.print(f"every fold of {out} is trained already", markup=False)
        return out
    images, labels = [], []
    with progress_bar("loading images", len(manifest)) as advance:
        for path, label_path in zip(manifest["path"], manifest["label_path"]):
            images.append(read_input(path, config)[1])
            labels.append(read_labels(label_path))
            advance(1)
    for fold in pending:
        train_fold(fold, manifest, images, labels, config, out)
    return out


def fold_seed(config: SegmentConfig, fold: int) -> int:
    """Each fold's own seed, derived from the run seed (folds repeat independently of each other)."""
    return int(np.random.SeedSequence([config.seed, fold]).generate_state(1)[0])


def validate(
    model: nn.Module, images: list[np.ndarray], labels: list[np.ndarray], config: SegmentConfig
) -> tuple[float, np.ndarray]:
    """Cross-entropy (mean over pixels) and summed confusion matrix of whole images predicted in tiles."""
    num_classes = len(config.classes)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    nll, pixels = 0.0, 0
    for image, label in zip(images, labels):
        probabilities = predict_tiled(
            model, image, num_classes=num_classes, tile=config.inference.tile, overlap=config.inference.overlap,
            batch_size=config.inference.batch_size, tta=config.inference.tta,
            input_multiple=model.input_multiple,  # type: ignore[arg-type]
        )
        truth = label.astype(np.int64)
        picked = np.take_along_axis(probabilities, truth[np.newaxis], axis=0)[0]
        nll -= float(np.log(np.clip(picked, 1e-12, None)).sum())
        pixels += truth.size
        confusion += pixel_confusion(truth, probabilities.argmax(0), num_classes=num_classes)
    return nll / max(pixels, 1), confusion


def next_epoch_overruns(
    max_minutes: float | None, elapsed: float, finished: list[float], current: float
) -> bool:
    """Whether another epoch would end past the ``max_minutes`` budget, judged by the epochs run so far.

    Checking only the time already spent let a run overrun its budget by a whole epoch (and a validation).

    Parameters
    ----------
    max_minutes : float or None
        The budget; None never stops.
    elapsed : float
        Seconds since training started.
    finished : list of float
        Seconds each finished epoch took, validation included.
    current : float
        Seconds the epoch just trained has taken so far (its validation, if any, is still to come).

    Returns
    -------
    bool
        True if ``elapsed`` plus the mean epoch time would pass the budget: the current epoch is then the last
        one, and is validated.
    """
    if max_minutes is None:
        return False
    return elapsed + float(np.mean([*finished, current])) > 60 * max_minutes


def train_fold(
    fold: int,
    manifest: pd.DataFrame,
    images: list[np.ndarray],
    labels: list[np.ndarray],
    config: SegmentConfig,
    out: Path,
) -> dict:
    """Train fold ``fold``'s network and write its history, best checkpoint and ``done.json`` (last).

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
    seed_everything(seed)
    model = new_model(config, seed)
    device = select_device()
    model.to(device)
    dataset = PatchDataset(
        [images[i] for i in train_idx], [labels[i] for i in train_idx], patches_per_epoch=config.patches_per_epoch,
        num_classes=len(config.classes), patch_size=config.patch_size, augment=config.augmentation.build(),
        seed=seed,
    )
    # The dataset draws fresh random patches every epoch itself, so the loader needs no shuffling.
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=config.batch_size, shuffle=False, num_workers=config.num_workers,
        persistent_workers=False, pin_memory=device.type == "cuda",
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_halving_epochs, gamma=0.5)
    loss_fn = nn.CrossEntropyLoss()
    l2 = config.resolved_l2()
    val_images, val_labels = [images[i] for i in val_idx], [labels[i] for i in val_idx]
    folder = fold_folder(out, fold)
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    best = {"epoch": -1, "mean_dice": -1.0, "confusion": None}
    waited, stopped = 0, "epochs"
    description = f"fold {fold}: training"
    with progress_bar(description, config.epochs) as advance:
        for epoch in range(1, config.epochs + 1):
            epoch_started = time.perf_counter()
            dataset.set_epoch(epoch)
            lr = optimizer.param_groups[0]["lr"]
            model.train()
            total, seen = 0.0, 0
            for inputs, targets in loader:
                inputs, targets = inputs.to(device), targets.to(device)
                cross_entropy = loss_fn(model(inputs), targets)
                loss = cross_entropy + l2_penalty(model, l2) if l2 > 0 else cross_entropy
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                # The curve shows the data loss only, comparable with the validation cross-entropy.
                total += float(cross_entropy.detach()) * len(targets)
                seen += len(targets)
            scheduler.step()
            row = {"epoch": epoch, "train_loss": total / max(seen, 1), "val_loss": np.nan, "val_mean_dice": np.nan,
                   "lr": lr, "seconds": 0.0}
            out_of_time = next_epoch_overruns(config.max_minutes, time.perf_counter() - started,
                                              [previous["seconds"] for previous in rows],
                                              time.perf_counter() - epoch_started)
            last = epoch == config.epochs or out_of_time
            if epoch % config.validate_every == 0 or last:
                val_loss, confusion = validate(model, val_images, val_labels, config)
                mean_dice = scores_from_confusion(confusion, config.classes)["mean_dice"]
                row.update(val_loss=val_loss, val_mean_dice=mean_dice)
                if mean_dice > best["mean_dice"]:
                    best = {"epoch": epoch, "mean_dice": mean_dice, "confusion": confusion, "val_loss": val_loss}
                    save_checkpoint({k: v.detach().cpu() for k, v in model.state_dict().items()},
                                    checkpoint_path(out, fold))
                    waited = 0
                else:
                    waited += 1
            row["seconds"] = round(time.perf_counter() - epoch_started, 3)
            rows.append(row)
            # Written every epoch so a long run's curve can be watched while it trains.
            write_text_atomic(folder / "history.csv", pd.DataFrame(rows).to_csv(index=False))
            advance(1)
            if config.patience is not None and waited >= config.patience:
                stopped = "early_stopping"
                break
            if out_of_time and epoch < config.epochs:
                stopped = "max_minutes"
                break
    done = {
        "fold": fold,
        "seed": seed,
        "best_epoch": best["epoch"],
        "best_val_mean_dice": best["mean_dice"],
        "best_val_loss": best.get("val_loss"),
        "val_confusion": best["confusion"].tolist(),
        "epochs_run": len(rows),
        "epochs_planned": config.epochs,
        "stopped": stopped,
        "l2": l2,
        "train_images": manifest["stem"].iloc[train_idx].tolist(),
        "val_images": manifest["stem"].iloc[val_idx].tolist(),
        "device": str(device),
        "seconds": round(time.perf_counter() - started, 2),
    }
    # done.json is written last: its presence means the fold's checkpoint and history are complete.
    write_text_atomic(folder / "done.json", json.dumps(done, indent=2) + "\n")
    console.print(
        f"fold {fold}: best validation mean dice {best['mean_dice']:.4f} at epoch {best['epoch']}/{len(rows)} "
        f"({done['seconds']:.0f}s, stopped: {stopped})",
        markup=False,
    )
    return done
