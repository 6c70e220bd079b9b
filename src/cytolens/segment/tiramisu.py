"""FC-DenseNet103, "the one hundred layers Tiramisu" (Jégou et al. 2017), as the MIDL 2019 paper used it.

A 3×3 convolution with 48 filters, five dense blocks (4, 5, 7, 10, 12 layers) each followed by a transition down,
a 15-layer bottleneck block, then five transition ups each followed by a dense block (12, 10, 7, 5, 4 layers)
and a 1×1 head; growth rate 16, dropout 0.2.

* dense layer = BN → ReLU → 3×3 conv (growth-rate filters) → dropout; a block concatenates every layer's output
  onto its input;
* transition down = BN → ReLU → 1×1 conv (as many filters as inputs) → dropout → 2×2 max-pool;
* transition up = 3×3 stride-2 transposed conv applied only to the maps the previous dense block created
  (not its input, which would blow up the up path), concatenated with the skip of the same resolution.

Counting: with 1 input channel and 3 classes this is exactly the paper's 9,419,011 Keras-style parameters
(9,315,939 trainable + 103,072 BatchNorm running statistics) when the first, dense and transition-down convs
have no bias and the five transposed convs and the head have one, which is the layout built here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cytolens.core.errors import OptionError
from cytolens.segment.dense_block import dense_block_stack, fused_path_applies
from cytolens.segment.models import PAPER_RECIPE, SegmentationModel, register_segmentation_model
from cytolens.segment.pointwise import PointwiseConv2d

__all__ = ["FCDenseNet", "FastDropout", "fcdensenet103"]

#: Layers per dense block of FC-DenseNet103: five down, the bottleneck, five up.
FCDENSENET103_BLOCKS: tuple[int, ...] = (4, 5, 7, 10, 12, 15, 12, 10, 7, 5, 4)


def _dense(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` covers its memory densely in its own order (contiguous or channels-last)."""
    return tensor.is_contiguous() or (tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last))


def _scaled_keep_mask(like: torch.Tensor, p: float) -> torch.Tensor:
    """``1 / (1 - p)`` where an element is kept (probability ``1 - p``), else 0; dtype, shape and strides of
    ``like`` (dense, see :func:`_dense`); drawn from a PCG64 stream seeded by torch's generator."""
    # torch's CPU bernoulli_ draws one Mersenne-Twister number per element and then needs two more passes
    # (the 1/(1-p) scaling, the multiply); PCG64 fills 32-bit words several times faster. The seed comes from
    # torch's generator, so torch.manual_seed still fixes every mask and a resumed run (which restores torch's
    # RNG state) draws the same ones.
    seed = int(torch.randint(0, 2**63 - 1, (1,), dtype=torch.int64).item())
    words = np.random.default_rng(seed).integers(0, 2**32, size=like.numel(), dtype=np.uint32)
    # keep ⇔ word ≥ round(p · 2**32): P(drop) = p to within 2**-33, finer than torch.rand's 2**-24 steps.
    keep = torch.from_numpy(words >= np.uint32(min(round(p * 2**32), 2**32 - 1)))
    flat = torch.zeros(like.numel(), dtype=like.dtype).masked_fill_(keep, 1.0 / (1.0 - p))
    # Laid out in like's memory order, so the multiply runs over both tensors in one contiguous pass.
    return flat.as_strided(like.shape, like.stride())


class FastDropout(nn.Dropout):
    """Element-wise dropout, as :class:`torch.nn.Dropout`, with a cheaper random stream on the CPU.

    Same distribution (each element kept with probability ``1 - p`` and scaled by ``1 / (1 - p)``; identity in
    eval mode), same state (none) and repr; on the CPU the mask comes from :func:`_scaled_keep_mask`, elsewhere
    it is torch's own dropout. The random numbers differ from torch's, the function computed does not.
    """

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Drop elements of ``features`` in training mode; return it unchanged in eval mode."""
        if (not self.training or not 0.0 < self.p < 1.0 or features.device.type != "cpu" or self.inplace
                or not _dense(features)):
            return super().forward(features)
        return features * _scaled_keep_mask(features, self.p)


class _DenseLayer(nn.Sequential):
    def __init__(self, in_channels: int, growth_rate: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, growth_rate, 3, padding=1, bias=False)
        self.drop = FastDropout(dropout) if dropout else nn.Identity()


class _DenseBlock(nn.Module):
    """Returns only the ``layers × growth_rate`` new maps; callers concatenate the input where they need it."""

    def __init__(self, in_channels: int, layers: int, growth_rate: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            _DenseLayer(in_channels + i * growth_rate, growth_rate, dropout) for i in range(layers)
        )
        self.new_channels = layers * growth_rate

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The ``layers × growth_rate`` maps the block creates (not its input)."""
        return self.stack(features)[:, features.shape[1]:]

    def stack(self, features: torch.Tensor) -> torch.Tensor:
        """The input with every new map after it: ``cat([features, forward(features)], dim=1)``, built as each
        layer's input anyway, so the block's output costs no further concatenation."""
        if fused_path_applies(features, self.training):
            return dense_block_stack(features, self.layers, _scaled_keep_mask)
        # One growing stack instead of cat([features, *new]) per layer: the same bytes per layer, one piece fewer
        # per cat, and no final cat(new) nor the caller's cat([features, new]) (a copy of the whole stack each).
        for layer in self.layers:
            features = torch.cat([features, layer(features)], dim=1)
        return features


class _TransitionDown(nn.Sequential):
    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = PointwiseConv2d(channels, channels, bias=False)
        self.drop = FastDropout(dropout) if dropout else nn.Identity()
        self.pool = nn.MaxPool2d(2, 2)


def _match_size(features: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # The transposed conv doubles the size exactly; a skip of odd size (only reachable by calling the blocks
    # directly, forward checks input_multiple) is one pixel larger or smaller: centre-crop or zero-pad to it.
    dh, dw = like.shape[-2] - features.shape[-2], like.shape[-1] - features.shape[-1]
    if dh == 0 and dw == 0:
        return features
    return F.pad(features, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))  # negative padding crops


class FCDenseNet(SegmentationModel):
    """Fully convolutional DenseNet (Jégou et al. 2017).

    Modules: ``stem`` (first conv), ``down_blocks.{i}`` / ``transitions_down.{i}``, ``bottleneck``,
    ``transitions_up.{i}`` / ``up_blocks.{i}``, ``head``. Convolutions are He-uniform initialised, as in the
    authors' Lasagne code.

    Parameters
    ----------
    num_classes : int
        Output channels (logits).
    in_chans : int
        Input channels.
    stem_filters : int, optional
        Filters of the first 3×3 convolution (48).
    growth_rate : int, optional
        Maps each dense layer adds (16).
    block_layers : sequence of int, optional
        Layers per dense block, down blocks, bottleneck and up blocks: an odd length ``2 * d + 1``
        (FC-DenseNet103's by default).
    dropout : float, optional
        Dropout rate (element-wise, as Lasagne) after every dense-layer and transition-down convolution (0.2).

    Attributes
    ----------
    input_multiple : int
        ``2 ** d`` (32 for FC-DenseNet103).
    """

    def __init__(self, *, num_classes: int, in_chans: int, stem_filters: int = 48, growth_rate: int = 16,
                 block_layers: Sequence[int] = FCDENSENET103_BLOCKS, dropout: float = 0.2) -> None:
        super().__init__()
        if (isinstance(block_layers, (str, bytes)) or not isinstance(block_layers, Sequence)
                or len(block_layers) % 2 == 0 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1
                                                     for n in block_layers)):
            raise OptionError(
                f"`block_layers` must be an odd-length sequence of positive integers, got {block_layers!r}"
            )
        for option, value in (("stem_filters", stem_filters), ("growth_rate", growth_rate)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OptionError(f"`{option}` must be a positive integer, got {value!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise OptionError(f"`dropout` must be a number in [0, 1), got {dropout!r}")
        depth = len(block_layers) // 2
        down, middle, up = block_layers[:depth], block_layers[depth], block_layers[depth + 1:]
        self.in_chans, self.num_classes = in_chans, num_classes
        self.input_multiple = 2 ** depth

        self.stem = nn.Conv2d(in_chans, stem_filters, 3, padding=1, bias=False)
        self.down_blocks, self.transitions_down = nn.ModuleList(), nn.ModuleList()
        channels, skip_channels = stem_filters, []
        for layers in down:
            self.down_blocks.append(_DenseBlock(channels, layers, growth_rate, dropout))
            channels += layers * growth_rate
            skip_channels.append(channels)
            self.transitions_down.append(_TransitionDown(channels, dropout))
        self.bottleneck = _DenseBlock(channels, middle, growth_rate, dropout)
        new_channels = middle * growth_rate
        self.transitions_up, self.up_blocks = nn.ModuleList(), nn.ModuleList()
        for layers, skip in zip(up, reversed(skip_channels)):
            self.transitions_up.append(
                nn.ConvTranspose2d(new_channels, new_channels, 3, stride=2, padding=1, output_padding=1)
            )
            channels = new_channels + skip
            self.up_blocks.append(_DenseBlock(channels, layers, growth_rate, dropout))
            new_channels = layers * growth_rate
        # The last block's input stays in the stack the head sees; only inner up blocks drop it.
        self.head = nn.Conv2d(channels + new_channels, num_classes, 1)
        for module in self.modules():
            if isinstance(module, nn.modules.conv._ConvNd):
                nn.init.kaiming_uniform_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map ``(N, in_chans, H, W)`` images to ``(N, num_classes, H, W)`` logits."""
        self.check_input(images)
        features = self.stem(images)
        skips = []
        for block, transition in zip(self.down_blocks, self.transitions_down):
            features = block.stack(features)
            skips.append(features)
            features = transition(features)
        stack = self.bottleneck.stack(features)
        new = stack[:, features.shape[1]:]
        for transition, block, skip in zip(self.transitions_up, self.up_blocks, reversed(skips)):
            stack = block.stack(torch.cat([_match_size(transition(new), skip), skip], dim=1))
            new = stack[:, stack.shape[1] - block.new_channels:]
        return self.head(stack)


@register_segmentation_model(recipe=dict(PAPER_RECIPE))
def fcdensenet103(*, num_classes: int, in_chans: int = 1, dropout: float = 0.2) -> FCDenseNet:
    """FC-DenseNet103 (9,419,011 Keras-style parameters at 1 channel, 3 classes; see :class:`FCDenseNet`)."""
    return FCDenseNet(num_classes=num_classes, in_chans=in_chans, dropout=dropout)
