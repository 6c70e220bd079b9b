"""ResNet-18 (He et al. 2016) in plain torch, from scratch, for any number of input channels.

A modern comparison for the paper's small network; torchvision is not used (its wheel does not match the CPU
torch build here) and no pretrained weights are loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cytolens.classify.models import register_model
from cytolens.core.validation import check_number
from cytolens.core.errors import OptionError

__all__ = ["BasicBlock", "ResNet", "resnet18"]

_RESNET_RECIPE: dict[str, Any] = {
    "optimizer": "adamw", "lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "l2": 0.0, "weight_decay": 1e-4,
    "batch_size": 32, "loss": "cross_entropy", "scheduler": "cosine", "early_stopping_patience": 5,
}


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with an identity (or 1×1 conv-BN projection) shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block forward."""
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + shortcut)


class ResNet(nn.Module):
    """ResNet with basic blocks (He et al. 2016), global average pooling and a linear head.

    Parameters
    ----------
    num_classes, in_chans : int
        See :func:`create_model`.
    layers : sequence of int
        Blocks per stage; ``(2, 2, 2, 2)`` is ResNet-18.
    zero_init_residual : bool
        Start each block's last BN gamma at 0 so every block begins as the identity (Goyal et al. 2017).
    drop_rate : float
        Dropout before the head.
    """

    def __init__(self, *, num_classes: int, in_chans: int, layers: Sequence[int] = (2, 2, 2, 2),
                 zero_init_residual: bool = False, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, channels = [], 64
        for index, (blocks, width) in enumerate(zip(layers, (64, 128, 256, 512))):
            stride = 1 if index == 0 else 2
            stage = [BasicBlock(channels, width, stride)] + [BasicBlock(width, width, 1) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            channels = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(channels, num_classes)
        self.gradcam_layer = "layer4"
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, BasicBlock):
                    nn.init.zeros_(module.bn2.weight)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map ``(N, in_chans, H, W)`` images (any size ≥ 1; 32× downsampling) to ``(N, num_classes)`` logits."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.dropout(self.flatten(self.global_pool(x))))


@register_model(recipe=_RESNET_RECIPE)
def resnet18(*, num_classes: int, in_chans: int = 1, input_size: int = 300, zero_init_residual: bool = False,
             drop_rate: float = 0.0) -> ResNet:
    """ResNet-18 from scratch; global pooling makes it independent of ``input_size`` (kept for a uniform API)."""
    if not isinstance(zero_init_residual, bool):
        raise OptionError(f"`zero_init_residual` must be True or False, got {zero_init_residual!r}")
    check_number("drop_rate", drop_rate, low=0, high=1, high_open=True)
    model = ResNet(
        num_classes=num_classes, in_chans=in_chans, zero_init_residual=zero_init_residual, drop_rate=drop_rate
    )
    model.input_size = input_size
    return model
