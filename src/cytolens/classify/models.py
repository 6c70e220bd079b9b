"""Image classifiers, built by name from a registry.

Every model maps a float32 batch ``(N, in_chans, input_size, input_size)`` to raw logits ``(N, num_classes)``;
the softmax lives in the loss (``torch.nn.CrossEntropyLoss``). Models are always trained from scratch: nothing
here downloads weights.

>>> model = create_model("shpilman2017", num_classes=3)
>>> count_parameters(model)
{'trainable': 10924339, 'total': 10924339, 'keras': 10924339}

Registered models
-----------------
``shpilman2017``
    The network of Shpilman et al. 2017 (section IV, Fig. 4), exactly as Keras builds it.
``convnet``
    The paper's topology search space as one configurable family (1-5 convolutions, optional pooling,
    1-4 hidden dense layers); its defaults are the published topology.
``resnet18``
    ResNet-18 (He et al. 2016) in plain torch, with a configurable number of input channels
    (:mod:`cytolens.classify.resnet`).

Each model carries ``gradcam_layer``, the name (as in ``dict(model.named_modules())``) of the module whose output
Grad-CAM explains by default, and :func:`model_recipe` gives the training settings a model was published with.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from cytolens.core.errors import OptionError
from cytolens.core.registry import Registry
from cytolens.core.validation import check_int, check_number

__all__ = [
    "CONVNET_LIMITS", "MODELS", "ConvNet", "convnet_feature_sizes", "create_model", "list_models", "model_recipe", "register_model",
]

ModelBuilder = Callable[..., nn.Module]


#: Every classifier, by name. Builders take ``num_classes``, ``in_chans`` and ``input_size`` plus their own
#: options and return an ``nn.Module`` with a ``gradcam_layer`` attribute; metadata holds the ``recipe``.
MODELS: Registry[nn.Module] = Registry("model", common_options=("num_classes", "in_chans", "input_size"))

#: Ranges of the paper's search space (section IV), enforced by the ``convnet`` family.
CONVNET_LIMITS: dict[str, tuple[int, int]] = {
    "conv_layers": (1, 5), "conv_filters": (8, 256), "kernel_sizes": (2, 5), "dense_layers": (1, 4),
    "dense_units": (16, 512),
}

# Shpilman et al. 2017, section IV. Keras' Nadam(schedule_decay=0.004) is torch.optim.NAdam(momentum_decay=0.004);
# both default to betas (0.9, 0.999) and eps 1e-8. "l2" is Keras' kernel_regularizer, l2 * sum(w**2) over the
# kernels: create_optimizer applies its gradient as torch's coupled weight decay 2 * l2 on the kernels only.
_PAPER_RECIPE: dict[str, Any] = {
    "optimizer": "nadam", "lr": 0.002, "momentum_decay": 0.004, "betas": (0.9, 0.999), "eps": 1e-8,
    "l2": 0.01, "weight_decay": 0.0, "batch_size": 32, "dropout": 0.5, "loss": "cross_entropy",
    "early_stopping_patience": 2,
}


def register_model(
    builder: ModelBuilder | None = None, /, *, name: str | None = None, recipe: Mapping[str, Any] | None = None
) -> ModelBuilder | Callable[[ModelBuilder], ModelBuilder]:
    """Register a model builder under its function name (or ``name``), timm style.

    Use bare (``@register_model``) or with options (``@register_model(recipe={...})``); ``recipe`` is returned
    by :func:`model_recipe`.
    """
    decorator = MODELS.register(name=name, recipe=dict(recipe or {}))
    return decorator(builder) if builder is not None else decorator


def list_models() -> list[str]:
    """Return the names of all registered models, sorted."""
    return MODELS.names()


def model_recipe(name: str) -> dict[str, Any]:
    """Return a copy of the default training settings of model ``name`` (optimizer, lr, l2, batch size ...)."""
    return MODELS.metadata(name)["recipe"]


def create_model(
    name: str, *, num_classes: int, in_chans: int = 1, input_size: int = 300, **options: Any
) -> nn.Module:
    """Build a registered model with freshly initialised weights.

    Parameters
    ----------
    name : str
        A name from :func:`list_models`.
    num_classes : int
        Number of output logits.
    in_chans : int, optional
        Channels of the input images (1 for grayscale microscopy).
    input_size : int, optional
        Side of the square input, in pixels; fixes the flatten size of networks with dense layers.
    **options
        Model-specific options (see each builder).

    Returns
    -------
    torch.nn.Module
        Maps ``(N, in_chans, input_size, input_size)`` float32 to logits ``(N, num_classes)``.

    Raises
    ------
    OptionError
        For an unknown model or option, or an option out of range.
    """
    for option, value in (("num_classes", num_classes), ("in_chans", in_chans), ("input_size", input_size)):
        check_int(option, value, low=1)
    model = MODELS.create(name, num_classes=num_classes, in_chans=in_chans, input_size=input_size, **options)
    model.model_name = name  # so checkpoints and reports can say what was built
    return model


def _check_int_list(
    name: str, values: Sequence[int], length: tuple[int, int], value_range: tuple[int, int]
) -> list[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise OptionError(f"`{name}` must be a sequence of integers, got {values!r}")
    if not length[0] <= len(values) <= length[1]:
        raise OptionError(
            f"`{name}` must have {length[0]} to {length[1]} entries, got {len(values)}: {list(values)!r}"
        )
    for value in values:
        check_int(name, value, low=value_range[0], high=value_range[1])
    return list(values)


# --- The paper's family of plain convolutional networks ---


def convnet_feature_sizes(input_size: int, kernel_sizes: Sequence[int], pooling: bool) -> list[int]:
    """Side of the feature map after each conv (+ pool) block, with Keras' 'valid' padding and stride 1.

    Parameters
    ----------
    input_size : int
        Side of the square input.
    kernel_sizes : sequence of int
        Kernel side of each convolution.
    pooling : bool
        Whether a 2×2/2 max-pool (floor division, as Keras) follows each convolution.

    Returns
    -------
    list of int
        One side per block; a value ≤ 0 means the map vanished there.
    """
    sizes, side = [], input_size
    for kernel in kernel_sizes:
        side = side - kernel + 1
        if pooling and side > 0:
            side //= 2
        sizes.append(side)
    return sizes


class ConvNet(nn.Module):
    """Conv (+MaxPool, +ReLU) blocks, flatten, hidden dense layers (+ReLU, +Dropout), linear head.

    Module names follow ``features.conv{i}``, ``features.relu{i}``, ``features.pool{i}``, ``classifier.fc{j}``,
    ``classifier.relu_fc{j}``, ``classifier.dropout{j}`` and ``classifier.head`` (1-based). Dropout follows each
    hidden dense layer (after its ReLU), never the convolutions or the head: the paper gives one rate and Keras
    examples of the time placed it there. Weights use Keras' defaults (Glorot-uniform kernels, zero biases).

    Parameters
    ----------
    num_classes, in_chans, input_size : int
        See :func:`create_model`.
    conv_filters : sequence of int
        Filters per convolution, 1-5 layers of 8-256.
    kernel_sizes : sequence of int
        Kernel side per convolution, 2-5, one per convolution.
    pooling : bool
        A 2×2/2 max-pool after each convolution.
    dense_units : sequence of int
        Units per hidden dense layer, 1-4 layers of 16-512.
    dropout : float
        Dropout rate in [0, 1) after each hidden dense layer.
    """

    def __init__(self, *, num_classes: int, in_chans: int, input_size: int, conv_filters: Sequence[int],
                 kernel_sizes: Sequence[int], pooling: bool, dense_units: Sequence[int], dropout: float) -> None:
        super().__init__()
        limits = CONVNET_LIMITS
        conv_filters = _check_int_list("conv_filters", conv_filters, limits["conv_layers"], limits["conv_filters"])
        kernel_sizes = _check_int_list("kernel_sizes", kernel_sizes, limits["conv_layers"], limits["kernel_sizes"])
        if len(kernel_sizes) != len(conv_filters):
            raise OptionError(
                f"`kernel_sizes` needs one entry per convolution ({len(conv_filters)}), got {kernel_sizes!r}"
            )
        dense_units = _check_int_list("dense_units", dense_units, limits["dense_layers"], limits["dense_units"])
        if not isinstance(pooling, bool):
            raise OptionError(f"`pooling` must be True or False, got {pooling!r}")
        check_number("dropout", dropout, low=0, high=1, high_open=True)
        sizes = convnet_feature_sizes(input_size, kernel_sizes, pooling)
        if min(sizes) <= 0:
            block = next(i for i, side in enumerate(sizes) if side <= 0) + 1
            raise OptionError(
                f"`input_size` {input_size} is too small for kernels {kernel_sizes} with pooling={pooling}: the "
                f"feature map vanishes at convolution {block}; use a larger input_size or fewer layers"
            )

        features: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_chans
        for i, (filters, kernel) in enumerate(zip(conv_filters, kernel_sizes), start=1):
            features[f"conv{i}"] = nn.Conv2d(channels, filters, kernel)  # 'valid' padding, stride 1, bias
            # Max-pooling before the ReLU gives what Keras' conv → ReLU → pool gives, values and gradients (both
            # are monotone, and max picks the same element), with the ReLU and its backward pass on a map 4×
            # smaller: the largest single saving of the paper's network, whose first map is 16×299×299.
            if pooling:
                features[f"pool{i}"] = nn.MaxPool2d(2, 2)
            features[f"relu{i}"] = nn.ReLU()  # not in-place: Grad-CAM hooks keep this output
            channels = filters
        classifier: OrderedDict[str, nn.Module] = OrderedDict()
        # Flattened as (C, H, W), Keras as (H, W, C): same count; a Keras weight import would permute fc1.
        width = channels * sizes[-1] ** 2
        for j, units in enumerate(dense_units, start=1):
            classifier[f"fc{j}"] = nn.Linear(width, units)
            classifier[f"relu_fc{j}"] = nn.ReLU()
            classifier[f"dropout{j}"] = nn.Dropout(dropout)
            width = units
        classifier["head"] = nn.Linear(width, num_classes)
        self.features = nn.Sequential(features)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(classifier)
        self.input_size = input_size
        self.gradcam_layer = f"features.relu{len(conv_filters)}"
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Map ``(N, in_chans, S, S)`` images to ``(N, num_classes)`` logits."""
        return self.classifier(self.flatten(self.features(images)))


_PAPER_TOPOLOGY: dict[str, Any] = {
    "conv_filters": (16, 64), "kernel_sizes": (2, 3), "pooling": True, "dense_units": (32, 32), "dropout": 0.5,
}


@register_model(recipe=_PAPER_RECIPE)
def shpilman2017(*, num_classes: int, in_chans: int = 1, input_size: int = 300) -> ConvNet:
    """Shpilman et al. 2017: conv16@2×2, pool, conv64@3×3, pool, fc32, fc32, head (10,924,339 params at 3 classes)."""
    return ConvNet(num_classes=num_classes, in_chans=in_chans, input_size=input_size, **_PAPER_TOPOLOGY)


@register_model(recipe=_PAPER_RECIPE)
def convnet(*, num_classes: int, in_chans: int = 1, input_size: int = 300,
            conv_filters: Sequence[int] = _PAPER_TOPOLOGY["conv_filters"],
            kernel_sizes: Sequence[int] = _PAPER_TOPOLOGY["kernel_sizes"], pooling: bool = True,
            dense_units: Sequence[int] = _PAPER_TOPOLOGY["dense_units"], dropout: float = 0.5) -> ConvNet:
    """A network from the paper's topology search space (see :class:`ConvNet`); defaults are the published one."""
    return ConvNet(num_classes=num_classes, in_chans=in_chans, input_size=input_size, conv_filters=conv_filters,
                   kernel_sizes=kernel_sizes, pooling=pooling, dense_units=dense_units, dropout=dropout)


# resnet18 registers itself with register_model above; imported here, once this module is complete, so that every
# registered model is there whichever module a caller imports first.
from cytolens.classify import resnet as _resnet  # noqa: E402, F401

