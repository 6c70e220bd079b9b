"""1×1 convolutions that train as one matrix product over the pixels of a channels-last map.

A 1×1, stride-1 convolution of a channels-last ``(N, C, H, W)`` map is the ``(N·H·W × C)`` pixel matrix times the
``(C × O)`` kernel, and its two gradients are matrix products too. On a 2-core AVX2 CPU in fp32, PyTorch's matrix
product (the BLAS sgemm) ran the forward and backward of DeepLabv3+'s 1×1 convolutions 1.17× faster than
oneDNN's convolution kernels over the shapes of one training step at batch 3 (998 against 1165 ms; 165 against
147 GFLOP/s for its fifty 728 → 728 convolutions at 14²). The whole training step: DeepLabv3+ 1.06× at batch 3
and 1.11× at 16, FC-DenseNet103 1.03× at 3 and 8 (medians of three alternating rounds of ``cytolens bench``;
1.07× for DeepLabv3+ at batch 3 in 15 alternating pairs of steps in one process).

:class:`PointwiseConv2d` takes that path where it was measured: CPU training (gradients enabled) on a
channels-last map in fp32 or fp64 outside autocast. Inference, tracing, NCHW maps, bf16 autocast (not timed on a
bf16 machine) and other devices keep torch's convolution. The module is an ``nn.Conv2d`` with the same parameters
and state_dict keys, so checkpoints and exported models are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cytolens.segment.cpu_training import channels_last_cpu_training

__all__ = ["PointwiseConv2d"]


class PointwiseConv2d(nn.Conv2d):
    """A 1×1 convolution (stride 1, no padding, one group) that trains as a matrix product on the CPU.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels in and out.
    bias : bool, default True
        Whether the convolution adds a learnt bias.
    """

    def __init__(self, in_channels: int, out_channels: int, *, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Convolve ``features`` (N, C, H, W); the result is channels-last on the matrix-product path."""
        if not channels_last_cpu_training(features):
            return super().forward(features)
        out_channels, channels = self.weight.shape[:2]
        # A channels-last map permuted to (N, H, W, C) is dense: the pixel matrix without a copy. The product
        # (N, H, W, O) permuted back is again a channels-last (N, O, H, W) map.
        pixels = features.permute(0, 2, 3, 1)
        return F.linear(pixels, self.weight.reshape(out_channels, channels), self.bias).permute(0, 3, 1, 2)
