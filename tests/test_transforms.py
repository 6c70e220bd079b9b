"""Tests for cytolens.data.transforms: small seeded arrays, shapes × dtypes, Pillow as the reference."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from cytolens.core.errors import OptionError
from cytolens.data.transforms import (
    DEFAULT_INPUT_SIZE,
    DIHEDRAL_SIZE,
    dihedral,
    inverse_dihedral,
    normalize,
    resize,
    rotate90,
    sharpen,
    unsharp_mask,
)

SHAPES = [(7, 9), (7, 9, 3)]
DTYPES = [np.uint8, np.uint16, np.float32]


def random_image(shape: tuple[int, ...], dtype: type, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.random(shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)


def smooth_uint8(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A blob-like uint8 image: realistic for unsharp masking, unlike white noise."""
    from scipy import ndimage

    noise = np.random.default_rng(seed).normal(size=shape)
    sigma = (1.5, 1.5, 0)[: len(shape)]
    return np.clip(ndimage.gaussian_filter(noise, sigma) * 400 + 128, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- dihedral


def test_rotate90_is_clockwise():
    image = np.array([[1, 2, 3], [4, 5, 6]])
    # Clockwise: the left column (read bottom-up) becomes the top row.
    np.testing.assert_array_equal(rotate90(image, 1), [[4, 1], [5, 2], [6, 3]])
    np.testing.assert_array_equal(rotate90(image, 2), [[6, 5, 4], [3, 2, 1]])
    np.testing.assert_array_equal(rotate90(image, 3), [[3, 6], [2, 5], [1, 4]])
    np.testing.assert_array_equal(rotate90(image, -1), rotate90(image, 3))


def test_dihedral_flip_then_rotate():
    image = np.array([[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(dihedral(image, 4), [[3, 2, 1], [6, 5, 4]])
    np.testing.assert_array_equal(dihedral(image, 5), rotate90(image[:, ::-1], 1))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dihedral_group_laws(shape, dtype):
    image = random_image(shape, dtype)
    original = image.copy()
    np.testing.assert_array_equal(rotate90(rotate90(rotate90(rotate90(image, 1), 1), 1), 1), image)
    images = [dihedral(image, index) for index in range(DIHEDRAL_SIZE)]
    for index, transformed in enumerate(images):
        assert transformed.dtype == image.dtype
        assert transformed.flags.c_contiguous
        assert not np.shares_memory(transformed, image)
        np.testing.assert_array_equal(inverse_dihedral(transformed, index), image)
    square = random_image((5, 5) + shape[2:], dtype)
    distinct = {dihedral(square, index).tobytes() for index in range(DIHEDRAL_SIZE)}
    assert len(distinct) == DIHEDRAL_SIZE
    np.testing.assert_array_equal(image, original)


@pytest.mark.parametrize("index", [-1, 8, 1.0, True])
def test_dihedral_rejects_bad_index(index):
    with pytest.raises(OptionError, match="`index`"):
        dihedral(np.zeros((3, 3)), index)


# ---------------------------------------------------------------------------------------------- sharpen


def pillow(image: np.ndarray, image_filter: ImageFilter.Filter) -> np.ndarray:
    return np.asarray(Image.fromarray(image).filter(image_filter))


@pytest.mark.parametrize(
    "shape", [(1, 1), (1, 6), (6, 1), (2, 2), (2, 5), (3, 3), (4, 3), (17, 23), (5, 6, 3), (3, 3, 3)]
)
@pytest.mark.parametrize("seed", range(3))
def test_sharpen_uint8_is_byte_identical_to_pillow(shape, seed):
    image = random_image(shape, np.uint8, seed)
    np.testing.assert_array_equal(sharpen(image), pillow(image, ImageFilter.SHARPEN))


def test_sharpen_rounds_half_up_like_pillow():
    # 16·c − Σn = 4 gives exactly 0.5: Pillow rounds it up to 1.
    image = np.zeros((3, 3), np.uint8)
    image[1, 1] = 1
    image[0, 0] = 12
    assert sharpen(image)[1, 1] == pillow(image, ImageFilter.SHARPEN)[1, 1] == 1


@pytest.mark.parametrize("shape", [(3, 3), (9, 11)])
def test_sharpen_uint16_matches_pillow_i16(shape):
    image = random_image(shape, np.uint16)
    np.testing.assert_array_equal(sharpen(image), pillow(image, ImageFilter.SHARPEN))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_sharpen_keeps_dtype_shape_border_and_input(shape, dtype):
    image = random_image(shape, dtype)
    original = image.copy()
    result = sharpen(image)
    assert result.dtype == image.dtype and result.shape == image.shape
    np.testing.assert_array_equal(result[0], image[0])
    np.testing.assert_array_equal(result[:, -1], image[:, -1])
    np.testing.assert_array_equal(image, original)


def test_sharpen_16bit_is_not_clipped_to_8_bits():
    image = np.random.default_rng(0).integers(40000, 60000, (16, 16)).astype(np.uint16)
    result = sharpen(image)
    assert result.dtype == np.uint16
    assert result.max() == 65535  # high-contrast noise saturates the 16-bit range, not 255
    assert np.median(result) > 255


def test_sharpen_float_is_linear_and_unclipped():
    image = random_image((6, 7), np.float64)
    centre = image[1:-1, 1:-1]
    neighbours = sum(
        image[dy : dy + 4, dx : dx + 5] for dy in range(3) for dx in range(3) if (dy, dx) != (1, 1)
    )
    np.testing.assert_allclose(sharpen(image)[1:-1, 1:-1], 2 * centre - neighbours / 8)
    assert sharpen(image).max() > 1 or sharpen(image).min() < 0


# ---------------------------------------------------------------------------------------- unsharp mask


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (7, 1), (24, 19), (12, 10, 3)])
@pytest.mark.parametrize("radius, percent, threshold", [(2, 150, 3), (0.5, 100, 0), (3.7, 80, 1), (0, 150, 3)])
def test_unsharp_mask_uint8_is_byte_identical_to_pillow(shape, radius, percent, threshold):
    image = smooth_uint8(shape)
    expected = pillow(image, ImageFilter.UnsharpMask(radius, percent, threshold))
    np.testing.assert_array_equal(
        unsharp_mask(image, radius=radius, percent=percent, threshold=threshold), expected
    )


def test_unsharp_mask_16bit_agrees_with_pillow_on_8bit_data():
    # Pillow rounds the blur to 8 bits after each of its 6 passes; the 16-bit path does not, so small
    # differences remain (max ≈ 2 grey levels at radius 2, threshold 0 to avoid threshold flips).
    image = smooth_uint8((40, 40))
    expected = pillow(image, ImageFilter.UnsharpMask(2, 150, 0)).astype(float)
    result = unsharp_mask(image.astype(np.uint16) * 257, radius=2, threshold=0) / 257
    difference = np.abs(result - expected)[4:-4, 4:-4]
    assert difference.max() <= 3
    assert difference.mean() < 0.5


def test_unsharp_mask_16bit_keeps_range():
    image = np.random.default_rng(1).integers(40000, 60000, (20, 20)).astype(np.uint16)
    original = image.copy()
    result = unsharp_mask(image)
    assert result.dtype == np.uint16
    assert np.median(result) > 255
    assert result.max() > 60000  # sharpening overshoots beyond the input range, within 16 bits
    np.testing.assert_array_equal(image, original)


def test_unsharp_mask_threshold_is_in_8bit_grey_levels():
    # A step of 2 8-bit grey levels (514 in 16 bits) is below threshold 3 at both depths.
    step8 = np.zeros((10, 10), np.uint8)
    step8[:, 5:] = 2
    np.testing.assert_array_equal(unsharp_mask(step8, threshold=3), step8)
    step16 = step8.astype(np.uint16) * 257
    np.testing.assert_array_equal(unsharp_mask(step16, threshold=3), step16)
    assert not np.array_equal(unsharp_mask(step16, threshold=0), step16)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_unsharp_mask_keeps_dtype_and_shape(shape, dtype):
    image = random_image(shape, dtype)
    result = unsharp_mask(image, radius=1.0)
    assert result.dtype == image.dtype and result.shape == image.shape


@pytest.mark.parametrize("option", ["radius", "percent", "threshold"])
def test_unsharp_mask_rejects_negative_options(option):
    with pytest.raises(OptionError, match=f"`{option}`.*-1"):
        unsharp_mask(np.zeros((4, 4), np.uint8), **{option: -1})


# ---------------------------------------------------------------------------------------------- resize


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_resize_shape_and_dtype(shape, dtype):
    image = random_image(shape, dtype)
    original = image.copy()
    result = resize(image, (5, 4))
    assert result.shape == (5, 4) + shape[2:]
    assert result.dtype == image.dtype
    assert resize(image, 12).shape == (12, 12) + shape[2:]
    np.testing.assert_array_equal(image, original)


def test_resize_default_size_is_the_papers():
    assert DEFAULT_INPUT_SIZE == 300
    assert resize(np.zeros((10, 10), np.uint8), DEFAULT_INPUT_SIZE).shape == (300, 300)


@pytest.mark.parametrize("maximum", [16383, 65535])
def test_resize_keeps_16bit_values(maximum):
    image = np.random.default_rng(0).integers(0, maximum, (40, 40), endpoint=True).astype(np.uint16)
    image[10:30, 10:30] = maximum
    result = resize(image, 20)
    assert result.dtype == np.uint16
    assert maximum - 1 <= result.max() <= maximum
    assert result.max() > 255


def test_resize_anti_aliasing_flattens_checkerboard():
    checkerboard = (np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)
    smooth = resize(checkerboard, 16)
    assert np.all(np.abs(smooth.astype(int) - 128) <= 2)
    # Without the pre-filter, nearest-neighbour sampling keeps pure black or white: aliasing.
    aliased = resize(checkerboard, 16, anti_aliasing=False, order=0)
    assert set(np.unique(aliased).tolist()) <= {0, 255}


@pytest.mark.parametrize("size", [0, (3,), (3, -1), "300", (2.5, 3)])
def test_resize_rejects_bad_size(size):
    with pytest.raises(OptionError, match="`size`"):
        resize(np.zeros((4, 4)), size)


# ---------------------------------------------------------------------------------------------- normalize


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_normalize_z_score(shape, dtype):
    image = random_image(shape, dtype)
    original = image.copy()
    result = normalize(image)
    assert result.dtype == np.float32 and result.shape == image.shape
    axes = (0, 1)
    np.testing.assert_allclose(result.mean(axis=axes), 0, atol=1e-5)
    np.testing.assert_allclose(result.std(axis=axes), 1, atol=1e-4)
    np.testing.assert_array_equal(image, original)


@pytest.mark.parametrize("dtype", DTYPES)
def test_normalize_constant_image_gives_zeros(dtype):
    for value in (0, 7, 0.1):
        image = np.full((5, 6), value).astype(dtype)
        result = normalize(image)
        assert np.all(np.isfinite(result)) and not result.any()


def test_normalize_with_given_statistics():
    image = np.stack([np.full((2, 2), 10.0), np.full((2, 2), 4.0)], axis=-1)
    result = normalize(image, mean=[8, 2], std=[2, 4])
    np.testing.assert_allclose(result[..., 0], 1)
    np.testing.assert_allclose(result[..., 1], 0.5)
    np.testing.assert_allclose(normalize(image[..., 0], mean=10, std=5), 0)


def test_normalize_rejects_bad_statistics():
    with pytest.raises(OptionError, match="`std`"):
        normalize(np.zeros((3, 3)), mean=0, std=0)
    with pytest.raises(OptionError, match="`mean`"):
        normalize(np.zeros((3, 3, 3)), mean=[1, 2])


@pytest.mark.parametrize("function", [sharpen, unsharp_mask, normalize])
def test_rejects_bad_images(function):
    with pytest.raises(OptionError, match="`image`"):
        function(np.zeros((2, 3, 4, 5)))
    with pytest.raises(OptionError, match="`image`"):
        function(np.zeros((3, 3), dtype=bool))
