"""Class-balanced patch sampling and the patch dataset (cytolens.segment.sampling)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cytolens.core.errors import OptionError
from cytolens.segment.augment import Augmenter
from cytolens.segment.sampling import (
    ClassPixels,
    PatchDataset,
    PatchRef,
    extract_patch,
    sample_balanced_patches,
    shift_ref,
)


def _label_maps(rng: np.random.Generator, shapes: list[tuple[int, int]]) -> list[np.ndarray]:
    """Mostly background (0), ~30 % cytoplasm (2) and ~2 % nucleus (1)."""
    maps = []
    for shape in shapes:
        values = rng.random(shape)
        label = np.where(values < 0.02, 1, np.where(values < 0.32, 2, 0)).astype(np.int64)
        maps.append(label)
    return maps


def test_centres_are_balanced_over_classes() -> None:
    rng = np.random.default_rng(0)
    labels = _label_maps(rng, [(60, 70), (50, 50), (64, 40)])
    fractions = np.bincount(np.concatenate([m.ravel() for m in labels]), minlength=3) / sum(m.size for m in labels)
    assert fractions[1] < 0.03  # the nucleus is rare
    refs = sample_balanced_patches(labels, n=3000, patch_size=16, num_classes=3, rng=np.random.default_rng(1))
    centre_classes = np.array([labels[r.image_index][r.row, r.col] for r in refs])
    assert np.array_equal(centre_classes, [r.class_index for r in refs])
    shares = np.bincount(centre_classes, minlength=3) / len(refs)
    # Binomial sd at n=3000, p=1/3 is 0.0086; 0.04 is > 4 sd.
    np.testing.assert_allclose(shares, 1 / 3, atol=0.04)


def test_patches_lie_inside_images_and_contain_their_pixel() -> None:
    labels = _label_maps(np.random.default_rng(2), [(40, 33), (20, 50)])
    refs = sample_balanced_patches(labels, n=500, patch_size=20, num_classes=3, rng=np.random.default_rng(3))
    for ref in refs:
        height, width = labels[ref.image_index].shape
        assert 0 <= ref.top <= height - 20 and 0 <= ref.left <= width - 20
        assert ref.top <= ref.row < ref.top + 20 and ref.left <= ref.col < ref.left + 20
        patch = extract_patch(labels[ref.image_index], ref, 20)
        assert patch.shape == (20, 20)
        assert patch[ref.row - ref.top, ref.col - ref.left] == ref.class_index


def test_only_images_containing_the_class_are_drawn() -> None:
    first = np.zeros((20, 20), np.int64)
    second = np.zeros((20, 20), np.int64)
    second[5:8, 5:8] = 1
    refs = sample_balanced_patches([first, second], n=200, patch_size=10, num_classes=2, rng=np.random.default_rng(4))
    assert all(r.image_index == 1 for r in refs if r.class_index == 1)
    assert {r.image_index for r in refs if r.class_index == 0} == {0, 1}


def test_deterministic_per_seed() -> None:
    labels = _label_maps(np.random.default_rng(5), [(30, 30), (32, 28)])
    a = sample_balanced_patches(labels, n=50, patch_size=8, num_classes=3, rng=np.random.default_rng(7))
    b = sample_balanced_patches(labels, n=50, patch_size=8, num_classes=3, rng=np.random.default_rng(7))
    c = sample_balanced_patches(labels, n=50, patch_size=8, num_classes=3, rng=np.random.default_rng(8))
    assert a == b
    assert a != c


def test_margin_keeps_centres_away_from_borders() -> None:
    labels = _label_maps(np.random.default_rng(6), [(30, 40)])
    pixels = ClassPixels(labels, num_classes=3, patch_size=8, margin=5)
    refs = pixels.sample(300, np.random.default_rng(0))
    assert all(5 <= r.row < 25 and 5 <= r.col < 35 for r in refs)
    assert all(labels[0][r.row, r.col] == r.class_index for r in refs)


def test_too_small_image_is_named() -> None:
    labels = [np.zeros((30, 30), np.int64), np.ones((30, 12), np.int64)]
    with pytest.raises(OptionError, match=r"image 1 is 30×12 pixels, smaller than the 16×16 patch"):
        sample_balanced_patches(labels, n=1, patch_size=16, num_classes=2, rng=np.random.default_rng(0))


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([np.full((10, 10), 3, np.int64)], "outside 0..2"),
        ([np.zeros((10, 10), np.int64)], r"classes \[1, 2\] have no pixels"),
        ([np.zeros((10, 10), np.float32)], "integer dtype"),
        ([], "empty"),
    ],
)
def test_bad_labels_are_rejected(labels: list[np.ndarray], message: str) -> None:
    with pytest.raises(OptionError, match=message):
        sample_balanced_patches(labels, n=1, patch_size=4, num_classes=3, rng=np.random.default_rng(0))


@pytest.mark.parametrize("shape", [(12, 10), (12, 10, 3)])
def test_extract_patch_shapes(shape: tuple[int, ...]) -> None:
    array = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape)
    patch = extract_patch(array, PatchRef(0, 2, 3), 5)
    assert patch.shape == (5, 5) + shape[2:] and patch.dtype == np.uint16
    np.testing.assert_array_equal(patch, array[2:7, 3:8])
    with pytest.raises(OptionError, match="outside"):
        extract_patch(array, PatchRef(0, 9, 0), 5)


def test_shift_ref_is_clamped() -> None:
    ref = PatchRef(0, 4, 4, 1, 6, 6)
    assert shift_ref(ref, (-10, 3), (20, 20), 8) == PatchRef(0, 0, 7, 1, 6, 6)
    assert shift_ref(ref, (100, 100), (20, 20), 8) == PatchRef(0, 12, 12, 1, 6, 6)


def _dataset_inputs(channels: int | None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(9)
    labels = _label_maps(rng, [(24, 30), (26, 26)])
    images = []
    for label in labels:
        image = label.astype(np.float32) + 0.1 * rng.standard_normal(label.shape).astype(np.float32)
        images.append(image if channels is None else np.repeat(image[..., None], channels, axis=2))
    return images, labels


@pytest.mark.parametrize("channels", [None, 2])
def test_dataset_items_are_tensors_aligned_with_labels(channels: int | None) -> None:
    images, labels = _dataset_inputs(channels)
    dataset = PatchDataset(images, labels, patches_per_epoch=6, num_classes=3, patch_size=12, seed=1)
    assert len(dataset) == 6
    image, label = dataset[0]
    assert image.shape == (channels or 1, 12, 12) and image.dtype == torch.float32
    assert label.shape == (12, 12) and label.dtype == torch.int64
    for i in range(len(dataset)):
        image, label = dataset[i]
        assert torch.equal(torch.round(image[0]).long(), label)


def test_dataset_epochs_are_reproducible_and_differ() -> None:
    images, labels = _dataset_inputs(None)
    augmenter = Augmenter(max_shift=4, elastic_probability=0.0)
    first = PatchDataset(images, labels, patches_per_epoch=5, num_classes=3, patch_size=10, augment=augmenter, seed=3)
    second = PatchDataset(images, labels, patches_per_epoch=5, num_classes=3, patch_size=10, augment=augmenter, seed=3)
    epoch0 = [first[i][0] for i in range(5)]
    assert all(torch.equal(a, second[i][0]) for i, a in enumerate(epoch0))
    refs0 = first.refs
    first.set_epoch(1)
    assert first.refs != refs0
    first.set_epoch(0)
    assert first.refs == refs0 and all(torch.equal(a, first[i][0]) for i, a in enumerate(epoch0))
    # Shifted crops and symmetries keep image and label aligned.
    for i in range(5):
        image, label = first[i]
        assert torch.equal(torch.round(image[0]).long(), label)


def test_dataset_rejects_mismatched_inputs() -> None:
    images, labels = _dataset_inputs(None)
    with pytest.raises(OptionError, match="does not match"):
        PatchDataset(images, labels[::-1], patches_per_epoch=2, num_classes=3, patch_size=8)
    with pytest.raises(OptionError, match="float32"):
        PatchDataset([im.astype(np.float64) for im in images], labels, patches_per_epoch=2, num_classes=3, patch_size=8)
