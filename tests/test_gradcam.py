"""Tests for cytolens.classify.gradcam."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cytolens.classify import create_model, list_models
from cytolens.classify.gradcam import grad_cam
from cytolens.core.errors import OptionError

SIZE = 32
SQUARE = (slice(8, 15), slice(21, 28))  # rows, cols of the bright square, in the right half


def _right_half_detector() -> nn.Module:
    """A convnet whose class-1 logit counts bright pixels in the right half of the image, set by hand.

    conv1 filter 0 is a centred delta with bias -0.5, so only pixels brighter than 0.5 activate it; fc1 unit 0
    sums that channel over the right half of the pooled map; the head copies unit 0 into logit 1. Class 0 has
    all-zero weights, so nothing in the image is evidence for it.
    """
    model = create_model("convnet", num_classes=2, input_size=SIZE, conv_filters=[8], kernel_sizes=[3],
                         pooling=True, dense_units=[16], dropout=0.0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.features.conv1.weight[0, 0, 1, 1] = 1.0
        model.features.conv1.bias[0] = -0.5
        mask = torch.zeros(8, 15, 15)  # (C, H, W) after conv 30 -> pool 15
        mask[0, :, 8:] = 1.0
        model.classifier.fc1.weight[0] = mask.flatten()
        model.classifier.head.weight[1, 0] = 1.0
    return model


def _square_images(n: int = 2) -> torch.Tensor:
    rng = np.random.default_rng(0)
    images = rng.uniform(0.0, 0.3, (n, 1, SIZE, SIZE)).astype(np.float32)
    images[:, :, SQUARE[0], SQUARE[1]] = 1.0
    return torch.from_numpy(images)


def test_cam_concentrates_on_the_evidence() -> None:
    model = _right_half_detector()
    images = _square_images()
    assert (model(images).argmax(dim=1) == 1).all()
    cams = grad_cam(model, images)  # target None -> predicted class 1; layer None -> features.relu1
    assert cams.shape == (2, SIZE, SIZE) and cams.dtype == np.float32
    assert cams.min() >= 0.0 and cams.max() == pytest.approx(1.0)
    region = np.zeros((SIZE, SIZE), bool)
    region[6:17, 19:30] = True  # the square plus the blur of one 30 -> 32 upsampling step
    for cam in cams:
        assert cam[region].sum() / cam.sum() > 0.95
        assert cam[:, : SIZE // 2].max() == 0.0


def test_cam_without_evidence_is_zero_not_nan() -> None:
    model = _right_half_detector()
    cams = grad_cam(model, _square_images(), target=0)  # class 0 has no weights at all
    assert not np.isnan(cams).any()
    assert (cams == 0).all()
    # An image with no bright pixel gives no evidence for class 1 either.
    dark = torch.full((1, 1, SIZE, SIZE), 0.1)
    assert (grad_cam(model, dark, target=1) == 0).all()


def test_per_image_targets() -> None:
    model = _right_half_detector()
    cams = grad_cam(model, _square_images(), target=[1, 0])
    assert cams[0].max() == pytest.approx(1.0) and (cams[1] == 0).all()
    with pytest.raises(OptionError, match="one class per image"):
        grad_cam(model, _square_images(), target=[1])
    with pytest.raises(OptionError, match=r"\[0, 1\]"):
        grad_cam(model, _square_images(), target=2)


@pytest.mark.parametrize("train_mode", [True, False])
def test_model_state_is_left_untouched(train_mode: bool) -> None:
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=3, input_size=64).train(train_mode)
    before = {k: v.clone() for k, v in model.state_dict().items()}  # BN statistics too: eval mode during the call
    images = torch.rand(2, 1, 64, 64)
    original = images.clone()
    cams = grad_cam(model, images)
    assert cams.shape == (2, 64, 64) and np.isfinite(cams).all()
    assert cams.min() >= 0.0 and cams.max() <= 1.0
    assert model.training is train_mode
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(images, original) and not images.requires_grad
    layer4 = model.layer4
    assert not layer4._forward_hooks and not layer4._backward_hooks


@pytest.mark.parametrize("name", list_models())
def test_every_model_has_a_working_default_layer(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, input_size=32)
    cams = grad_cam(model, torch.rand(3, 1, 32, 32), layer=None)
    assert cams.shape == (3, 32, 32) and ((cams >= 0) & (cams <= 1)).all()


def test_frozen_model_and_no_grad_context_still_work() -> None:
    model = _right_half_detector().requires_grad_(False)
    with torch.no_grad():
        cams = grad_cam(model, _square_images(1))
    assert cams.max() == pytest.approx(1.0)


def test_explicit_layer_and_unknown_layer() -> None:
    model = _right_half_detector()
    cams = grad_cam(model, _square_images(1), layer="features.conv1")
    assert cams.shape == (1, SIZE, SIZE)
    with pytest.raises(OptionError, match=r"'features.relu9'.*Did you mean.*features.conv1"):
        grad_cam(model, _square_images(1), layer="features.relu9")
    with pytest.raises(OptionError, match="feature map"):
        grad_cam(model, _square_images(1), layer="classifier.fc1")
    assert not any(m._forward_hooks for m in model.modules())


def test_bad_images_are_rejected() -> None:
    model = _right_half_detector()
    with pytest.raises(OptionError, match="images"):
        grad_cam(model, torch.rand(1, SIZE, SIZE))
    with pytest.raises(OptionError, match="images"):
        grad_cam(model, torch.zeros(1, 1, SIZE, SIZE, dtype=torch.uint8))
