"""Where segment's CPU training paths run: the maps they were measured on.

FC-DenseNet's one-buffer dense blocks (:mod:`cytolens.segment.dense_block`) and the 1×1 convolutions as matrix
products (:mod:`cytolens.segment.pointwise`) were timed in fp32 on channels-last CPU maps with gradients on and no
autocast; everywhere else (inference, tracing, NCHW, bf16 autocast, CUDA) the models keep torch's own layers.
"""

from __future__ import annotations

import torch

__all__ = ["channels_last_cpu_training"]


def channels_last_cpu_training(features: torch.Tensor) -> bool:
    """Whether ``features`` is a map the CPU training paths take: gradients on, not tracing, a 4-D channels-last
    CPU tensor of float32 or float64, outside CPU autocast."""
    return (torch.is_grad_enabled() and not torch.jit.is_tracing() and features.device.type == "cpu"
            and features.dim() == 4 and features.dtype in (torch.float32, torch.float64)
            and features.is_contiguous(memory_format=torch.channels_last) and not torch.is_autocast_enabled("cpu"))
