"""One optimiser factory for every capability's training."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from cytolens.core.errors import OptionError, check_choice
from cytolens.engine.parameters import regularized_parameters

__all__ = ["OPTIMIZERS", "create_optimizer"]

#: The optimisers a config may name.
OPTIMIZERS = ("adam", "adamw", "nadam", "sgd")


def create_optimizer(
    params: Iterable[torch.nn.Parameter] | nn.Module,
    name: str,
    *,
    lr: float,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    l2: float = 0.0,
) -> torch.optim.Optimizer:
    """The optimiser ``name`` over ``params``.

    Parameters
    ----------
    params : iterable of Parameter, or Module
        A module is needed for ``l2``: its kernels (:func:`~cytolens.engine.parameters.regularized_parameters`)
        get the penalty, its other parameters do not.
    name : {"adam", "adamw", "nadam", "sgd"}
        ``nadam`` is Keras' Nadam: torch's ``momentum_decay=0.004`` is its ``schedule_decay`` (Shpilman et al.
        2017). ``sgd`` uses momentum 0.9.
    lr : float
    weight_decay : float, default 0
        torch's decoupled (AdamW) or coupled decay, on every parameter.
    betas : (float, float), default (0.9, 0.999)
        Adam's and NAdam's moment decay rates (CytoGAN's GANs use β1 = 0.5).
    l2 : float, default 0
        Keras' ``kernel_regularizer=l2(l2)``: the loss term ``l2 * Σ w²`` over the kernels. Its gradient
        ``2 * l2 * w`` is exactly torch's coupled weight decay of ``2 * l2`` on those kernels, so it is applied
        there, inside the optimiser's update, instead of as a loss term with its own forward and backward pass
        over every weight (:func:`~cytolens.engine.parameters.l2_penalty` is that term, kept as the reference).

    Raises
    ------
    OptionError
        For an unknown name (with the valid ones), or ``l2`` with AdamW, whose decay is decoupled.
    """
    check_choice("optimizer", name, OPTIMIZERS)
    if l2:
        params = _l2_groups(params, name, l2=l2, weight_decay=weight_decay)
    elif isinstance(params, nn.Module):
        params = params.parameters()
    if name == "nadam":
        return torch.optim.NAdam(params, lr=lr, betas=betas, weight_decay=weight_decay, momentum_decay=0.004)
    # Adam and AdamW take torch's fused kernel (CPU and CUDA): one pass over each tensor instead of the for-each
    # version's ~8 elementwise passes, the same update (8% of a GAN's bf16 step on 2 CPU cores).
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=True)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)


def _l2_groups(model: Iterable[torch.nn.Parameter] | nn.Module, name: str, *, l2: float,
               weight_decay: float) -> list[dict[str, Any]]:
    """Two parameter groups: the model's kernels with coupled decay ``weight_decay + 2 * l2``, the rest without."""
    if not isinstance(model, nn.Module):
        raise TypeError("create_optimizer needs the model itself (not its parameters) for an l2 penalty")
    if name == "adamw":
        raise OptionError("`l2` (a Keras-style loss term) does not combine with adamw, whose weight decay is "
                          "decoupled from the gradient; use adam or nadam with l2, or adamw with weight_decay")
    kernels = list(regularized_parameters(model))
    chosen = {id(p) for p in kernels}
    others = [p for p in model.parameters() if id(p) not in chosen]
    return [{"params": kernels, "weight_decay": weight_decay + 2.0 * l2},
            {"params": others, "weight_decay": weight_decay}]
