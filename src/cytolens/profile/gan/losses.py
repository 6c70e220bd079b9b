"""The losses of CytoGAN's three GANs, as functions of the discriminator's outputs.

Each discriminator loss returns ``(loss, parts)``: the scalar to minimise and a dict of detached 0-d tensors for
the loss curves (tensors, so a training step on a GPU reads them back to the host once, not once per number). Real and generated images are scored in one forward pass (the discriminator has no BatchNorm, so
this equals two passes); the mean runs over all 2n outputs, as in the paper's code.

- ``dcgan``: binary cross-entropy on logits; real labels drawn from U[low, high] (CytoGAN's ``smooth_labels``,
  default U[0.8, 1]), fake labels 0; the generator minimises the cross-entropy to label 1 (non-saturating).
- ``lsgan``: squared error to the same targets (a = 0, b = U[0.8, 1], c = 1 in Mao et al.'s notation).
- ``wgan-gp``: critic ``mean D(fake) − mean D(real) + λ · mean((‖∇ₓ D(x̂)‖₂ − 1)²)`` with x̂ between real and
  fake; the generator minimises ``−mean D(G(z))``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from cytolens.core.errors import check_choice

__all__ = ["LOSSES", "discriminator_loss", "generator_loss", "gradient_penalty"]

LOSSES = ("dcgan", "lsgan", "wgan-gp")


def _soft_real_labels(n: int, label_range: tuple[float, float], like: torch.Tensor) -> torch.Tensor:
    low, high = label_range
    return low + (high - low) * torch.rand(n, device=like.device, dtype=like.dtype)


def discriminator_loss(
    loss: str,
    real_out: torch.Tensor,
    fake_out: torch.Tensor,
    *,
    real_label_range: tuple[float, float] = (0.8, 1.0),
    penalty: Callable[[], torch.Tensor] | None = None,
    penalty_weight: float = 10.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The discriminator's (critic's) loss.

    Parameters
    ----------
    loss : {"dcgan", "lsgan", "wgan-gp"}
    real_out, fake_out : (n,) tensor
        Discriminator outputs (logits / critic scores) on real and generated images.
    real_label_range : (float, float)
        Soft labels for real images (dcgan, lsgan).
    penalty : callable, optional
        Returns the gradient penalty (wgan-gp); see :func:`gradient_penalty`.
    penalty_weight : float
        λ of WGAN-GP.
    """
    check_choice("loss", loss, LOSSES)
    parts = {"d_real": real_out.detach().float().mean(), "d_fake": fake_out.detach().float().mean()}
    if loss == "wgan-gp":
        critic = fake_out.mean() - real_out.mean()
        parts["wasserstein"] = -critic.detach().float()
        if penalty is not None and penalty_weight > 0:
            gp = penalty()
            parts["gradient_penalty"] = gp.detach().float()
            critic = critic + penalty_weight * gp
        return critic, parts
    outputs = torch.cat([fake_out, real_out])
    targets = torch.cat([torch.zeros_like(fake_out), _soft_real_labels(len(real_out), real_label_range, real_out)])
    if loss == "dcgan":
        value = F.binary_cross_entropy_with_logits(outputs, targets)
    else:
        value = F.mse_loss(outputs, targets)
    return value, parts


def generator_loss(loss: str, fake_out: torch.Tensor) -> torch.Tensor:
    """The generator's loss given the discriminator's outputs on its images."""
    check_choice("loss", loss, LOSSES)
    if loss == "wgan-gp":
        return -fake_out.mean()
    if loss == "dcgan":
        return F.binary_cross_entropy_with_logits(fake_out, torch.ones_like(fake_out))
    return F.mse_loss(fake_out, torch.ones_like(fake_out))


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, fake: torch.Tensor, *,
    interpolation: str = "sample",
) -> torch.Tensor:
    """WGAN-GP's penalty ``mean((‖∇ₓ critic(x̂)‖₂ − 1)²)``.

    ``interpolation="sample"`` draws one mixing weight per image (Gulrajani et al. 2017); ``"pixel"`` one per
    element, as CytoGAN's code did.
    """
    check_choice("interpolation", interpolation, ("sample", "pixel"))
    shape = (len(real), 1, 1, 1) if interpolation == "sample" else real.shape
    epsilon = torch.rand(shape, device=real.device, dtype=real.dtype)
    mix = (epsilon * real.detach() + (1 - epsilon) * fake.detach()).requires_grad_(True)
    scores = critic(mix)
    (grads,) = torch.autograd.grad(scores.sum(), mix, create_graph=True)
    slopes = grads.flatten(1).norm(2, dim=1)
    return ((slopes - 1.0) ** 2).mean()
