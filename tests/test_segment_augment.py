"""Augmentations keep image and label aligned (cytolens.segment.augment)."""

from __future__ import annotations

import numpy as np
import pytest

from scipy import ndimage

from cytolens.core.errors import OptionError
from cytolens.segment.augment import (
    Augmenter,
    apply_dihedral,
    deform_grid,
    displacement_field,
    elastic_deform,
    random_grid_displacement,
    shift_pair,
)
from cytolens.data.transforms import DIHEDRAL_SIZE


def _checkerboard(height: int = 64, width: int = 56, square: int = 8, channels: int | None = None):
    """Label = 3-class checkerboard (plus a row gradient so that flips are visible); image = the same as float."""
    rows, cols = np.indices((height, width))
    label = ((rows // square + 2 * (cols // square) + (rows >= height // 2)) % 3).astype(np.int64)
    image = label.astype(np.float32)
    if channels is not None:
        image = np.repeat(image[..., None], channels, axis=2)
    return image, label


def _agreement(image: np.ndarray, label: np.ndarray) -> float:
    plane = image if image.ndim == 2 else image[..., 0]
    return float(np.mean(np.clip(np.rint(plane), 0, 2).astype(np.int64) == label))


def _disagreement_near_edges_only(image: np.ndarray, label: np.ndarray, *, distance: float = 1.5) -> bool:
    """True if every pixel where the rounded image and the label differ lies within ``distance`` of a label edge."""
    wrong = np.clip(np.rint(image), 0, 2).astype(np.int64) != label
    edges = np.zeros(label.shape, bool)
    vertical, horizontal = label[:-1] != label[1:], label[:, :-1] != label[:, 1:]
    edges[:-1] |= vertical
    edges[1:] |= vertical
    edges[:, :-1] |= horizontal
    edges[:, 1:] |= horizontal
    return bool(np.all(ndimage.distance_transform_edt(~edges)[wrong] <= distance))


@pytest.mark.parametrize("index", range(DIHEDRAL_SIZE))
def test_every_symmetry_keeps_alignment(index: int) -> None:
    image, label = _checkerboard()
    new_image, new_label = apply_dihedral(image, label, index)
    assert new_label.dtype == np.int64 and new_image.dtype == np.float32
    assert _agreement(new_image, new_label) == 1.0
    if index:
        assert new_label.shape != label.shape or not np.array_equal(new_label, label)


@pytest.mark.parametrize("shift", [(0, 0), (3, -5), (-17, 40), (70, -90)])
def test_shift_keeps_alignment(shift: tuple[int, int]) -> None:
    image, label = _checkerboard(channels=2)
    new_image, new_label = shift_pair(image, label, shift)
    assert new_image.shape == image.shape and new_label.shape == label.shape
    assert _agreement(new_image, new_label) == 1.0
    dy, dx = shift
    if abs(dy) < 64 and abs(dx) < 56:
        # Content moved by (dy, dx): compare the part that is still covered.
        moved = new_label[max(dy, 0) : 64 + min(dy, 0), max(dx, 0) : 56 + min(dx, 0)]
        original = label[max(-dy, 0) : 64 + min(-dy, 0), max(-dx, 0) : 56 + min(-dx, 0)]
        np.testing.assert_array_equal(moved, original)


def test_shift_with_label_fill_marks_uncovered_pixels() -> None:
    image, label = _checkerboard()
    new_image, new_label = shift_pair(image, label, (5, -7), label_fill=-100)
    assert np.all(new_label[:5] == -100) and np.all(new_label[:, -7:] == -100)
    covered = new_label != -100
    assert covered.sum() == (64 - 5) * (56 - 7)
    np.testing.assert_array_equal(np.rint(new_image[covered]).astype(np.int64), new_label[covered])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("points", [2, 3])
def test_elastic_keeps_alignment_and_classes(seed: int, points: int) -> None:
    image, label = _checkerboard(96, 80, square=16)
    new_image, new_label = elastic_deform(image, label, np.random.default_rng(seed), sigma=15, points=points)
    assert new_image.dtype == np.float32 and new_label.dtype == np.int64
    assert set(np.unique(new_label)) <= {0, 1, 2}
    assert not np.array_equal(new_label, label)
    # Only cubic interpolation right at square edges (e.g. between 0 and 2) can round to another class.
    assert _agreement(new_image, new_label) > 0.97
    assert _disagreement_near_edges_only(new_image, new_label)


def test_elastic_with_sigma_zero_is_identity() -> None:
    image, label = _checkerboard(channels=3)
    new_image, new_label = elastic_deform(image, label, np.random.default_rng(0), sigma=0.0)
    np.testing.assert_allclose(new_image, image, atol=1e-5)
    np.testing.assert_array_equal(new_label, label)


def test_displacement_grid_corners_sit_on_corner_pixels() -> None:
    # elasticdeform maps pixel j of n to grid coordinate (points - 1) * j / (n - 1).
    displacement = random_grid_displacement(np.random.default_rng(1), sigma=15, points=2)
    assert displacement.shape == (2, 2, 2)
    field = displacement_field(displacement, (30, 20))
    for (gy, gx), (py, px) in {(0, 0): (0, 0), (0, 1): (0, 19), (1, 0): (29, 0), (1, 1): (29, 19)}.items():
        np.testing.assert_allclose(field[:, py, px], displacement[:, gy, gx], atol=1e-9)


@pytest.mark.parametrize(("points", "shape"), [(2, (40, 30)), (3, (25, 47))])
def test_matches_elasticdeforms_reference_procedure(points: int, shape: tuple[int, int]) -> None:
    """The pure-Python procedure elasticdeform's own tests check its C code against (deform_grid_py)."""
    rng = np.random.default_rng(points)
    displacement = rng.standard_normal((2, points, points)) * 15
    image = rng.random(shape)
    grid = np.meshgrid(*[np.linspace(0, points - 1, n) for n in shape], indexing="ij")
    pixels = np.indices(shape, dtype=float)
    coordinates = [pixels[d] + ndimage.map_coordinates(displacement[d], grid, order=3) for d in range(2)]
    expected = ndimage.map_coordinates(image, coordinates, order=3, mode="mirror")
    np.testing.assert_allclose(deform_grid(image, displacement, order=3), expected, atol=1e-10)


def test_uniform_displacement_samples_at_offset_position() -> None:
    # Output pixel x takes the input at x + displacement, as in elasticdeform.
    image = np.random.default_rng(2).random((20, 24)).astype(np.float32)
    displacement = np.zeros((2, 3, 3))
    displacement[0], displacement[1] = 2.0, -3.0
    moved = deform_grid(image, displacement, order=3)
    np.testing.assert_allclose(moved[:15, 3:], image[2:17, :21], atol=1e-5)
    labels = np.arange(20 * 24).reshape(20, 24)
    np.testing.assert_array_equal(deform_grid(labels, displacement, order=0)[:15, 3:], labels[2:17, :21])


def test_integer_images_keep_dtype_and_range() -> None:
    image = np.random.default_rng(3).integers(0, 65536, (24, 24)).astype(np.uint16)
    moved = deform_grid(image, random_grid_displacement(np.random.default_rng(4)), order=3)
    assert moved.dtype == np.uint16


def test_augmenter_off_is_identity() -> None:
    image, label = _checkerboard()
    new_image, new_label = Augmenter.off()(image, label, np.random.default_rng(0))
    np.testing.assert_array_equal(new_image, image)
    np.testing.assert_array_equal(new_label, label)
    assert new_image is not image


def test_augmenter_defaults_are_the_papers() -> None:
    augmenter = Augmenter()
    assert (augmenter.dihedral, augmenter.max_shift, augmenter.elastic_sigma, augmenter.elastic_points) == (
        True,
        122,
        15.0,
        2,
    )


@pytest.mark.parametrize("seed", range(3))
def test_augmenter_keeps_alignment_and_is_reproducible(seed: int) -> None:
    image, label = _checkerboard(96, 80, square=16)
    augmenter = Augmenter(max_shift=20, elastic_probability=1.0)
    first = augmenter(image, label, np.random.default_rng(seed))
    second = augmenter(image, label, np.random.default_rng(seed))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert _agreement(*first) > 0.97 and _disagreement_near_edges_only(*first)
    rigid = Augmenter(max_shift=20, elastic_probability=0.0)(image, label, np.random.default_rng(seed))
    assert _agreement(*rigid) == 1.0


def test_draw_shift_range() -> None:
    augmenter = Augmenter(max_shift=3)
    shifts = np.array([augmenter.draw_shift(np.random.default_rng(i)) for i in range(200)])
    assert shifts.min() == -3 and shifts.max() == 3
    assert Augmenter(max_shift=0).draw_shift(np.random.default_rng(0)) == (0, 0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_shift": -1}, "max_shift"),
        ({"elastic_probability": 1.5}, "elastic_probability"),
        ({"mode": "mirrror"}, "Did you mean 'mirror'"),
        ({"elastic_sigma": -2.0}, "elastic_sigma"),
    ],
)
def test_augmenter_rejects_bad_options(options: dict[str, object], message: str) -> None:
    with pytest.raises(OptionError, match=message):
        Augmenter(**options)  # type: ignore[arg-type]


def test_mismatched_pair_is_rejected() -> None:
    image, label = _checkerboard()
    with pytest.raises(OptionError, match="label"):
        apply_dihedral(image, label[:10], 1)
