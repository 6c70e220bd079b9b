"""Semantic-segmentation networks, built by name from a registry.

Every model maps a float32 batch ``(N, in_chans, H, W)`` to raw logits ``(N, num_classes, H, W)`` at the input's
size; the softmax lives in the loss. ``H`` and ``W`` must be multiples of the model's ``input_multiple`` (the
product of its down-sampling strides), checked in ``forward`` with an :class:`~cytolens.core.errors.OptionError`.
Nothing here downloads weights.

>>> model = create_model("fcdensenet103", num_classes=3)
>>> count_parameters(model)["keras"] == PAPER_PARAMETERS["fcdensenet103"]
True

Registered models (counts at 1 input channel, 3 classes; Keras counting adds BatchNorm running statistics)
---------------------------------------------------------------------------------------------------------
``unet``
    The paper's custom U-Net, 16-32-64-128 filters and a 256 bottleneck (:mod:`cytolens.segment.unet`);
    1,941,811 Keras-style, 0.011 % under the paper's 1,942,023. ``input_multiple`` 16.
``fcdensenet103``
    FC-DenseNet103 "Tiramisu" (Jégou et al. 2017; :mod:`cytolens.segment.tiramisu`); exactly the paper's
    9,419,011. ``input_multiple`` 32.
``deeplabv3plus_xception65``
    DeepLabv3+ with the modified aligned Xception-65 at output stride 16 (:mod:`cytolens.segment.deeplab`);
    41,253,011, 12 under the paper's 41,253,023. ``input_multiple`` 16.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from cytolens.engine.parameters import count_parameters
from cytolens.core.errors import OptionError
from cytolens.core.registry import Registry

__all__ = [
    "PAPER_PARAMETERS", "PAPER_RECIPE", "SEGMENTATION_MODELS", "SegmentationModel", "count_parameters",
    "create_model", "list_models", "register_segmentation_model",
    "segmentation_model_recipe",
]

#: Parameter counts in Table 1 of the MIDL 2019 paper (Keras counting), for reports to compare against.
PAPER_PARAMETERS: dict[str, int] = {
    "unet": 1_942_023, "fcdensenet103": 9_419_011, "deeplabv3plus_xception65": 41_253_023,
}

# MIDL 2019 section 3: Adam 1e-3 halved every 50 epochs for 300 epochs, categorical cross-entropy, 224×224
# class-balanced patches, batch 3 per GPU. "l2" is Keras' kernel_regularizer, l2 * Σ w² over the kernels
# (create_optimizer applies its gradient as weight decay); the paper states it for the U-Net only, so the others
# default to 0.
PAPER_RECIPE: dict[str, Any] = {
    "optimizer": "adam", "lr": 1e-3, "lr_halving_epochs": 50, "epochs": 300, "loss": "cross_entropy",
    "patch_size": 224, "batch_size": 3, "l2": 0.0, "weight_decay": 0.0,
}

#: The registry; the architecture modules register into it (imported at the end of this module).
SEGMENTATION_MODELS: Registry[SegmentationModel] = Registry(
    "segmentation model", common_options=("num_classes", "in_chans")
)
register_segmentation_model = SEGMENTATION_MODELS.register


class SegmentationModel(nn.Module):
    """Base class: an input-size check and the set of kernels the L2 penalty applies to.

    Subclasses set ``input_multiple`` (the product of their down-sampling strides), ``in_chans`` and
    ``num_classes``, and call :meth:`check_input` first thing in ``forward``.
    """

    input_multiple: int = 1
    in_chans: int = 1
    num_classes: int = 1
    model_name: str = ""  # set by create_model

    def check_input(self, images: torch.Tensor) -> None:
        """Check that ``images`` is ``(N, in_chans, H, W)`` with H and W multiples of ``input_multiple``.

        Raises
        ------
        OptionError
            Naming the expected shape or ``input_multiple`` and the nearest valid size.
        """
        if images.ndim != 4 or images.shape[1] != self.in_chans:
            raise OptionError(
                f"{type(self).__name__} expects images of shape (N, {self.in_chans}, H, W), got {tuple(images.shape)}"
            )
        height, width = images.shape[-2:]
        if height % self.input_multiple or width % self.input_multiple:
            raise OptionError(
                f"{type(self).__name__} needs H and W that are multiples of input_multiple={self.input_multiple} "
                f"(its total down-sampling), got {height}×{width}; crop or pad the image, e.g. to "
                f"{_round_up(height, self.input_multiple)}×{_round_up(width, self.input_multiple)}"
            )

    def regularized_parameters(self) -> Iterator[nn.Parameter]:
        """Kernels the L2 penalises (``create_optimizer(..., l2=)``): every convolution kernel, no biases, no
        BatchNorm."""
        for module in self.modules():
            if isinstance(module, nn.modules.conv._ConvNd):
                yield module.weight


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def list_models() -> list[str]:
    """Return the names of all registered segmentation models, sorted."""
    return SEGMENTATION_MODELS.names()


def segmentation_model_recipe(name: str) -> dict[str, Any]:
    """Return a copy of the training settings model ``name`` was published with (optimizer, lr, l2 …)."""
    return dict(SEGMENTATION_MODELS.metadata(name).get("recipe", {}))


def create_model(name: str, *, num_classes: int, in_chans: int = 1, **options: Any) -> SegmentationModel:
    """Build a registered segmentation model with freshly initialised weights.

    Parameters
    ----------
    name : str
        A name from :func:`list_models`.
    num_classes : int
        Number of output channels (3 in the paper: background, nucleus, cytoplasm).
    in_chans : int, optional
        Channels of the input images (1 for bright-field).
    **options
        Model-specific options (see each builder; :meth:`Registry.options` lists them).

    Returns
    -------
    SegmentationModel
        Maps ``(N, in_chans, H, W)`` float32 to logits ``(N, num_classes, H, W)``; ``model.model_name`` is
        ``name`` and ``model.input_multiple`` the size H and W must be multiples of.

    Raises
    ------
    OptionError
        For an unknown model or option, or an option out of range.
    """
    for option, value in (("num_classes", num_classes), ("in_chans", in_chans)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise OptionError(f"`{option}` must be an integer >= 1, got {value!r}")
    model = SEGMENTATION_MODELS.create(name, num_classes=num_classes, in_chans=in_chans, **options)
    model.model_name = name  # so checkpoints and reports can say what was built
    return model


# Register the built-in architectures whenever this module is imported (timm style: each module registers its
# own builders). At the end because they import the names above; also safe when an architecture module is
# imported first, as Python then finds it, partially initialised, in sys.modules.
from cytolens.segment import deeplab as _deeplab  # noqa: E402,F401
from cytolens.segment import tiramisu as _tiramisu  # noqa: E402,F401
from cytolens.segment import unet as _unet  # noqa: E402,F401
