"""Parameter counts and the Keras-style L2 penalty, for every capability's models."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from cytolens.core.errors import OptionError

__all__ = ["count_parameters", "l2_penalty", "regularized_parameters"]


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Count parameters the PyTorch way and the Keras way.

    Returns
    -------
    dict
        ``trainable`` (parameters with ``requires_grad``), ``total`` (all parameters) and ``keras`` (``total`` plus
        the BatchNorm ``running_mean`` and ``running_var`` elements, which Keras counts as non-trainable weights;
        equal to ``trainable`` plus those buffers when nothing is frozen).
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    bn_stats = sum(
        buffer.numel()
        for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)
        for buffer in (module.running_mean, module.running_var) if buffer is not None
    )
    return {"trainable": trainable, "total": total, "keras": total + bn_stats}


def regularized_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """The parameters a Keras-style L2 penalises: ``model.regularized_parameters()`` if the model defines it, else
    every conv and linear kernel, as Keras' ``kernel_regularizer`` does (biases, BatchNorm gamma/beta are not)."""
    custom = getattr(model, "regularized_parameters", None)
    if callable(custom):
        yield from custom()
        return
    for module in model.modules():
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            yield module.weight


def l2_penalty(model: nn.Module, weight: float) -> torch.Tensor:
    """Keras-style L2 penalty ``weight * Σ w²`` over the model's regularised kernels (not biases).

    Parameters
    ----------
    model : torch.nn.Module
        Penalises ``model.regularized_parameters()`` if defined, else every conv and linear ``.weight``.
    weight : float
        The L2 factor (0.01 in Shpilman et al. 2017).

    Returns
    -------
    torch.Tensor
        A scalar on the model's device, differentiable; add it to the loss.
    """
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
        raise OptionError(f"`weight` must be a non-negative number, got {weight!r}")
    squares = [p.pow(2).sum() for p in regularized_parameters(model)]
    if not squares:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        return torch.zeros((), device=device)
    return weight * torch.stack(squares).sum()
