"""Channel concatenation whose backward hands each input a dense gradient.

The backward of ``torch.cat(dim=1)`` gives each input a view into the output's gradient. On a channels-last map
that view strides over the other inputs' channels, and PyTorch's CPU BatchNorm backward takes a slow path for such
a gradient: 44 ms instead of 5 ms for a 3 × 16 × 224 × 224 map, where the U-Net's up-sampling BatchNorm feeds a
concatenation. :func:`concat_channels` copies each piece into its own dense tensor of the gradient's layout
instead, which costs one pass over the gradient (measured on the U-Net's training step: 1.11× the samples/s,
median of three alternating pairs, 2-core CPU, fp32).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["concat_channels"]


class _ConcatChannels(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, *tensors: torch.Tensor) -> torch.Tensor:
        ctx.widths = [tensor.shape[1] for tensor in tensors]
        return torch.cat(tensors, dim=1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
        layout = (torch.channels_last if grad.dim() == 4 and grad.is_contiguous(memory_format=torch.channels_last)
                  else torch.contiguous_format)
        return tuple(piece.contiguous(memory_format=layout) for piece in grad.split(ctx.widths, dim=1))


def concat_channels(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(tensors, dim=1)``, with a dense gradient for each input in backward.

    Parameters
    ----------
    tensors : sequence of (N, C_i, ...) tensor
        The maps to stack along the channels, all on one device with one dtype.

    Returns
    -------
    (N, sum C_i, ...) tensor
        The same values as ``torch.cat``. In backward, each input's gradient is contiguous in the memory format of
        the output's gradient (channels-last or plain) rather than a strided view of it.
    """
    if torch.jit.is_tracing() or not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)):
        # Inference and TorchScript export (segment export traces the network): the plain op, which is what a
        # trace can save.
        return torch.cat(list(tensors), dim=1)
    return _ConcatChannels.apply(*tensors)
