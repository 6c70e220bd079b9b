"""DeepLabv3+ (Chen et al. 2018) with the modified aligned Xception-65 backbone, at output stride 16.

The MIDL 2019 paper used the widely used Keras implementation (bonlime/keras-deeplab-v3-plus); this follows its
layout, which fixes every bias and BatchNorm and so the parameter count:

* separable conv = depthwise 3×3 (dilated, no bias) → BN → pointwise 1×1 (no bias) → BN, with the ReLU either
  before the depthwise conv (Xception's pre-activation, ``depth_activation=False``) or after each BN
  (``depth_activation=True``: the last exit block, ASPP and decoder);
* entry flow: conv 3×3/2 32 → BN → ReLU, conv 3×3 64 → BN → ReLU (no biases); Xception blocks of three
  separable convs with 128, 256 and 728 filters, each striding by 2 in its last conv and with a 1×1 conv + BN
  shortcut; the low-level features are the 256 block's second separable conv (stride 4);
* middle flow: 16 blocks of 3×728 with identity shortcuts;
* exit flow: (728, 1024, 1024) with a conv shortcut, then (1536, 1536, 2048) without shortcut at rate 2;
* ASPP: image pooling (1×1 conv, no bias → BN → ReLU), 1×1 branch, separable branches at rates 6, 12, 18, all
  256 channels; concatenated → 1×1 256 → BN → ReLU → dropout 0.1;
* decoder: bilinear up-sampling ×4, low-level 1×1 → 48 → BN → ReLU, concatenation, two separable convs of 256,
  1×1 → classes (with bias), bilinear up-sampling ×4 to the input size.

With 1 input channel and 3 classes this counts 41,253,011 Keras-style (41,050,211 trainable + 202,800 BatchNorm
running statistics), 12 fewer than the paper's 41,253,023: one extra BatchNorm on the 3 logits (4 × 3 weights)
would explain the difference, but nothing in the paper says so, so we do not add it.

BatchNorm keeps torch's defaults (momentum 0.1, eps 1e-5) rather than Keras' (0.99, 1e-3): the statistics
settle faster in short CPU runs and the count is the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cytolens.core.errors import OptionError
from cytolens.segment.models import PAPER_RECIPE, SegmentationModel, register_segmentation_model
from cytolens.segment.pointwise import PointwiseConv2d

__all__ = ["DeepLabV3Plus", "DepthwiseConv2d", "SeparableConv", "XceptionBlock", "deeplabv3plus_xception65"]


def _space_to_batch(maps: torch.Tensor, rate: int) -> torch.Tensor:
    """``(N, C, H, W)`` → ``(N·rate², C, ⌈H/rate⌉, ⌈W/rate⌉)``: the ``rate × rate`` interleaved sub-grids (zero-padded
    at the bottom and right to whole multiples of ``rate``), channels-last."""
    n, channels, height, width = maps.shape
    rows, cols = -(-height // rate), -(-width // rate)
    if rows * rate != height or cols * rate != width:
        maps = F.pad(maps, (0, cols * rate - width, 0, rows * rate - height))
    # Rearranged as (N, H, W, C) so that every copied piece is a run of C contiguous channels.
    pixels = maps.permute(0, 2, 3, 1).reshape(n, rows, rate, cols, rate, channels)
    grids = pixels.permute(0, 2, 4, 1, 3, 5).reshape(n * rate * rate, rows, cols, channels)
    return grids.permute(0, 3, 1, 2)


def _batch_to_space(grids: torch.Tensor, rate: int, height: int, width: int) -> torch.Tensor:
    """The inverse of :func:`_space_to_batch`, cropped to ``height × width``; channels-last."""
    batch, channels, rows, cols = grids.shape
    n = batch // (rate * rate)
    pixels = grids.permute(0, 2, 3, 1).reshape(n, rate, rate, rows, cols, channels)
    maps = pixels.permute(0, 3, 1, 4, 2, 5).reshape(n, rows * rate, cols * rate, channels)
    return maps[:, :height, :width].permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def _tap_sum(maps: torch.Tensor, weight: torch.Tensor, rate: int) -> torch.Tensor:
    """A depthwise 3×3 convolution with padding and dilation ``rate`` as a sum of its nine taps, each a per-channel
    multiply-add over the part of the map it reaches (none, for a tap further away than the map is wide)."""
    height, width = maps.shape[-2:]
    out = maps * weight[:, 0, 1, 1].view(1, -1, 1, 1)
    for ky in range(3):
        for kx in range(3):
            dy, dx = (ky - 1) * rate, (kx - 1) * rate
            if (dy, dx) == (0, 0) or abs(dy) >= height or abs(dx) >= width:
                continue
            # out[y, x] += w · maps[y + dy, x + dx] wherever both lie inside the map.
            target = out[:, :, max(0, -dy):height - max(0, dy), max(0, -dx):width - max(0, dx)]
            source = maps[:, :, max(0, dy):height - max(0, -dy), max(0, dx):width - max(0, -dx)]
            target.addcmul_(source, weight[:, 0, ky, kx].view(1, -1, 1, 1))
    return out


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise 3×3 convolution (``groups = channels``, ``padding = dilation``, no bias) that trains without
    oneDNN's dilated kernels on the CPU.

    oneDNN's CPU backward of a dilated depthwise convolution is slow: at 3 × 1024 × 14² and rate 2 its data
    gradient took 13× and its weight gradient 27× its forward (5.1 and 10.5 ms against 0.39 ms; fp32, 2-core AVX2
    CPU), where the undilated kernels take about what the forward takes. So in training on the CPU a dilated one
    is computed as the same function another way:

    * the undilated convolution of the ``rate × rate`` interleaved sub-grids (space-to-batch; a rate-``r``
      convolution only ever combines pixels of one sub-grid) where each sub-grid is at least 3 × 3;
    * else (a rate close to the map's size, as ASPP's 12 and 18 on a 14 × 14 map) the sum of its nine taps, each a
      per-channel multiply-add over the part of the map it reaches.

    Forward and backward of the 2048-channel convolutions at 14², batch 3, rates 2 / 6 / 12 / 18: 3.5 / 10 / 18 /
    3 ms against 33 / 53 / 83 / 50 ms. Inference, undilated convolutions and other devices keep torch's kernel.
    """

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Convolve ``features`` (N, C, H, W)."""
        rate = self.dilation[0]
        if (rate == 1 or features.device.type != "cpu" or not torch.is_grad_enabled() or self.bias is not None
                or self.stride != (1, 1) or self.dilation != (rate, rate) or self.padding != (rate, rate)
                or self.kernel_size != (3, 3) or self.groups != self.in_channels or features.dim() != 4):
            return super().forward(features)
        height, width = features.shape[-2:]
        if -(-height // rate) < 3 or -(-width // rate) < 3:
            # Sub-grids of one or two pixels would be thousands of tiny maps.
            return _tap_sum(features, self.weight, rate)
        grids = F.conv2d(_space_to_batch(features, rate), self.weight, None, 1, 1, 1, self.groups)
        return _batch_to_space(grids, rate, height, width)


class SeparableConv(nn.Sequential):
    """Depthwise 3×3 (dilated) → BN → pointwise 1×1 → BN, with ReLU before (``depth_activation=False``) or
    after each BN (``depth_activation=True``)."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, rate: int = 1,
                 depth_activation: bool = False) -> None:
        super().__init__()
        if not depth_activation:
            # Not in-place: the block's input is also its shortcut.
            self.relu_in = nn.ReLU()
        self.depthwise = DepthwiseConv2d(in_channels, in_channels, 3, stride=stride, padding=rate, dilation=rate,
                                         groups=in_channels, bias=False)
        self.depthwise_bn = nn.BatchNorm2d(in_channels)
        if depth_activation:
            self.depthwise_relu = nn.ReLU(inplace=True)
        self.pointwise = PointwiseConv2d(in_channels, out_channels, bias=False)
        self.pointwise_bn = nn.BatchNorm2d(out_channels)
        if depth_activation:
            self.pointwise_relu = nn.ReLU(inplace=True)


class XceptionBlock(nn.Module):
    """Three separable convs (the last one strided) plus a shortcut: ``"conv"`` (1×1 conv + BN), ``"sum"``
    (identity) or ``"none"``. :meth:`forward` returns the output and the second separable conv's output."""

    def __init__(self, in_channels: int, depths: Sequence[int], *, shortcut: str, stride: int = 1, rate: int = 1,
                 depth_activation: bool = False) -> None:
        super().__init__()
        channels = [in_channels, *depths]
        self.convs = nn.ModuleList(
            SeparableConv(channels[i], channels[i + 1], stride=stride if i == 2 else 1, rate=rate,
                          depth_activation=depth_activation)
            for i in range(3)
        )
        self.shortcut_type = shortcut
        if shortcut == "conv":
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, depths[-1], 1, stride=stride, bias=False), nn.BatchNorm2d(depths[-1])
            )

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(output, features after the second separable conv)``."""
        residual = inputs
        second = inputs
        for i, conv in enumerate(self.convs):
            residual = conv(residual)
            if i == 1:
                second = residual
        if self.shortcut_type == "conv":
            residual = residual + self.shortcut(inputs)
        elif self.shortcut_type == "sum":
            residual = residual + inputs
        return residual, second


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1) -> nn.Sequential:
    conv = (PointwiseConv2d(in_channels, out_channels, bias=False) if (kernel_size, stride) == (1, 1) else
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False))
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class XceptionBackbone(nn.Module):
    """Modified aligned Xception-65 at output stride 16; returns ``(features /16, low-level features /4)``."""

    def __init__(self, in_chans: int, middle_blocks: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv_bn_relu(in_chans, 32, 3, stride=2), _conv_bn_relu(32, 64, 3))
        self.entry1 = XceptionBlock(64, (128, 128, 128), shortcut="conv", stride=2)
        self.entry2 = XceptionBlock(128, (256, 256, 256), shortcut="conv", stride=2)
        self.entry3 = XceptionBlock(256, (728, 728, 728), shortcut="conv", stride=2)
        self.middle = nn.ModuleList(XceptionBlock(728, (728,) * 3, shortcut="sum") for _ in range(middle_blocks))
        self.exit1 = XceptionBlock(728, (728, 1024, 1024), shortcut="conv")
        self.exit2 = XceptionBlock(1024, (1536, 1536, 2048), shortcut="none", rate=2, depth_activation=True)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, _ = self.entry1(self.stem(images))
        features, low_level = self.entry2(features)
        features, _ = self.entry3(features)
        for block in self.middle:
            features, _ = block(features)
        features, _ = self.exit1(features)
        features, _ = self.exit2(features)
        return features, low_level


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: image pooling, 1×1 and three separable atrous branches, projected to 256."""

    def __init__(self, in_channels: int, rates: Sequence[int] = (6, 12, 18), channels: int = 256) -> None:
        super().__init__()
        self.image_pooling = nn.Sequential(nn.AdaptiveAvgPool2d(1), _conv_bn_relu(in_channels, channels))
        self.branches = nn.ModuleList(
            [_conv_bn_relu(in_channels, channels)]
            + [SeparableConv(in_channels, channels, rate=rate, depth_activation=True) for rate in rates]
        )
        self.project = nn.Sequential(_conv_bn_relu(channels * (len(rates) + 2), channels), nn.Dropout(0.1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = self.image_pooling(features).expand(-1, -1, *features.shape[-2:])  # a 1×1 map: up-sampling = copy
        return self.project(torch.cat([pooled, *(branch(features) for branch in self.branches)], dim=1))


class DeepLabV3Plus(SegmentationModel):
    """DeepLabv3+ with the modified aligned Xception-65 backbone at output stride 16.

    Modules: ``backbone`` (``stem``, ``entry1-3``, ``middle.{i}``, ``exit1-2``), ``aspp``, ``low_level``
    (1×1 → 48), ``decoder`` (two separable convs), ``head`` (1×1 with bias). Convolutions are He-normal
    initialised (fan-out), BatchNorm weight 1 and bias 0.

    Parameters
    ----------
    num_classes : int
        Output channels (logits).
    in_chans : int
        Input channels.
    atrous_rates : sequence of int, optional
        Rates of the three separable ASPP branches (6, 12, 18 at output stride 16).
    middle_blocks : int, optional
        Middle-flow blocks (16 for Xception-65).

    Attributes
    ----------
    input_multiple : int
        16, the output stride; H and W must be multiples of it.

    Notes
    -----
    The image-pooling branch normalises a 1×1 map, so training-mode BatchNorm needs a batch of at least 2;
    :meth:`forward` says so clearly instead of failing inside BatchNorm.
    """

    input_multiple = 16

    def __init__(self, *, num_classes: int, in_chans: int, atrous_rates: Sequence[int] = (6, 12, 18),
                 middle_blocks: int = 16) -> None:
        super().__init__()
        if (isinstance(atrous_rates, (str, bytes)) or not isinstance(atrous_rates, Sequence) or not atrous_rates
                or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in atrous_rates)):
            raise OptionError(f"`atrous_rates` must be a non-empty sequence of positive integers, got {atrous_rates!r}")
        if isinstance(middle_blocks, bool) or not isinstance(middle_blocks, int) or middle_blocks < 0:
            raise OptionError(f"`middle_blocks` must be a non-negative integer, got {middle_blocks!r}")
        self.in_chans, self.num_classes = in_chans, num_classes
        self.backbone = XceptionBackbone(in_chans, middle_blocks)
        self.aspp = ASPP(2048, atrous_rates)
        self.low_level = _conv_bn_relu(256, 48)
        self.decoder = nn.Sequential(
            SeparableConv(256 + 48, 256, depth_activation=True), SeparableConv(256, 256, depth_activation=True)
        )
        self.head = nn.Conv2d(256, num_classes, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map ``(N, in_chans, H, W)`` images to ``(N, num_classes, H, W)`` logits."""
        self.check_input(images)
        if self.training and images.shape[0] < 2:
            raise OptionError(
                "DeepLabV3Plus needs a batch of at least 2 images in training mode (its image-pooling BatchNorm "
                f"sees one value per channel per image), got {images.shape[0]}; use model.eval() for inference"
            )
        features, low_level = self.backbone(images)
        features = _resize(self.aspp(features), low_level)
        features = self.decoder(torch.cat([features, self.low_level(low_level)], dim=1))
        return _resize(self.head(features), images)


def _resize(features: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # align_corners=True as TensorFlow's DeepLab (and the Keras port) resize.
    return F.interpolate(features, size=like.shape[-2:], mode="bilinear", align_corners=True)


@register_segmentation_model(recipe=dict(PAPER_RECIPE))
def deeplabv3plus_xception65(*, num_classes: int, in_chans: int = 1,
                             atrous_rates: Sequence[int] = (6, 12, 18)) -> DeepLabV3Plus:
    """DeepLabv3+ / Xception-65, OS 16 (41,253,011 Keras-style parameters at 1 channel, 3 classes)."""
    return DeepLabV3Plus(num_classes=num_classes, in_chans=in_chans, atrous_rates=atrous_rates)
