"""Fitting one classifier with the paper's stopping rule, and predicting class probabilities."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from cytolens.classify.config import TrainingConfig
from cytolens.engine.parameters import l2_penalty
from cytolens.errors import OptionError
from cytolens.training import EarlyStopping, seed_everything, select_device
from cytolens.transforms import DIHEDRAL_SIZE, dihedral


@dataclass
class FitResult:
    """A fitted model (best epoch's weights) and its per-epoch history."""

    model: nn.Module
    history: pd.DataFrame
    best_epoch: int
    best_val_accuracy: float


def make_optimizer(model: nn.Module, training: TrainingConfig) -> torch.optim.Optimizer:
    """The optimiser a config names. NAdam's ``momentum_decay=0.004`` is Keras' Nadam ``schedule_decay``."""
    params = model.parameters()
    if training.optimizer == "nadam":
        return torch.optim.NAdam(params, lr=training.lr, weight_decay=training.weight_decay, momentum_decay=0.004)
    if training.optimizer == "adam":
        return torch.optim.Adam(params, lr=training.lr, weight_decay=training.weight_decay)
    if training.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=training.lr, weight_decay=training.weight_decay)
    return torch.optim.SGD(params, lr=training.lr, momentum=0.9, weight_decay=training.weight_decay)


def fit_classifier(
    model: nn.Module,
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    *,
    training: TrainingConfig,
    seed: int,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> FitResult:
    """Train until validation accuracy stops improving for ``training.patience`` epochs.

    Parameters
    ----------
    model : torch.nn.Module
        Returns logits ``(N, K)``.
    train_x, val_x : (N, C, S, S) ndarray of float32
    train_y, val_y : (N,) ndarray of int
    training : TrainingConfig
        Optimiser, learning rate, Keras-style L2, batch size, epochs, patience.
    seed : int
        Seeds shuffling and initialisation-independent randomness (dropout).
    on_epoch : callable, optional
        Called with ``(epoch, metrics)`` after each epoch.

    Returns
    -------
    FitResult
        The model holds the weights of its best validation epoch (Keras' ``restore_best_weights``; the
        paper does not say, and keeping the best epoch is what early stopping is for).
    """
    if len(val_x) == 0 or len(train_x) == 0:
        raise OptionError(
            f"a fold needs training and validation images, got {len(train_x)} and {len(val_x)}; use fewer folds"
        )
    seed_everything(seed)
    device = select_device()
    model.to(device)
    optimizer = make_optimizer(model, training)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.from_numpy(np.ascontiguousarray(train_x))
    y = torch.from_numpy(np.asarray(train_y, dtype=np.int64))
    generator = torch.Generator().manual_seed(seed)
    stopper = EarlyStopping(patience=training.patience)
    rows = []
    for epoch in range(1, training.max_epochs + 1):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        total_loss, total_correct = 0.0, 0
        for start in range(0, len(order), training.batch_size):
            batch = order[start : start + training.batch_size]
            inputs, targets = x[batch].to(device), y[batch].to(device)
            logits = model(inputs)
            cross_entropy = loss_fn(logits, targets)
            loss = cross_entropy + l2_penalty(model, training.l2) if training.l2 > 0 else cross_entropy
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            # The curves compare like with like: cross-entropy only, as for validation (L2 is not a data loss).
            total_loss += float(cross_entropy.detach()) * len(batch)
            total_correct += int((logits.argmax(1) == targets).sum())
        val_proba = predict_proba(model, val_x)
        val_log_proba = torch.log(torch.from_numpy(val_proba).clamp_min(1e-12))
        val_loss = float(nn.functional.nll_loss(val_log_proba, torch.from_numpy(np.asarray(val_y, dtype=np.int64))))
        metrics = {
            "epoch": epoch,
            "train_loss": total_loss / len(x),
            "train_accuracy": total_correct / len(x),
            "val_loss": val_loss,
            "val_accuracy": float((val_proba.argmax(1) == val_y).mean()),
        }
        rows.append(metrics)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if stopper.update(metrics["val_accuracy"], epoch, model):
            break
    if stopper.best_state is not None:
        model.load_state_dict(stopper.best_state)
    model.eval().cpu()  # checkpoints, Grad-CAM and reports work on the CPU copy
    return FitResult(model, pd.DataFrame(rows), stopper.best_epoch, stopper.best_score)


@torch.no_grad()
def predict_proba(model: nn.Module, inputs: np.ndarray, *, batch_size: int = 64, tta: bool = False) -> np.ndarray:
    """Class probabilities ``(N, K)`` (softmax of the logits), optionally averaged over the dihedral group.

    Parameters
    ----------
    model : torch.nn.Module
    inputs : (N, C, S, S) ndarray of float32
    batch_size : int, default 64
    tta : bool, default False
        Average the probabilities of the 8 rotations/flips of each input (test-time augmentation).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    transforms = range(DIHEDRAL_SIZE) if tta else [0]
    total = None
    for index in transforms:
        chunks = []
        for start in range(0, len(inputs), batch_size):
            batch = inputs[start : start + batch_size]
            if index:
                # dihedral works on (H, W, C): move channels last and back.
                batch = np.stack([np.moveaxis(dihedral(np.moveaxis(x, 0, -1), index), -1, 0) for x in batch])
            logits = model(torch.from_numpy(np.ascontiguousarray(batch)).to(device))
            chunks.append(torch.softmax(logits, dim=1).cpu().numpy())
        proba = np.concatenate(chunks) if chunks else np.empty((0, 0), np.float32)
        total = proba if total is None else total + proba
    model.train(was_training)
    return (total / len(transforms)).astype(np.float32)
