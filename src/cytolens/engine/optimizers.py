"""One optimiser factory for every capability's training."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from cytolens.core.errors import check_choice

__all__ = ["OPTIMIZERS", "create_optimizer"]

#: The optimisers a config may name.
OPTIMIZERS = ("adam", "adamw", "nadam", "sgd")


def create_optimizer(
    params: Iterable[torch.nn.Parameter],
    name: str,
    *,
    lr: float,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """The optimiser ``name`` over ``params``.

    Parameters
    ----------
    params : iterable of Parameter
    name : {"adam", "adamw", "nadam", "sgd"}
        ``nadam`` is Keras' Nadam: torch's ``momentum_decay=0.004`` is its ``schedule_decay`` (Shpilman et al.
        2017). ``sgd`` uses momentum 0.9.
    lr : float
    weight_decay : float, default 0
        torch's decoupled (AdamW) or coupled decay; a Keras-style L2 term is added to the loss instead
        (:func:`cytolens.engine.parameters.l2_penalty`).
    betas : (float, float), default (0.9, 0.999)
        Adam's and NAdam's moment decay rates (CytoGAN's GANs use β1 = 0.5).

    Raises
    ------
    OptionError
        For an unknown name (with the valid ones).
    """
    check_choice("optimizer", name, OPTIMIZERS)
    if name == "nadam":
        return torch.optim.NAdam(params, lr=lr, betas=betas, weight_decay=weight_decay, momentum_decay=0.004)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
