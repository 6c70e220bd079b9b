"""Grad-CAM saliency maps (Selvaraju et al. 2017) for any cytolens classifier.

A map shows which parts of a cell drove a class score: the activations of one convolutional layer, weighted by
the spatial mean of the score's gradient with respect to them, rectified, upsampled to the image and scaled to
[0, 1]. The model's weights, gradients and train/eval mode are left exactly as they were.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cytolens.core.errors import OptionError

__all__ = ["grad_cam"]


def _resolve_layer(model: nn.Module, layer: str | None) -> tuple[str, nn.Module]:
    if layer is None:
        layer = getattr(model, "gradcam_layer", None)
        if layer is None:
            raise OptionError(f"{type(model).__name__} has no `gradcam_layer`; pass `layer` (a name from "
                              "model.named_modules())")
    modules = dict(model.named_modules())
    if layer not in modules:
        names = [name for name in modules if name]
        close = difflib.get_close_matches(layer, names, n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        convs = [name for name, m in modules.items() if isinstance(m, nn.modules.conv._ConvNd)][-5:]
        raise OptionError(f"`layer` {layer!r} is not a module of {type(model).__name__}.{hint} "
                          f"Valid names include {', '.join(map(repr, convs or names[-5:]))}.")
    return layer, modules[layer]


def _resolve_targets(target: int | Sequence[int] | None, logits: torch.Tensor) -> torch.Tensor:
    n, num_classes = logits.shape
    if target is None:
        return logits.argmax(dim=1)
    values = [target] * n if isinstance(target, (int, np.integer)) else list(target)
    if len(values) != n:
        raise OptionError(f"`target` needs one class per image ({n}), got {len(values)}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < num_classes:
            raise OptionError(f"`target` classes must be integers in [0, {num_classes - 1}], got {value!r}")
    return torch.as_tensor([int(v) for v in values], device=logits.device)


def grad_cam(
    model: nn.Module,
    images: torch.Tensor,
    *,
    target: int | Sequence[int] | None = None,
    layer: str | None = None,
) -> np.ndarray:
    """Compute Grad-CAM maps for a batch of images.

    Parameters
    ----------
    model : torch.nn.Module
        A classifier returning logits ``(N, num_classes)``; run in eval mode for the call (dropout off,
        BatchNorm on running statistics) and restored to its previous mode afterwards.
    images : (N, C, H, W) torch.Tensor
        Float input batch, on the model's device; not modified.
    target : int or sequence of int, optional
        Class to explain: one for all images or one per image. ``None`` explains the predicted class.
    layer : str, optional
        Name in ``dict(model.named_modules())`` whose output (N, K, h, w) is explained; defaults to
        ``model.gradcam_layer``.

    Returns
    -------
    (N, H, W) ndarray of float32
        Maps in [0, 1], bilinearly upsampled to the input size; each map is scaled so its maximum is 1, and is
        all zeros when no location has positive evidence (instead of NaN).

    Raises
    ------
    OptionError
        For an unknown layer, a layer that is not 4-D or not used in the forward pass, or a bad target.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise OptionError(f"`images` must be a float tensor of shape (N, C, H, W), got {shape}")
    name, module = _resolve_layer(model, layer)
    captured: list[torch.Tensor] = []

    def keep_output(_module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor):
            captured.append(output)

    was_training = model.training
    handle = module.register_forward_hook(keep_output)
    try:
        model.eval()
        # A leaf input that requires grad keeps the graph alive even when every parameter is frozen.
        inputs = images.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(inputs)
            if not captured:
                raise OptionError(f"`layer` {name!r} produced no tensor output in the forward pass")
            activations = captured[-1]
            if activations.ndim != 4:
                raise OptionError(f"`layer` {name!r} outputs shape {tuple(activations.shape)}; Grad-CAM needs a "
                                  "(N, K, h, w) feature map")
            targets = _resolve_targets(target, logits)
            score = logits.gather(1, targets[:, None]).sum()
            # autograd.grad returns the gradient without accumulating into any parameter's .grad.
            (gradients,) = torch.autograd.grad(score, activations, allow_unused=True)
        if gradients is None:  # the score does not depend on this layer at all
            gradients = torch.zeros_like(activations)
        weights = gradients.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * activations.detach()).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        peak = cam.amax(dim=(1, 2), keepdim=True)
        cam = torch.where(peak > 0, cam / peak.clamp_min(torch.finfo(cam.dtype).tiny), torch.zeros_like(cam))
        return cam.clamp_(0.0, 1.0).float().cpu().numpy()
    finally:
        handle.remove()
        model.train(was_training)
