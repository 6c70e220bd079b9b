"""A dense block's training step in one buffer: FC-DenseNet's forward and backward without the growing copies.

Written the obvious way, a dense block concatenates every new map onto a copy of the stack, so layer ``l`` copies
all ``C0 + l·g`` channels before it; each layer's BatchNorm then recomputes the batch statistics of channels that
every earlier layer already measured (within one batch they are the same numbers); autograd adds the stack's
gradient piece by piece; and PyTorch's CPU weight gradient of a 3×3 convolution onto ``g = 16`` channels runs at
a fraction of its forward's rate. On a 2-core AVX2 CPU at the paper's batch of 3 (fp32, torch.profiler over two
steps of FC-DenseNet103) that was: convolution backward 40% of the step, the concatenations 12%, BatchNorm
forward 9%, ReLU backward 7%, BatchNorm backward 6%, the gradient additions 6%.

:func:`dense_block_stack` computes the same function, with the same parameters, the same dropout masks drawn in
the same order, and the same running-statistics updates, as ``for layer: x = cat([x, layer(x)])``, but

* forward writes every new map once into one pre-allocated channels-last stack (backward hands BatchNorm's
  backward a dense copy of each layer's input, since its CPU kernel is ~30× slower on a slice of the stack);
* the batch mean and variance of a channel are measured once, when it is written, and each layer's BatchNorm
  and ReLU are one multiply-add and one clamp over its slice of the stack;
* backward adds each layer's input gradient straight into one gradient stack;
* the weight gradient of each 3×3 convolution is one matrix product: the output gradient's nine shifted copies
  (``9·g`` columns, cheap since ``g`` is small) times the input map viewed as a ``pixels × C`` matrix.

Measured on a 2-core AVX2 CPU in fp32 (``cytolens bench --only training --models fcdensenet103 --baseline
<the revision before> --rounds 3``): 1.27× the samples/s at batch 3, 1.24× at batch 8. What remains of the step is
the convolutions (forward, data gradient, weight gradient: about half, timed inside the step) and BatchNorm/ReLU
backward over each layer's whole input (about a fifth), work a dense block does per layer by construction.

It runs where it was measured: channels-last CPU tensors of float32 or float64, outside autocast, in training
mode, with gradients on; everywhere else (eval, bf16 autocast, CUDA, NCHW) the block runs its layers one by
one, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cytolens.segment.cpu_training import channels_last_cpu_training

__all__ = ["conv3x3_weight_grad", "dense_block_stack", "fused_path_applies"]

_CHANNELS_LAST = torch.channels_last


def _dense_channels_last(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous(memory_format=_CHANNELS_LAST)


def _shifted_columns(grad: torch.Tensor) -> torch.Tensor:
    """``(N·H·W, 9·O)`` matrix ``M[(n, y, x), (ky, kx, o)] = grad[n, o, y - ky + 1, x - kx + 1]`` (0 outside)."""
    n, channels, height, width = grad.shape
    # (N, H+2, W+2, O): a channels-last map padded by one pixel, its channels innermost.
    padded = F.pad(grad, (1, 1, 1, 1)).permute(0, 2, 3, 1)
    columns = grad.new_empty((n, height, width, 9, channels))
    for ky in range(3):
        for kx in range(3):
            columns[:, :, :, 3 * ky + kx] = padded[:, 2 - ky:2 - ky + height, 2 - kx:2 - kx + width]
    return columns.view(n * height * width, 9 * channels)


def conv3x3_weight_grad(grad_out: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Weight gradient of a 3×3, stride-1, padding-1 convolution as one matrix product.

    Parameters
    ----------
    grad_out : (N, O, H, W) tensor
        Gradient of the convolution's output.
    inputs : (N, C, H, W) tensor
        The convolution's input, channels-last (a view of a wider channels-last stack is fine).

    Returns
    -------
    (O, C, 3, 3) tensor
        ``dL/dW``, equal to ``torch.ops.aten.convolution_backward``'s weight gradient.

    Notes
    -----
    ``dW[o, c, ky, kx] = Σ_p grad_out[p + (1 - ky, 1 - kx), o] · inputs[p, c]``: the nine shifted copies of the
    output gradient form a ``pixels × 9·O`` matrix, the input a ``pixels × C`` one, and ``dW`` is the first's
    transpose times the second. With ``O = 16`` and ``C`` in the hundreds this ran 1.2–2.7× faster than oneDNN's
    AVX2 backward-weights kernel on FC-DenseNet103's shapes at batch 3 (the narrow side is the one copied).
    """
    n, channels, height, width = inputs.shape
    out_channels = grad_out.shape[1]
    columns = _shifted_columns(grad_out)
    # A channels-last map, or a channel slice of one, is a (pixels × C) matrix with row stride = its stack's width.
    matrix = inputs.permute(0, 2, 3, 1).reshape(n * height * width, channels)
    return (columns.t() @ matrix).view(3, 3, out_channels, channels).permute(2, 3, 0, 1).contiguous()


def fused_path_applies(features: torch.Tensor, training: bool) -> bool:
    """Whether :func:`dense_block_stack` takes the one-buffer path for ``features`` (see the module docstring)."""
    # Channels-last only (the engine's layout on the CPU): dropout masks are drawn in the map's memory order, so
    # this keeps them the very numbers the layer loop would draw.
    return training and channels_last_cpu_training(features)


def _batch_statistics(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of a dense channels-last map, as BatchNorm measures them."""
    # BatchNorm's own statistics kernel: torch.var_mean over (0, 2, 3) of a channels-last map is ~13× slower
    # (104 against 8 ms at 3 × 176 × 224²), and over a channel slice of the stack slower again.
    return torch.batch_norm_update_stats(maps, None, None, 0.0)


def _running_stats_update(norm: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor, count: int) -> None:
    """What ``F.batch_norm(training=True)`` does to ``norm``'s buffers for batch statistics ``mean``, ``var``."""
    if not norm.track_running_stats or norm.running_mean is None or norm.running_var is None:
        return
    assert norm.num_batches_tracked is not None
    norm.num_batches_tracked.add_(1)
    factor = (1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum)
    # PyTorch keeps the unbiased variance in running_var while normalising by the biased one.
    unbiased = var * (count / max(count - 1, 1))
    norm.running_mean.mul_(1.0 - factor).add_(mean.to(norm.running_mean.dtype), alpha=factor)
    norm.running_var.mul_(1.0 - factor).add_(unbiased.to(norm.running_var.dtype), alpha=factor)


class _DenseBlockStack(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, features: torch.Tensor, layers: Sequence[nn.Module],
                draw_mask: Callable[[torch.Tensor, float], torch.Tensor], *weights: torch.Tensor) -> torch.Tensor:
        n, start, height, width = features.shape
        growth = layers[0].conv.out_channels
        total = start + len(layers) * growth
        count = n * height * width
        stack = torch.empty((n, total, height, width), dtype=features.dtype, device=features.device,
                            memory_format=_CHANNELS_LAST)
        stack[:, :start] = features
        mean, var = _batch_statistics(features)
        means, variances = [mean], [var]
        saved_maps, masks, invstds = [], [], []
        for i, layer in enumerate(layers):
            width_in = start + i * growth
            mean, var = torch.cat(means), torch.cat(variances)
            _running_stats_update(layer.norm, mean, var, count)
            invstd = torch.rsqrt(var + layer.norm.eps)
            scale = layer.norm.weight * invstd
            shift = layer.norm.bias - mean * scale
            # BatchNorm with the measured statistics, then ReLU, in place on the fresh map.
            normed = torch.addcmul(shift.view(1, -1, 1, 1), stack[:, :width_in], scale.view(1, -1, 1, 1))
            normed = _dense_channels_last(normed).clamp_min_(0)
            new = F.conv2d(normed, layer.conv.weight, None, 1, 1)
            p = getattr(layer.drop, "p", 0.0)
            mask = draw_mask(new, p) if 0.0 < p < 1.0 else None
            if mask is not None:
                new = new * mask
            stack[:, width_in:width_in + growth] = new
            mean, var = _batch_statistics(new)
            means.append(mean)
            variances.append(var)
            saved_maps.append(normed)
            masks.append(mask)
            invstds.append(invstd)
        ctx.layers = layers
        ctx.start, ctx.growth = start, growth
        ctx.masks, ctx.invstds = masks, invstds
        ctx.means = torch.cat(means[:-1])
        ctx.save_for_backward(stack, *saved_maps)
        return stack

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        stack, *saved_maps = ctx.saved_tensors
        start, growth, layers = ctx.start, ctx.growth, ctx.layers
        # The gradient stack, written in place: a copy, since autograd may hold the incoming one elsewhere.
        total = torch.empty_like(stack).copy_(grad)
        weight_grads: list[torch.Tensor | None] = []
        for i in reversed(range(len(layers))):
            layer = layers[i]
            width_in = start + i * growth
            new_grad = total[:, width_in:width_in + growth]
            mask = ctx.masks[i]
            new_grad = new_grad * mask if mask is not None else _dense_channels_last(new_grad)
            normed = saved_maps[i]
            weight_grad = conv3x3_weight_grad(new_grad, normed)
            map_grad = torch.ops.aten.convolution_backward(
                new_grad, normed, layer.conv.weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                [True, False, False],
            )[0]
            # ReLU: no gradient where it clamped (the saved map is the clamped one).
            map_grad = torch.ops.aten.threshold_backward(map_grad, normed, 0)
            norm = layer.norm
            # PyTorch's CPU BatchNorm backward is ~30× slower on a channel slice of the stack than on a dense
            # copy of it (0.49 s against 17 ms at 176 of 240 channels, 3 × 224²), so it gets the copy.
            input_grad, gamma_grad, beta_grad = torch.ops.aten.native_batch_norm_backward(
                map_grad, _dense_channels_last(stack[:, :width_in]), norm.weight, None, None,
                ctx.means[:width_in], ctx.invstds[i], True, norm.eps, [True, True, True],
            )
            total[:, :width_in] += input_grad
            weight_grads.append(weight_grad)
            weight_grads.append(beta_grad)
            weight_grads.append(gamma_grad)
        weight_grads.reverse()  # now gamma, beta, conv weight of layer 0, then layer 1, …
        return (_dense_channels_last(total[:, :start]), None, None, *weight_grads)


def dense_block_stack(features: torch.Tensor, layers: Sequence[nn.Module],
                      draw_mask: Callable[[torch.Tensor, float], torch.Tensor]) -> torch.Tensor:
    """The input with every layer's new maps after it, ``for layer: features = cat([features, layer(features)])``,
    computed in one buffer (module docstring).

    Parameters
    ----------
    features : (N, C0, H, W) tensor
        The block's input.
    layers : sequence of modules
        Dense layers with ``norm`` (BatchNorm2d over their input), ``conv`` (3×3, padding 1, no bias, ``g``
        filters) and ``drop`` (element-wise dropout with rate ``p``, or identity); layer ``l`` takes
        ``C0 + l·g`` channels. Their BatchNorm running statistics are updated as a forward pass would.
    draw_mask : callable
        ``draw_mask(like, p)``: the dropout mask the layers' ``drop`` would multiply ``like`` by (drawn in the
        same order, so both paths use the same random numbers).

    Returns
    -------
    (N, C0 + len(layers)·g, H, W) tensor
        Channels-last.
    """
    # Passed so that autograd hands them their gradients; forward reads the same tensors through ``layers``.
    weights = [tensor for layer in layers for tensor in (layer.norm.weight, layer.norm.bias, layer.conv.weight)]
    return _DenseBlockStack.apply(features, layers, draw_mask, *weights)
