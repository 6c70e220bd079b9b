"""Fitting one classifier with the paper's stopping rule on the engine's fit loop, and predicting probabilities."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from cytolens.classify.config import TrainingConfig
from cytolens.engine import FitLoop, FitResult, LoopSettings, Position, Runtime, TrainTask, derive_seed
from cytolens.engine.optimizers import create_optimizer
from cytolens.core.errors import OptionError
from cytolens.data.transforms import DIHEDRAL_SIZE, dihedral

__all__ = ["ClassifierFit", "ClassifierTask", "HISTORY_COLUMNS", "fit_classifier", "predict_proba"]

#: The per-epoch history a unit records (``history.csv``; the learning-curve figures read it).
HISTORY_COLUMNS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy"]


@dataclass
class ClassifierFit:
    """A fitted model (best epoch's weights, on its device, in eval mode), its history and the loop's record."""

    model: nn.Module
    history: pd.DataFrame
    best_epoch: int
    best_val_accuracy: float
    result: FitResult


class ClassifierTask(TrainTask):
    """Cross-entropy (+ Keras-style L2) training of one classifier, as a :class:`~cytolens.engine.TrainTask`.

    Each epoch visits the training images in a permutation drawn from ``(seed, epoch)``; batch ``index`` is a
    slice of it, split over the ranks, so a resumed fit draws exactly the batches an uninterrupted one does.
    The epoch's training loss and accuracy are weighted by images (the last batch may be smaller), so their
    running sums are part of the task's state.

    Parameters
    ----------
    runtime : Runtime
    model : torch.nn.Module
        Returns logits ``(N, K)``; its initial weights are the caller's.
    train_x, val_x : (N, C, S, S) ndarray of float32
    train_y, val_y : (N,) ndarray of int
    training : TrainingConfig
    seed : int
        The unit's seed: batch order.
    """

    def __init__(self, runtime: Runtime, model: nn.Module, train_x: np.ndarray, train_y: np.ndarray,
                 val_x: np.ndarray, val_y: np.ndarray, *, training: TrainingConfig, seed: int) -> None:
        self.runtime = runtime
        self.training = training
        self.seed = seed
        self.train_x, self.val_x = np.ascontiguousarray(train_x), np.ascontiguousarray(val_x)
        self.train_y = np.asarray(train_y, dtype=np.int64)
        self.val_y = np.asarray(val_y, dtype=np.int64)
        self.net = model
        optimizer = create_optimizer(model, training.optimizer, lr=training.lr, weight_decay=training.weight_decay,
                                     l2=training.l2)
        self.model, self.optimizer = runtime.setup(model, optimizer)
        # Image-weighted training loss and correct predictions of the epoch so far (this rank's share).
        self.sums = np.zeros(3, dtype=np.float64)  # loss × images, correct, images

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train_x) / self.training.batch_size)

    def _batch(self, position: Position) -> np.ndarray:
        """The global batch of ``position`` (indices into the training images)."""
        order = np.random.default_rng(derive_seed(self.seed, position.epoch)).permutation(len(self.train_x))
        size = self.training.batch_size
        return order[position.index * size:(position.index + 1) * size]

    def train_step(self, position: Position) -> dict[str, float]:
        runtime = self.runtime
        waited = time.perf_counter()
        batch = self._batch(position)
        mine = batch[runtime.rank::runtime.world_size]
        # The inputs were decoded and preprocessed once (load_inputs): a batch is a gather from memory.
        inputs = runtime.to_device(torch.from_numpy(self.train_x[mine]))
        targets = runtime.to_device(torch.from_numpy(self.train_y[mine]))
        waited = time.perf_counter() - waited
        self.model.train()
        with runtime.autocast():
            logits = self.model(inputs)
            cross_entropy = nn.functional.cross_entropy(logits, targets)
        self.optimizer.zero_grad(set_to_none=True)
        runtime.backward(cross_entropy)  # the L2 term is the optimiser's weight decay (create_optimizer)
        self.optimizer.step()
        # The curves compare like with like: cross-entropy only, as for validation (L2 is not a data loss).
        # One host transfer per step for the three numbers together.
        step = torch.stack([cross_entropy.detach().float() * len(mine),
                            (logits.detach().argmax(1) == targets).sum().float()]).cpu().numpy()
        self.sums += [step[0], step[1], len(mine)]
        return {"samples": len(batch), "data_seconds": waited}

    def validate(self, epoch: int) -> dict[str, float]:
        runtime = self.runtime
        train = runtime.all_reduce_sum(self.sums)
        self.sums = np.zeros(3, dtype=np.float64)
        # Every validation image once: each rank scores its shard, the sums are added over ranks.
        rows = runtime.shard(len(self.val_x))
        local = np.zeros(2, dtype=np.float64)  # summed NLL, correct
        if len(rows):
            proba = predict_proba(self.model, self.val_x[rows.start:rows.stop], runtime=runtime, as_numpy=False)
            targets = runtime.to_device(torch.from_numpy(self.val_y[rows.start:rows.stop]))
            nll = nn.functional.nll_loss(torch.log(proba.clamp_min(1e-12)), targets, reduction="sum")
            correct = (proba.argmax(1) == targets).sum()
            local = torch.stack([nll, correct.float()]).cpu().numpy().astype(np.float64)
        val = runtime.all_reduce_sum(local)
        return {
            "train_loss": float(train[0] / train[2]),
            "train_accuracy": float(train[1] / train[2]),
            "val_loss": float(val[0] / len(self.val_x)),
            "val_accuracy": float(val[1] / len(self.val_x)),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "sums": torch.from_numpy(self.sums.copy())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sums = state["sums"].numpy().astype(np.float64)

    def model_state(self) -> dict[str, torch.Tensor]:
        return self.net.state_dict()


def fit_classifier(
    runtime: Runtime,
    model: nn.Module,
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    *,
    training: TrainingConfig,
    seed: int,
    checkpoint: Path,
    checkpoint_every: int | None = None,
    max_minutes: float | None = None,
    label: str = "",
) -> ClassifierFit:
    """Train until validation accuracy stops improving for ``training.patience`` epochs (ties do not count).

    Parameters
    ----------
    runtime : Runtime
        Where to train (``runtime.local()`` for a unit trained by one rank alone).
    model : torch.nn.Module
        Returns logits ``(N, K)``.
    train_x, val_x : (N, C, S, S) ndarray of float32
    train_y, val_y : (N,) ndarray of int
    training : TrainingConfig
        Optimiser, learning rate, Keras-style L2, batch size, epochs, patience.
    seed : int
        Seeds batch order and the loop's per-step randomness (dropout).
    checkpoint : Path
        The resume checkpoint: an interrupted fit continues from it, mid-epoch.
    checkpoint_every : int, optional
        Steps between resume checkpoints (besides every epoch end).
    max_minutes : float, optional
        Stop before an epoch that would end past this many minutes (``result.stopped == "max_minutes"``).
    label : str
        How log lines name the fit.

    Returns
    -------
    ClassifierFit
        The model holds the weights of its best validation epoch (Keras' ``restore_best_weights``; the
        paper does not say, and keeping the best epoch is what early stopping is for).
    """
    if len(val_x) == 0 or len(train_x) == 0:
        raise OptionError(
            f"a fold needs training and validation images, got {len(train_x)} and {len(val_x)}; use fewer folds"
        )
    task = ClassifierTask(runtime, model, train_x, train_y, val_x, val_y, training=training, seed=seed)
    settings = LoopSettings(seed=seed, max_epochs=training.max_epochs, monitor="val_accuracy", mode="max",
                            patience=training.patience, min_epochs=training.min_epochs, max_minutes=max_minutes,
                            checkpoint_every=checkpoint_every)
    result = FitLoop(runtime, settings, checkpoint, label=label).fit(task)
    if result.best_state is not None:
        task.net.load_state_dict(result.best_state)
    task.net.eval()
    history = pd.DataFrame(result.epochs)
    history = history[[c for c in HISTORY_COLUMNS if c in history.columns]]
    return ClassifierFit(task.net, history, result.best_epoch, result.best_score, result)


def _views(inputs: np.ndarray, tta: bool) -> Iterator[np.ndarray]:
    """The input batch, then (``tta``) its 7 other rotations/flips."""
    yield inputs
    for index in range(1, DIHEDRAL_SIZE if tta else 1):
        # dihedral works on (H, W, C): move channels last and back.
        yield np.stack([np.moveaxis(dihedral(np.moveaxis(x, 0, -1), index), -1, 0) for x in inputs])


@torch.no_grad()
def predict_proba(model: nn.Module, inputs: np.ndarray, *, batch_size: int = 64, tta: bool = False,
                  runtime: Runtime | None = None, as_numpy: bool = True) -> np.ndarray | torch.Tensor:
    """Class probabilities ``(N, K)`` (softmax of the logits), optionally averaged over the dihedral group.

    Parameters
    ----------
    model : torch.nn.Module
        On its device.
    inputs : (N, C, S, S) ndarray of float32
    batch_size : int, default 64
    tta : bool, default False
        Average the probabilities of the 8 rotations/flips of each input (test-time augmentation).
    runtime : Runtime, optional
        Its precision's autocast and device copies; without it, fp32 on the model's device.
    as_numpy : bool, default True
        A float32 numpy array; else a float32 tensor on the model's device.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    views = DIHEDRAL_SIZE if tta else 1
    chunks = []
    for start in range(0, len(inputs), batch_size):
        summed = None
        for view in _views(inputs[start:start + batch_size], tta):
            batch = torch.from_numpy(np.ascontiguousarray(view))
            batch = runtime.to_device(batch) if runtime is not None else batch.to(device)
            with runtime.autocast() if runtime is not None else nullcontext():
                logits = model(batch)
            proba = torch.softmax(logits.float(), dim=1)
            summed = proba if summed is None else summed + proba
        chunks.append(summed / views)
    model.train(was_training)
    # Probabilities stay on the device until the end: one host transfer, not one per batch.
    out = torch.cat(chunks) if chunks else torch.empty((0, 0), dtype=torch.float32, device=device)
    return out.cpu().numpy() if as_numpy else out
