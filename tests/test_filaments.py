"""Filament-network measures on hand-made images with a known answer."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from cytolens.core.errors import OptionError
from cytolens.classify.filaments import (
    bundling_index,
    cell_mask,
    estimate_background,
    filament_features,
    network_center,
    orientation_coherence,
    radial_order,
    total_polymer,
)

SIZE = 128
CENTER = (60.0, 66.0)  # (row, col), deliberately off the image centre


def _draw(segments: list[tuple[float, float, float, float]], weights: list[float] | None = None) -> np.ndarray:
    """Anti-aliased lines (row0, col0, row1, col1) blurred to ~1 px, on a hazy disk-shaped 'cell'."""
    image = np.zeros((SIZE, SIZE))
    weights = weights or [1.0] * len(segments)
    for (r0, c0, r1, c1), w in zip(segments, weights, strict=True):
        n = int(np.hypot(r1 - r0, c1 - c0) * 3) + 2
        t = np.linspace(0.0, 1.0, n)
        rows, cols = r0 + t * (r1 - r0), c0 + t * (c1 - c0)
        keep = (rows >= 0) & (rows < SIZE - 1) & (cols >= 0) & (cols < SIZE - 1)
        np.add.at(image, (np.rint(rows[keep]).astype(int), np.rint(cols[keep]).astype(int)), w / 3.0)
    image = ndi.gaussian_filter(image, 1.0) * 6.0
    rr, cc = np.indices(image.shape)
    disk = np.hypot(rr - 64, cc - 64) < 56
    return image + 0.5 * ndi.gaussian_filter(disk.astype(float), 2.0) + 0.05


def _radial_lines(n: int = 30) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return _draw([(CENTER[0], CENTER[1],
                   CENTER[0] + 45 * np.sin(a), CENTER[1] + 45 * np.cos(a)) for a in angles])


def _circles() -> np.ndarray:
    segments = []
    for radius in range(10, 50, 5):
        a = np.linspace(0, 2 * np.pi, 90)
        segments += [(CENTER[0] + radius * np.sin(a[i]), CENTER[1] + radius * np.cos(a[i]),
                      CENTER[0] + radius * np.sin(a[i + 1]), CENTER[1] + radius * np.cos(a[i + 1]))
                     for i in range(a.size - 1)]
    return _draw(segments)


def _random_lines(seed: int = 0, n: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    starts = rng.uniform(25, 103, (n, 2))
    angles = rng.uniform(0, np.pi, n)
    return _draw([(r, c, r + 25 * np.sin(a), c + 25 * np.cos(a)) for (r, c), a in zip(starts, angles, strict=True)])


def _disk_mask() -> np.ndarray:
    rr, cc = np.indices((SIZE, SIZE))
    return np.hypot(rr - 64, cc - 64) < 54


def test_radial_order_ranks_radial_random_and_concentric() -> None:
    radial = radial_order(_radial_lines())
    circles = radial_order(_circles())
    random = [radial_order(_random_lines(seed)) for seed in range(3)]
    assert radial > 0.8
    assert circles < -0.5
    assert all(-0.35 < r < 0.35 for r in random)
    # With the true centre given, the answer is as clear.
    assert radial_order(_radial_lines(), center=CENTER) > 0.8
    assert radial_order(_circles(), center=CENTER, mask=_disk_mask()) < -0.5


def test_network_center_finds_the_aster() -> None:
    row, col = network_center(_radial_lines())
    assert np.hypot(row - CENTER[0], col - CENTER[1]) < 2.0


def test_bundling_index_prefers_few_bright_cables_over_many_thin_lines() -> None:
    rng = np.random.default_rng(1)
    centres = rng.uniform(44, 84, (60, 2))
    angles = rng.uniform(0, np.pi, 60)
    lines = [(r - 30 * np.sin(a), c - 30 * np.cos(a), r + 30 * np.sin(a), c + 30 * np.cos(a))
             for (r, c), a in zip(centres, angles, strict=True)]
    thin = _draw(lines)
    # The same polymer, coalesced into 12 cables of 5 filaments each.
    bundled = _draw(lines[:12], weights=[5.0] * 12)
    mask = _disk_mask()
    assert bundling_index(thin, mask=mask) < 0.5
    assert bundling_index(bundled, mask=mask) > 0.8
    assert bundling_index(bundled) > bundling_index(thin) + 0.3
    # Total polymer barely changes when filaments coalesce.
    assert total_polymer(bundled, mask=mask) == pytest.approx(total_polymer(thin, mask=mask), rel=0.15)


def test_orientation_coherence_is_high_for_parallel_lines() -> None:
    parallel = _draw([(30 + 6 * i, 20, 30 + 6 * i, 108) for i in range(12)])
    assert orientation_coherence(parallel) > orientation_coherence(_random_lines()) + 0.15
    assert 0.0 <= orientation_coherence(parallel) <= 1.0


def test_total_polymer_and_background_of_a_known_blob() -> None:
    image = np.full((64, 64), 100.0)
    image[20:40, 20:40] += 50.0
    mask = np.zeros(image.shape, bool)
    mask[18:42, 18:42] = True
    assert estimate_background(image, mask=mask) == pytest.approx(100.0)
    assert total_polymer(image, mask=mask) == pytest.approx(50.0 * 400)
    assert total_polymer(image, mask=mask, background=90.0) == pytest.approx(50.0 * 400 + 10.0 * mask.sum())
    assert cell_mask(image)[30, 30] and not cell_mask(image)[2, 2]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64, np.int32])
def test_any_dtype_and_input_untouched(dtype: type) -> None:
    base = _radial_lines()
    top = 250 if dtype == np.uint8 else 16000
    image = (base / base.max() * top).astype(dtype)
    before = image.copy()
    image.setflags(write=False)  # a read-only input must be fine too
    features = filament_features(image)
    np.testing.assert_array_equal(image, before)
    assert set(features) >= {"radial_order", "bundling_index", "orientation_coherence", "total_polymer"}
    assert all(np.isfinite(v) for v in features.values())
    reference = filament_features(base / base.max() * top)
    assert features["radial_order"] == pytest.approx(reference["radial_order"], abs=0.05)
    assert features["bundling_index"] == pytest.approx(reference["bundling_index"], abs=0.08)
    assert features["radial_order"] > 0.8


def test_scale_free_measures_do_not_depend_on_exposure() -> None:
    image = _random_lines(2)
    mask = _disk_mask()
    a, b = filament_features(image, mask=mask), filament_features(image * 7.0 + 3.0, mask=mask)
    for key in ("radial_order", "bundling_index", "orientation_coherence"):
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-7)
    assert b["total_polymer"] == pytest.approx(7.0 * a["total_polymer"], rel=1e-6)
    # The automatic mask is exposure-free too (up to a pixel flipping at the threshold).
    auto_a, auto_b = filament_features(image), filament_features(image * 7.0 + 3.0)
    assert auto_a["cell_area"] == pytest.approx(auto_b["cell_area"], rel=0.01)
    assert auto_a["bundling_index"] == pytest.approx(auto_b["bundling_index"], abs=0.02)


def test_bad_inputs_raise_option_error() -> None:
    with pytest.raises(OptionError, match="2-D"):
        radial_order(np.zeros((8, 8, 3)))
    with pytest.raises(OptionError, match="`mask`"):
        bundling_index(np.zeros((16, 16)), mask=np.ones((8, 8), bool))
    with pytest.raises(OptionError, match="`sigma`"):
        radial_order(np.zeros((16, 16)), sigma=0.0)
    with pytest.raises(OptionError, match="NaN"):
        total_polymer(np.full((16, 16), np.nan))


def test_flat_image_gives_nan_not_an_error() -> None:
    features = filament_features(np.full((32, 32), 7, dtype=np.uint16))
    assert np.isnan(features["radial_order"]) and np.isnan(features["bundling_index"])


def test_cell_mask_threshold_is_scikit_images_otsu() -> None:
    # The hand-written Otsu this module had, kept as the reference scikit-image's must equal (it went once equal).
    def old_otsu(values: np.ndarray) -> float:
        hist, edges = np.histogram(values, bins=256)
        centers = 0.5 * (edges[1:] + edges[:-1])
        w0 = np.cumsum(hist)
        w1 = w0[-1] - w0
        m0 = np.cumsum(hist * centers)
        between = w0 * w1 * (m0 / np.maximum(w0, 1) - (m0[-1] - m0) / np.maximum(w1, 1)) ** 2
        return float(centers[int(np.argmax(between[:-1]))])

    from skimage.filters import threshold_otsu

    rng = np.random.default_rng(1)
    for n in (64, 500, 4000):
        for values in (rng.normal(size=n), np.log(rng.random(n) + 0.02),
                       np.concatenate([rng.normal(0, 1, n), rng.normal(4, 0.5, n // 3)])):
            assert float(threshold_otsu(values, nbins=256)) == old_otsu(values)
