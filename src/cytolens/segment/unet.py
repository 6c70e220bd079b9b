"""The custom U-Net of the MIDL 2019 paper (section 2.1, Fig. 1), after Ronneberger et al. 2015.

Four 2×2 max-poolings from 16 filters (levels 16-32-64-128), a 256-filter bottleneck without pooling, two 3×3
'same' convolutions + ReLU per level, 2×2 stride-2 transposed convolutions for up-sampling, concatenation skips
and a 1×1 head. The paper gives neither the bias nor the BatchNorm placement; the ``batch_norm`` option chooses
one of three variants, counted Keras-style at 1 input channel and 3 classes (paper: 1,942,023):

===============  ============================================================  ===========  =========
``batch_norm``   placement                                                     Keras count  vs paper
===============  ============================================================  ===========  =========
``"none"``       Ronneberger's layout, every convolution with a bias             1,940,851   −0.060 %
``"upsampling"`` as ``"none"`` + BatchNorm after each transposed convolution     1,941,811   −0.011 %
``"all"``        + BatchNorm after every 3×3 convolution too (→ conv → BN → ReLU)  1,947,699   +0.292 %
===============  ============================================================  ===========  =========

``"upsampling"`` is the default because it comes closest to the paper's count. Exact matches exist only for
contrived layouts (e.g. a BatchNorm on the input image plus BN on selected levels), which we did not adopt.
The paper puts an L2 penalty of 1e-4 on every convolutional layer: :meth:`UNet.regularized_parameters`
yields all convolution kernels (3×3, transposed and head; no biases, no BatchNorm), as
:func:`cytolens.engine.optimizers.create_optimizer` expects for its ``l2``, and the registry recipe carries
``l2=1e-4``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from cytolens.core.errors import OptionError, check_choice
from cytolens.segment.concat import concat_channels
from cytolens.segment.models import PAPER_RECIPE, SegmentationModel, register_segmentation_model

__all__ = ["BATCH_NORM_CHOICES", "UNet", "unet"]

BatchNormPlacement = Literal["none", "upsampling", "all"]
BATCH_NORM_CHOICES: tuple[str, ...] = ("none", "upsampling", "all")


def _double_conv(in_channels: int, out_channels: int, batch_norm: bool) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, channels in enumerate((in_channels, out_channels), start=1):
        # Keras' Conv2D keeps use_bias=True even before BatchNorm, and the "all" count (1,947,699) assumes so.
        layers[f"conv{i}"] = nn.Conv2d(channels, out_channels, 3, padding=1)
        if batch_norm:
            layers[f"bn{i}"] = nn.BatchNorm2d(out_channels)
        layers[f"relu{i}"] = nn.ReLU(inplace=True)
    return nn.Sequential(layers)


class UNet(SegmentationModel):
    """U-Net with ``len(filters)`` poolings, a bottleneck, transposed-conv up-sampling and concatenation skips.

    Modules: ``encoder.{i}`` (double convs), ``bottleneck``, ``upsample.{i}`` (transposed convs, + BatchNorm),
    ``decoder.{i}`` (double convs), ``head`` (1×1 conv), with ``i`` from the top level down for the encoder and
    from the bottom up for the decoder. Kernels are Glorot-uniform and biases zero, as Keras initialises them.

    Parameters
    ----------
    num_classes : int
        Output channels (logits).
    in_chans : int
        Input channels.
    filters : sequence of int, optional
        Filters per level, top to bottom; one 2×2 max-pool follows each level.
    bottleneck : int, optional
        Filters of the bottleneck's two convolutions.
    batch_norm : {"none", "upsampling", "all"}, optional
        Where BatchNorm goes (see the module's table).

    Attributes
    ----------
    input_multiple : int
        ``2 ** len(filters)`` (16 for the paper's U-Net); H and W must be multiples of it.
    """

    def __init__(self, *, num_classes: int, in_chans: int, filters: Sequence[int] = (16, 32, 64, 128),
                 bottleneck: int = 256, batch_norm: BatchNormPlacement = "upsampling") -> None:
        super().__init__()
        check_choice("batch_norm", batch_norm, BATCH_NORM_CHOICES)
        if isinstance(filters, (str, bytes)) or not isinstance(filters, Sequence) or not filters or any(
            isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in (*filters, bottleneck)
        ):
            raise OptionError(
                f"`filters` must be a non-empty sequence of positive integers and `bottleneck` a positive integer, "
                f"got filters={filters!r}, bottleneck={bottleneck!r}"
            )
        self.in_chans, self.num_classes = in_chans, num_classes
        self.input_multiple = 2 ** len(filters)
        conv_bn = batch_norm == "all"
        self.encoder = nn.ModuleList()
        channels = in_chans
        for width in filters:
            self.encoder.append(_double_conv(channels, width, conv_bn))
            channels = width
        self.pool = nn.MaxPool2d(2, 2)
        self.bottleneck = _double_conv(channels, bottleneck, conv_bn)
        channels = bottleneck
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for width in reversed(filters):
            up: list[nn.Module] = [nn.ConvTranspose2d(channels, width, 2, stride=2)]
            if batch_norm != "none":
                up.append(nn.BatchNorm2d(width))
            self.upsample.append(nn.Sequential(*up))
            self.decoder.append(_double_conv(2 * width, width, conv_bn))
            channels = width
        self.head = nn.Conv2d(channels, num_classes, 1)
        for module in self.modules():
            if isinstance(module, nn.modules.conv._ConvNd):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map ``(N, in_chans, H, W)`` images to ``(N, num_classes, H, W)`` logits."""
        self.check_input(images)
        skips = []
        features = images
        for level in self.encoder:
            features = level(features)
            skips.append(features)
            features = self.pool(features)
        features = self.bottleneck(features)
        for up, level, skip in zip(self.upsample, self.decoder, reversed(skips)):
            features = level(concat_channels([up(features), skip]))
        return self.head(features)


@register_segmentation_model(recipe={**PAPER_RECIPE, "l2": 1e-4})
def unet(*, num_classes: int, in_chans: int = 1, filters: Sequence[int] = (16, 32, 64, 128), bottleneck: int = 256,
         batch_norm: BatchNormPlacement = "upsampling") -> UNet:
    """The paper's U-Net (1,941,811 Keras-style parameters at 1 channel, 3 classes; see :class:`UNet`)."""
    return UNet(num_classes=num_classes, in_chans=in_chans, filters=filters, bottleneck=bottleneck,
                batch_norm=batch_norm)
