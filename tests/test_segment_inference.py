"""Tiled whole-image inference and segmentation export (cytolens.segment.inference)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from torch import nn

from cytolens.core.errors import OptionError
from cytolens.segment.inference import predict_tiled, predict_tiled_labels
from cytolens.segment.outputs import write_segmentation
from cytolens.data.transforms import DIHEDRAL_SIZE, dihedral, inverse_dihedral

TILING = {"tile": 32, "overlap": 16, "input_multiple": 8, "batch_size": 3}


def _conv_model(in_channels: int = 1, *, kernel: int = 3, padding_mode: str = "zeros") -> nn.Module:
    """Two convolutions: receptive-field radius 2 for 3×3 kernels, 0 (rotation-equivariant) for 1×1."""
    torch.manual_seed(0)
    pad = kernel // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, 4, kernel, padding=pad, padding_mode=padding_mode),
        nn.ReLU(),
        nn.Conv2d(4, 3, kernel, padding=pad, padding_mode=padding_mode),
    )


def _whole(model: nn.Module, image: np.ndarray) -> np.ndarray:
    planes = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(np.ascontiguousarray(planes))[None]), 1)[0].numpy()


def _image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("shape", [(70, 90), (64, 47, 2)])
def test_tiled_equals_whole_image(shape: tuple[int, ...]) -> None:
    image = _image(shape)
    model = _conv_model(shape[2] if len(shape) == 3 else 1)
    tiled = predict_tiled(model, image, num_classes=3, **TILING)
    assert tiled.shape == (3,) + shape[:2] and tiled.dtype == np.float32
    np.testing.assert_allclose(tiled, _whole(model, image), atol=1e-5)


def test_constant_input_gives_constant_output_across_tile_borders() -> None:
    model = _conv_model(padding_mode="replicate")
    image = np.full((75, 83), 0.7, np.float32)
    tiled = predict_tiled(model, image, num_classes=3, **TILING)
    np.testing.assert_allclose(tiled, np.broadcast_to(tiled[:, :1, :1], tiled.shape), atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (13, 9), (20, 9), (33, 31), (17, 100)])
def test_odd_and_small_sizes(shape: tuple[int, int]) -> None:
    image = _image(shape, seed=1)
    model = _conv_model()
    tiled = predict_tiled(model, image, num_classes=3, **TILING)
    assert tiled.shape == (3,) + shape
    np.testing.assert_allclose(tiled.sum(axis=0), 1.0, atol=1e-5)
    if max(shape) <= 32:
        # One tile: the image reflect-padded to a multiple of 8, predicted whole, cropped back.
        padded_shape = [-(-n // 8) * 8 for n in shape]
        mode = "reflect" if min(shape) > 1 else "edge"
        padded = np.pad(image, [(0, p - n) for p, n in zip(padded_shape, shape)], mode=mode)
        np.testing.assert_allclose(tiled, _whole(model, padded)[:, : shape[0], : shape[1]], atol=1e-5)


def test_tta_with_an_equivariant_model_changes_nothing() -> None:
    model = _conv_model(kernel=1)
    image = _image((40, 52), seed=2)
    plain = predict_tiled(model, image, num_classes=3, **TILING)
    np.testing.assert_allclose(predict_tiled(model, image, num_classes=3, tta=True, **TILING), plain, atol=1e-6)


@pytest.mark.parametrize("shape", [(40, 40), (20, 9)])
def test_tta_maps_every_prediction_back(shape: tuple[int, int]) -> None:
    model = _conv_model()
    image = _image(shape, seed=3)
    tiled = predict_tiled(model, image, num_classes=3, tta=True, tile=64, overlap=16, input_multiple=1)
    expected = np.mean(
        [
            inverse_dihedral(_whole(model, dihedral(image, i)).transpose(1, 2, 0), i).transpose(2, 0, 1)
            for i in range(DIHEDRAL_SIZE)
        ],
        axis=0,
    )
    np.testing.assert_allclose(tiled, expected, atol=1e-5)


def test_labels_equal_argmax_and_progress_counts_the_tiles() -> None:
    model = _conv_model()
    image = _image((70, 45), seed=4)
    probabilities = predict_tiled(model, image, num_classes=3, **TILING)
    calls: list[tuple[int, int]] = []
    labels = predict_tiled_labels(model, image, num_classes=3, progress=lambda d, t: calls.append((d, t)), **TILING)
    assert labels.dtype == np.uint8 and labels.shape == (70, 45)
    np.testing.assert_array_equal(labels, probabilities.argmax(axis=0))
    assert calls[-1][0] == calls[-1][1] == 8  # tiles start at rows 0, 16, 32, 38 and columns 0, 13


def test_model_mode_is_restored_and_bad_options_are_named() -> None:
    model = _conv_model()
    model.train()
    image = _image((20, 20))
    predict_tiled(model, image, num_classes=3, **TILING)
    assert model.training
    with pytest.raises(OptionError, match="expected"):
        predict_tiled(model, image, num_classes=4, **TILING)
    with pytest.raises(OptionError, match="multiple of `input_multiple`"):
        predict_tiled(model, image, num_classes=3, tile=30, input_multiple=8)
    with pytest.raises(OptionError, match="overlap"):
        predict_tiled(model, image, num_classes=3, tile=32, overlap=20, input_multiple=8)
    with pytest.raises(OptionError, match="float32"):
        predict_tiled(model, image.astype(np.float64), num_classes=3, **TILING)


def test_write_segmentation_files_open_as_plain_arrays(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, (24, 30)).astype(np.int64)
    probabilities = rng.dirichlet(np.ones(3), size=(24, 30)).transpose(2, 0, 1).astype(np.float32)
    image = rng.integers(0, 16384, (24, 30)).astype(np.uint16)
    written = write_segmentation(tmp_path / "out", "field_01", labels, probabilities=probabilities, image=image)
    assert set(written) == {"labels", "probabilities", "overlay"}

    with tifffile.TiffFile(written["labels"]) as tif:
        assert len(tif.pages) == 1 and tif.pages[0].photometric == tifffile.PHOTOMETRIC.MINISBLACK
        stored = tif.asarray()
    assert stored.ndim == 2 and stored.dtype == np.uint8
    np.testing.assert_array_equal(stored, labels)

    stack = tifffile.imread(written["probabilities"])
    assert stack.shape == (3, 24, 30) and stack.dtype == np.float32
    np.testing.assert_array_equal(stack, probabilities)

    overlay = np.asarray(Image.open(written["overlay"]))
    assert overlay.shape == (24, 30, 3) and overlay.dtype == np.uint8
    background = overlay[labels == 0]
    assert np.all(background[:, 0] == background[:, 1]) and np.all(background[:, 1] == background[:, 2])
    nucleus, cytoplasm = overlay[labels == 1].astype(int), overlay[labels == 2].astype(int)
    assert np.all(nucleus[:, 0] > nucleus[:, 1]) and np.all(cytoplasm[:, 1] > cytoplasm[:, 0])


def test_write_segmentation_wide_labels_and_uint16_probabilities(tmp_path: Path) -> None:
    labels = np.arange(600, dtype=np.int32).reshape(20, 30)
    probabilities = np.full((2, 20, 30), 0.5, np.float32)
    written = write_segmentation(tmp_path, "big", labels, probabilities=probabilities, probability_dtype="uint16")
    stored = tifffile.imread(written["labels"])
    assert stored.dtype == np.uint16 and stored.ndim == 2
    np.testing.assert_array_equal(stored, labels)
    assert set(np.unique(tifffile.imread(written["probabilities"]))) == {32768}
    assert "overlay" not in written
    with pytest.raises(OptionError, match="probability_dtype"):
        write_segmentation(tmp_path, "x", labels, probability_dtype="float16")
