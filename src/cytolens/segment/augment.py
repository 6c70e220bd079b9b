"""The MIDL 2019 augmentations, applied to an image and its label map together.

The paper augmented with "rotations of 90, 180, 270 degree, horizontal and vertical flip, and translation of
122 pixels vertical and horizontal" and "deformation using B-splines with 2 control points and standard
deviation equal to 15" — the defaults of :class:`Augmenter`. Every geometric change is computed once and
applied to both arrays: images are interpolated (cubic), label maps are only ever *moved* (nearest
neighbour), so a label map never gains a class value it did not have.

Translations come in two forms. :class:`~cytolens.segment.sampling.PatchDataset` shifts the crop window
inside the full image (real neighbouring pixels, no padding). A standalone patch is shifted by
:func:`shift_pair`: the image is reflected at the border and the label map either reflected too (default,
aligned everywhere) or filled with a chosen value such as an ``ignore_index`` of the loss.

Elastic deformation mirrors ``elasticdeform.deform_random_grid(x, sigma=15, points=2)`` (gvtulder/elasticdeform):
a ``points × points`` grid of displacements drawn from N(0, sigma²) pixels, one per grid point per axis; the
grid's first and last points sit on the first and last pixels (pixel ``j`` of ``n`` is at grid coordinate
``(points - 1) · j / (n - 1)``); the displacement is interpolated from the grid by a cubic B-spline whose
coefficients come from a mirror-boundary spline prefilter; output pixel ``x`` takes the input value at
``x + displacement(x)``. Differences: the border mode defaults to ``"mirror"`` here (elasticdeform's default
is ``"constant"`` with 0, which would paint black corners the labels cannot match), the random numbers come
from the given ``numpy.random.Generator`` rather than the global ``numpy.random``, and integer images are
rounded half away from zero and clipped like elasticdeform's C code but to the dtype's full range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cytolens.core.errors import OptionError, check_choice
from cytolens.data.transforms import DIHEDRAL_SIZE, dihedral

__all__ = [
    "BORDER_MODES",
    "Augmenter",
    "apply_dihedral",
    "deform_grid",
    "displacement_field",
    "elastic_deform",
    "random_grid_displacement",
    "shift_pair",
]

#: Border modes of :func:`deform_grid`, as in ``scipy.ndimage.map_coordinates``.
BORDER_MODES: tuple[str, ...] = ("mirror", "reflect", "nearest", "wrap", "constant")


def _check_pair(image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    label = np.asarray(label)
    if image.ndim not in (2, 3):
        raise OptionError(f"`image` must have shape (H, W) or (H, W, C), got shape {image.shape}")
    if label.ndim != 2 or label.shape != image.shape[:2]:
        raise OptionError(f"`label` must have shape {image.shape[:2]} (the image's H, W), got shape {label.shape}")
    return image, label


def apply_dihedral(image: np.ndarray, label: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Apply the same symmetry of the square (see :func:`cytolens.data.transforms.dihedral`) to both arrays.

    Parameters
    ----------
    image : (H, W[, C]) ndarray
    label : (H, W) integer ndarray
    index : int
        0..3 rotate clockwise by 0/90/180/270°, 4..7 mirror left-right then rotate. Together they include
        the paper's horizontal flip (4) and vertical flip (6).

    Returns
    -------
    image, label : ndarray
        Transformed copies, same dtypes (H and W swap for odd quarter turns).
    """
    image, label = _check_pair(image, label)
    return dihedral(image, index), dihedral(label, index)


def shift_pair(
    image: np.ndarray, label: np.ndarray, shift: tuple[int, int], *, label_fill: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Translate a standalone patch and its labels by whole pixels.

    Parameters
    ----------
    image : (H, W[, C]) ndarray
        Patch; uncovered pixels are filled by reflecting the patch at its border (``numpy.pad`` mode
        ``"reflect"``, repeated if the shift exceeds the patch).
    label : (H, W) integer ndarray
    shift : (int, int)
        ``(dy, dx)``: content moves down by ``dy`` and right by ``dx`` pixels (negative: up, left).
    label_fill : int, optional
        ``None`` (default) reflects the labels exactly like the image, so the pair stays aligned
        everywhere. An integer fills the uncovered label pixels instead, e.g. the ``ignore_index`` of the
        loss so that reflected image content is not trained on.

    Returns
    -------
    image, label : ndarray
        Shifted copies with the input shapes and dtypes.
    """
    image, label = _check_pair(image, label)
    dy, dx = (int(s) for s in shift)
    height, width = label.shape
    if abs(dy) >= height * 8 or abs(dx) >= width * 8:
        raise OptionError(f"`shift` {shift!r} is far larger than the {height}×{width} patch")

    def move(array: np.ndarray, fill: int | None) -> np.ndarray:
        pads = [(max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0))] + [(0, 0)] * (array.ndim - 2)
        if fill is None:
            padded = np.pad(array, pads, mode="reflect" if min(height, width) > 1 else "edge")
        else:
            padded = np.pad(array, pads, mode="constant", constant_values=fill)
        top, left = max(-dy, 0), max(-dx, 0)
        return np.ascontiguousarray(padded[top : top + height, left : left + width])

    return move(image, None), move(label, label_fill)


def random_grid_displacement(rng: np.random.Generator, *, sigma: float = 15.0, points: int = 2) -> np.ndarray:
    """Random control-point displacements, as ``elasticdeform.deform_random_grid`` draws them.

    Returns
    -------
    (2, points, points) ndarray of float64
        ``[0]`` row and ``[1]`` column displacement in pixels, each drawn from N(0, sigma²).
    """
    if not np.isfinite(sigma) or sigma < 0:
        raise OptionError(f"`sigma` must be a non-negative number, got {sigma!r}")
    if isinstance(points, bool) or not isinstance(points, (int, np.integer)) or points < 1:
        raise OptionError(f"`points` must be a positive integer, got {points!r}")
    return rng.standard_normal((2, int(points), int(points))) * float(sigma)


def displacement_field(displacement: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Interpolate control-point displacements to every pixel by a cubic B-spline.

    Parameters
    ----------
    displacement : (2, P, Q) ndarray
        Row and column displacement at a P × Q grid whose corner points sit on the corner pixels.
    shape : (int, int)
        ``(H, W)`` of the image.

    Returns
    -------
    (2, H, W) ndarray of float64
        Displacement of every pixel, in pixels.
    """
    displacement = np.asarray(displacement, dtype=np.float64)
    if displacement.ndim != 3 or displacement.shape[0] != 2:
        raise OptionError(f"`displacement` must have shape (2, P, Q), got shape {displacement.shape}")
    # The prefiltered tensor-product spline is separable: field = B_rows @ grid @ B_cols.T, with B the 1-D
    # cardinal cubic B-spline weights of every pixel on the grid (far cheaper than 2-D map_coordinates).
    row_basis, col_basis = (_spline_basis(n, p) for n, p in zip(shape, displacement.shape[1:]))
    return np.stack([row_basis @ grid @ col_basis.T for grid in displacement])


def _spline_basis(n: int, points: int) -> np.ndarray:
    """(n, points) weights of each control point at each of ``n`` pixels: cubic B-spline, mirror prefilter.

    As elasticdeform: pixel ``j`` sits at grid coordinate ``(points - 1) * j / (n - 1)`` (a single-pixel axis
    on the first point), and the coefficients come from ``spline_filter1d(order=3)`` with mirror boundaries.
    """
    positions = np.linspace(0.0, points - 1.0, n) if n > 1 else np.zeros(1)
    basis = np.empty((n, points))
    for k, unit in enumerate(np.eye(points)):
        basis[:, k] = ndimage.map_coordinates(unit, positions[np.newaxis], order=3, mode="mirror", prefilter=True)
    return basis


def deform_grid(array: np.ndarray, displacement: np.ndarray, *, order: int, mode: str = "mirror") -> np.ndarray:
    """Deform an image or label map with a control-point displacement grid.

    Parameters
    ----------
    array : (H, W[, C]) ndarray
        Image (use ``order=3``) or label map (use ``order=0``). Channels share the deformation.
    displacement : (2, P, Q) ndarray
        Control-point displacements, e.g. from :func:`random_grid_displacement`.
    order : int
        Spline order 0..5; 0 only moves values (labels keep their set of values).
    mode : {"mirror", "reflect", "nearest", "wrap", "constant"}, optional
        Border handling of ``scipy.ndimage.map_coordinates`` (``"constant"`` fills with 0).

    Returns
    -------
    (H, W[, C]) ndarray
        Same dtype as ``array``; integer results of ``order > 0`` are rounded half away from zero and
        clipped to the dtype's range; float results are not clipped (cubic splines overshoot slightly).
    """
    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise OptionError(f"`array` must have shape (H, W) or (H, W, C), got shape {array.shape}")
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 0 <= order <= 5:
        raise OptionError(f"`order` must be an integer in 0..5, got {order!r}")
    check_choice("mode", mode, BORDER_MODES)
    return _warp(array, _sample_coordinates(displacement, array.shape[:2]), order=int(order), mode=mode)


def _sample_coordinates(displacement: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(2, H, W) input coordinates read by every output pixel: its own position plus the displacement."""
    return np.indices(shape, dtype=np.float64) + displacement_field(displacement, shape)


def _warp(array: np.ndarray, coordinates: np.ndarray, *, order: int, mode: str) -> np.ndarray:
    """Resample every channel of ``array`` at ``coordinates`` (2, H, W), keeping the dtype."""
    integer = array.dtype.kind in "ui"
    # Integers with order > 0 are interpolated in float64 and rounded after; order 0 copies values exactly.
    work_dtype = np.float64 if integer and order > 0 else array.dtype
    channels = array[..., np.newaxis] if array.ndim == 2 else array
    out = np.empty(channels.shape, dtype=work_dtype)
    for c in range(channels.shape[2]):
        plane = channels[..., c].astype(work_dtype, copy=False)
        ndimage.map_coordinates(plane, coordinates, output=out[..., c], order=order, mode=mode)
    if work_dtype != array.dtype:
        info = np.iinfo(array.dtype)
        out = np.clip(np.where(out > 0, np.floor(out + 0.5), np.ceil(out - 0.5)), info.min, info.max)
    out = out.astype(array.dtype, copy=False)
    return out[..., 0] if array.ndim == 2 else out


def elastic_deform(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    *,
    sigma: float = 15.0,
    points: int = 2,
    mode: str = "mirror",
) -> tuple[np.ndarray, np.ndarray]:
    """Random B-spline elastic deformation of an image and its labels (the same displacement field).

    Equivalent to ``elasticdeform.deform_random_grid([image, label], sigma, points, order=[3, 0],
    mode=mode, axis=(0, 1))`` with the random numbers taken from ``rng``; see the module notes.

    Parameters
    ----------
    image : (H, W[, C]) ndarray
        Resampled with cubic splines (order 3).
    label : (H, W) integer ndarray
        Resampled with nearest neighbour (order 0).
    rng : numpy.random.Generator
    sigma : float, optional
        Standard deviation of the control-point displacements in pixels (15 in the paper); 0 is the identity.
    points : int, optional
        Control points per axis (2 in the paper: the four corners).
    mode : str, optional
        Border mode, see :func:`deform_grid`.

    Returns
    -------
    image, label : ndarray
        Deformed copies with the input shapes and dtypes.
    """
    image, label = _check_pair(image, label)
    check_choice("mode", mode, BORDER_MODES)
    displacement = random_grid_displacement(rng, sigma=sigma, points=points)
    # One field for both arrays: the labels follow the image exactly.
    coordinates = _sample_coordinates(displacement, label.shape)
    return _warp(image, coordinates, order=3, mode=mode), _warp(label, coordinates, order=0, mode=mode)


def _check_probability(name: str, value: float) -> None:
    if isinstance(value, bool) or not np.isscalar(value) or not 0.0 <= float(value) <= 1.0:
        raise OptionError(f"`{name}` must be a probability in [0, 1], got {value!r}")


@dataclass(frozen=True)
class Augmenter:
    """The paper's random augmentation of an (image, label) patch pair; a callable.

    Parameters
    ----------
    dihedral : bool, default True
        Apply one of the 8 symmetries of the square, uniformly (identity, rotations by 90/180/270°,
        horizontal and vertical flips and the two diagonal flips).
    max_shift : int, default 122
        Translate by whole pixels drawn uniformly from ``-max_shift .. max_shift`` on each axis (the paper's
        122). 0 turns translation off.
    shift_probability : float, default 1.0
        Probability of translating.
    elastic_probability : float, default 0.5
        Probability of the elastic deformation. The paper does not say how often it deformed; 0.5 is our
        choice.
    elastic_sigma : float, default 15.0
    elastic_points : int, default 2
        See :func:`elastic_deform`.
    label_fill : int, optional
        See :func:`shift_pair`; ``None`` reflects labels like the image.
    mode : str, default "mirror"
        Border mode of the elastic deformation.

    Notes
    -----
    Order per call: translation, symmetry, elastic deformation. ``Augmenter(dihedral=False, max_shift=0,
    elastic_probability=0)`` returns unchanged copies. Call as ``augmenter(image, label, rng)``.
    """

    dihedral: bool = True
    max_shift: int = 122
    shift_probability: float = 1.0
    elastic_probability: float = 0.5
    elastic_sigma: float = 15.0
    elastic_points: int = 2
    label_fill: int | None = None
    mode: str = "mirror"

    def __post_init__(self) -> None:
        if isinstance(self.max_shift, bool) or not isinstance(self.max_shift, (int, np.integer)) or self.max_shift < 0:
            raise OptionError(f"`max_shift` must be a non-negative integer, got {self.max_shift!r}")
        _check_probability("shift_probability", self.shift_probability)
        _check_probability("elastic_probability", self.elastic_probability)
        if not np.isfinite(self.elastic_sigma) or self.elastic_sigma < 0:
            raise OptionError(f"`elastic_sigma` must be a non-negative number, got {self.elastic_sigma!r}")
        if isinstance(self.elastic_points, bool) or self.elastic_points < 1:
            raise OptionError(f"`elastic_points` must be a positive integer, got {self.elastic_points!r}")
        check_choice("mode", self.mode, BORDER_MODES)

    @classmethod
    def off(cls) -> Augmenter:
        """An augmenter that changes nothing (for validation data)."""
        return cls(dihedral=False, max_shift=0, elastic_probability=0.0)

    def draw_shift(self, rng: np.random.Generator) -> tuple[int, int]:
        """Draw one translation ``(dy, dx)`` in pixels; ``(0, 0)`` when translation is off or not drawn."""
        if self.max_shift == 0 or rng.random() >= self.shift_probability:
            return 0, 0
        dy, dx = rng.integers(-self.max_shift, self.max_shift + 1, size=2)
        return int(dy), int(dx)

    def __call__(
        self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator, *, translate: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Augment one pair.

        Parameters
        ----------
        image : (H, W[, C]) ndarray
        label : (H, W) integer ndarray
        rng : numpy.random.Generator
            Source of all random choices of this call.
        translate : bool, optional
            ``False`` skips the translation (the caller has shifted the crop window instead, see
            :class:`~cytolens.segment.sampling.PatchDataset`).

        Returns
        -------
        image, label : ndarray
            Augmented copies; dtypes kept, shapes kept up to an H/W swap by a quarter turn.
        """
        image, label = _check_pair(image, label)
        image, label = image.copy(), label.copy()
        if translate:
            shift = self.draw_shift(rng)
            if shift != (0, 0):
                image, label = shift_pair(image, label, shift, label_fill=self.label_fill)
        if self.dihedral:
            image, label = apply_dihedral(image, label, int(rng.integers(DIHEDRAL_SIZE)))
        if self.elastic_probability > 0 and rng.random() < self.elastic_probability:
            image, label = elastic_deform(
                image, label, rng, sigma=self.elastic_sigma, points=self.elastic_points, mode=self.mode
            )
        return image, label
