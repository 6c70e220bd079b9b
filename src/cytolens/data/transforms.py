"""Image transforms for training and test-time augmentation.

Images are numpy arrays of shape ``(M, N)`` or ``(M, N, C)`` (channels last) with dtype uint8, uint16 (or
another integer type) or float. Every function returns a new array and never modifies its input; integer
images keep their dtype and their full range, so 12-, 14- and 16-bit microscope data are never squeezed into
8 bits.

The sharpening filters reproduce Pillow's (the paper augmented with Pillow) bit for bit on uint8 images and
extend the same arithmetic to 16-bit and float images, which Pillow cannot filter faithfully.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cytolens.core.errors import OptionError
from cytolens.core.validation import check_int

__all__ = [
    "DEFAULT_INPUT_SIZE",
    "DIHEDRAL_SIZE",
    "dihedral",
    "inverse_dihedral",
    "normalize",
    "resize",
    "rotate90",
    "sharpen",
    "unsharp_mask",
]

#: Number of elements of the dihedral group D4 (4 rotations × optional flip).
DIHEDRAL_SIZE = 8

#: Side of the square network input used by Shpilman et al. 2017 (300 × 300 pixels).
DEFAULT_INPUT_SIZE = 300


def _check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Return ``image`` as an ndarray after checking its shape and dtype."""
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise OptionError(f"`{name}` must have shape (M, N) or (M, N, C), got shape {image.shape}")
    if image.dtype.kind not in "uif":
        raise OptionError(f"`{name}` must have an integer or float dtype, got {image.dtype}")
    return image


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast float ``values`` to ``dtype``: integers are rounded half up and clipped to the dtype's range."""
    if dtype.kind == "f":
        return values.astype(dtype, copy=False)
    info = np.iinfo(dtype)
    return np.clip(np.floor(values + 0.5), info.min, info.max).astype(dtype)


# --------------------------------------------------------------------------------------------------------
# Dihedral group


def rotate90(image: np.ndarray, turns: int) -> np.ndarray:
    """Rotate an image clockwise by ``90° × turns``.

    Parameters
    ----------
    image : (M, N[, C]) ndarray
        Image of any dtype.
    turns : int
        Number of clockwise quarter turns; negative values turn counter-clockwise, any integer is taken
        modulo 4.

    Returns
    -------
    rotated : (M, N[, C]) or (N, M[, C]) ndarray
        A C-contiguous copy with the dtype of ``image``.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise OptionError(f"`image` must have shape (M, N) or (M, N, C), got shape {image.shape}")
    turns = check_int("turns", turns)
    # np.rot90 turns counter-clockwise for positive k; the paper rotated clockwise.
    return np.array(np.rot90(image, k=-turns, axes=(0, 1)), order="C", copy=True)


def _check_index(index: object) -> int:
    index = check_int("index", index)
    if not 0 <= index < DIHEDRAL_SIZE:
        raise OptionError(f"`index` must be in 0..{DIHEDRAL_SIZE - 1}, got {index!r}")
    return index


def dihedral(image: np.ndarray, index: int) -> np.ndarray:
    """Apply one of the 8 symmetries of the square.

    Parameters
    ----------
    image : (M, N[, C]) ndarray
        Image of any dtype.
    index : int
        0..3 rotate clockwise by 0°, 90°, 180°, 270°; 4..7 flip horizontally (mirror left-right) and then
        rotate clockwise by 0°, 90°, 180°, 270°.

    Returns
    -------
    transformed : ndarray
        A C-contiguous copy with the dtype of ``image``.

    See Also
    --------
    inverse_dihedral : undoes this transform, e.g. on a prediction map in test-time augmentation.
    """
    index = _check_index(index)
    image = np.asarray(image)
    if index >= 4:
        image = image[:, ::-1]
    return rotate90(image, index % 4)


def inverse_dihedral(image: np.ndarray, index: int) -> np.ndarray:
    """Undo :func:`dihedral`: ``inverse_dihedral(dihedral(x, i), i)`` equals ``x``.

    Parameters
    ----------
    image : (M, N[, C]) ndarray
        A transformed image or a per-pixel prediction map computed on one.
    index : int
        The index given to :func:`dihedral`, in 0..7.

    Returns
    -------
    restored : ndarray
        A C-contiguous copy in the orientation of the original image.
    """
    index = _check_index(index)
    restored = rotate90(image, -(index % 4))
    if index >= 4:
        restored = np.ascontiguousarray(restored[:, ::-1])
    return restored


# --------------------------------------------------------------------------------------------------------
# Sharpening (Pillow's filters)


def sharpen(image: np.ndarray) -> np.ndarray:
    """Sharpen with Pillow's ``ImageFilter.SHARPEN`` kernel, for any bit depth.

    The kernel is ``[[-2, -2, -2], [-2, 32, -2], [-2, -2, -2]] / 16``. Like Pillow, the one-pixel border is
    copied unchanged (and images narrower or shorter than 3 pixels are returned unchanged), and integer
    results are rounded half up. Integer images are clipped to their dtype's full range, so uint16 stays
    0..65535; float images are filtered without clipping. Channels are filtered independently.

    Parameters
    ----------
    image : (M, N[, C]) ndarray
        Image of dtype uint8, uint16, another integer type, or float.

    Returns
    -------
    sharpened : (M, N[, C]) ndarray
        Same shape and dtype as ``image``. For uint8 it is byte-identical to
        ``numpy.asarray(PIL.Image.fromarray(image).filter(ImageFilter.SHARPEN))``.
    """
    image = _check_image(image)
    out = image.copy()
    if image.shape[0] < 3 or image.shape[1] < 3:
        return out
    integer = image.dtype.kind in "ui"
    # Integers: exact int64 arithmetic. Pillow sums in float32, which is exact here (multiples of 1/8 far
    # below 2**24), so this gives the very same numbers without float rounding questions.
    values = image.astype(np.int64 if integer else np.float64)
    centre = values[1:-1, 1:-1]
    neighbours = -centre
    for dy in range(3):
        for dx in range(3):
            neighbours = neighbours + values[dy : dy + values.shape[0] - 2, dx : dx + values.shape[1] - 2]
    # 32/16·c − 2/16·Σn = (16c − Σn) / 8
    numerator = 16 * centre - neighbours
    if integer:
        info = np.iinfo(image.dtype)
        # Pillow adds 0.5 and truncates after clamping at 0, i.e. rounds half up: floor((num + 4) / 8).
        result = np.clip((numerator + 4) // 8, info.min, info.max)
    else:
        result = numerator / 8.0
    out[1:-1, 1:-1] = result.astype(image.dtype)
    return out


def _pillow_box_radius(sigma: float, passes: int = 3) -> np.float32:
    """Radius of the extended box whose ``passes``-fold repetition approximates a Gaussian of ``sigma``.

    A float32 transcription of Pillow's ``_gaussian_blur_radius`` (Gwosdek et al. 2011, "Theoretical
    foundations of Gaussian convolution by extended box filtering"), so that the fixed-point weights below
    come out identical to Pillow's.
    """
    f32 = np.float32
    sigma2 = f32(f32(sigma) * f32(sigma) / f32(passes))
    length = f32(np.sqrt(12.0 * float(sigma2) + 1.0))
    whole = f32(np.floor((float(length) - 1.0) / 2.0))
    fraction = f32((f32(2) * whole + f32(1)) * (whole * (whole + f32(1)) - f32(3) * sigma2))
    fraction = f32(fraction / f32(f32(6) * (sigma2 - (whole + f32(1)) * (whole + f32(1)))))
    return f32(whole + fraction)


def _box_weights(box_radius: np.float32) -> tuple[int, int, int]:
    """Pillow's fixed-point weights: ``2r+1`` inner pixels of weight ``inner``, 2 outer ones of ``outer``."""
    whole = int(box_radius)
    inner = int(np.float32(1 << 24) / (box_radius * np.float32(2) + np.float32(1)))
    outer = ((1 << 24) - (2 * whole + 1) * inner) // 2
    return whole, inner, outer


def _box_pass(values: np.ndarray, axis: int, whole: int, inner: int, outer: int, exact: bool) -> np.ndarray:
    """One extended-box pass along ``axis`` with edge pixels repeated (Pillow's border rule).

    ``exact`` keeps Pillow's 8-bit fixed-point arithmetic and rounds each pass to an integer; otherwise the
    same weights are applied in float64 without intermediate rounding.
    """
    lines = np.moveaxis(values, axis, 0)
    n = lines.shape[0]
    # Output x sits at padded index x + whole + 2: its inner window is padded[x + 2 : x + 2 * whole + 3]
    # and its two outer pixels are padded[x + 1] and padded[x + 2 * whole + 3].
    padded = np.pad(lines, [(whole + 2, whole + 1)] + [(0, 0)] * (lines.ndim - 1), mode="edge")
    cumulative = np.cumsum(padded, axis=0)
    window = cumulative[2 * whole + 2 : 2 * whole + 2 + n] - cumulative[1 : 1 + n]
    far = padded[1 : 1 + n] + padded[2 * whole + 3 : 2 * whole + 3 + n]
    total = window * inner + far * outer
    blurred = (total + (1 << 23)) >> 24 if exact else total / float(1 << 24)
    return np.moveaxis(blurred, 0, axis)


def _pillow_gaussian_blur(values: np.ndarray, sigma: float, exact: bool) -> np.ndarray:
    box_radius = _pillow_box_radius(sigma)
    if box_radius == 0:
        return values.copy()
    whole, inner, outer = _box_weights(box_radius)
    # Pillow blurs all rows three times, then all columns three times.
    for axis in (1, 0):
        for _ in range(3):
            values = _box_pass(values, axis, whole, inner, outer, exact)
    return values


def unsharp_mask(
    image: np.ndarray, *, radius: float = 2.0, percent: float = 150, threshold: float = 3
) -> np.ndarray:
    """Sharpen with Pillow's ``ImageFilter.UnsharpMask``, for any bit depth.

    The image is blurred with Pillow's approximation of a Gaussian of standard deviation ``radius``
    (three passes of an "extended" box filter of fractional radius horizontally, then three vertically,
    edges repeated). Where the image differs from its blur by more than ``threshold`` (strictly, as in
    Pillow), ``percent / 100`` of the difference is added to it; elsewhere the pixel is kept.

    Parameters
    ----------
    image : (M, N[, C]) ndarray
        Image of dtype uint8, uint16, another integer type, or float. Channels are filtered independently.
    radius : float, optional
        Standard deviation of the blur, in pixels; ``0`` leaves the image unchanged.
    percent : float, optional
        Strength of the sharpening in percent.
    threshold : float, optional
        Smallest difference that is sharpened, in **8-bit grey levels**: it is multiplied by
        ``(dtype max − dtype min) / 255`` for integer images (×257 for uint16) and by ``1 / 255`` for float
        images, which are assumed to span [0, 1]. The same setting thus means the same contrast at any bit
        depth.

    Returns
    -------
    sharpened : (M, N[, C]) ndarray
        Same shape and dtype as ``image``. Integer results are clipped to the dtype's full range (never to
        8 bits); float results are not clipped.

    Notes
    -----
    uint8 images follow Pillow's integer arithmetic exactly (24-bit fixed-point box weights, rounding after
    every pass, ``in + diff * percent / 100`` with C's truncating division) and are byte-identical to
    ``Image.fromarray(image).filter(ImageFilter.UnsharpMask(radius, percent, threshold))`` for integer
    ``percent`` and ``threshold``. Other dtypes use the same box weights in float64 without intermediate
    rounding, then round half up. Pillow's blur has exactly the variance ``radius**2`` but is not a true
    Gaussian: on 8-bit images it differs from ``scipy.ndimage.gaussian_filter`` by a few grey levels.
    """
    image = _check_image(image)
    for name, value in (("radius", radius), ("percent", percent), ("threshold", threshold)):
        if isinstance(value, bool) or not np.isscalar(value) or not np.isfinite(value) or value < 0:
            raise OptionError(f"`{name}` must be a non-negative number, got {value!r}")
    if image.dtype == np.uint8:
        original = image.astype(np.int64)
        diff = original - _pillow_gaussian_blur(original, radius, exact=True)
        # C's integer division truncates towards zero; diff * percent / 100 is never within float error of
        # an integer it is not equal to, so np.trunc reproduces it.
        step = np.trunc(diff * float(percent) / 100.0).astype(np.int64)
        sharpened = np.where(np.abs(diff) > threshold, np.clip(original + step, 0, 255), original)
        return sharpened.astype(np.uint8)
    original = image.astype(np.float64)
    if image.dtype.kind == "f":
        scale = 1.0 / 255.0
    else:
        info = np.iinfo(image.dtype)
        scale = (float(info.max) - float(info.min)) / 255.0
    diff = original - _pillow_gaussian_blur(original, radius, exact=False)
    sharpened = np.where(np.abs(diff) > threshold * scale, original + diff * (percent / 100.0), original)
    return _to_dtype(sharpened, image.dtype)


# --------------------------------------------------------------------------------------------------------
# Resizing and normalisation


def resize(
    image: np.ndarray,
    size: int | tuple[int, int],
    *,
    anti_aliasing: bool = True,
    order: int = 1,
) -> np.ndarray:
    """Resize to the network's input size, keeping dtype and bit depth.

    Parameters
    ----------
    image : (M, N[, C]) ndarray
        Image of any integer or float dtype.
    size : int or (int, int)
        Output ``(height, width)``; an int gives a square. Shpilman et al. used
        :data:`DEFAULT_INPUT_SIZE` (300).
    anti_aliasing : bool, optional
        Gaussian pre-filter when shrinking, so fine texture (e.g. microtubules) does not alias.
    order : int, optional
        Spline order of the interpolation, 0..5 (0 = nearest neighbour, 1 = bilinear).

    Returns
    -------
    resized : (height, width[, C]) ndarray
        Same dtype as ``image``: integer images are rounded and clipped to their dtype's range (uint16 data
        keep their 12-, 14- or 16-bit values), float images stay float.
    """
    from skimage.transform import resize as skimage_resize

    image = _check_image(image)
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        shape = (int(size), int(size))
    elif isinstance(size, Sequence) and len(size) == 2:
        shape = (check_int("size", size[0]), check_int("size", size[1]))
    else:
        raise OptionError(f"`size` must be an int or a (height, width) pair, got {size!r}")
    if min(shape) < 1:
        raise OptionError(f"`size` must be positive, got {size!r}")
    order = check_int("order", order)
    if not 0 <= order <= 5:
        raise OptionError(f"`order` must be in 0..5, got {order!r}")
    # preserve_range keeps raw intensities (skimage would otherwise rescale integers to [0, 1]).
    resized = skimage_resize(
        image,
        shape + image.shape[2:],
        order=order,
        mode="reflect",
        anti_aliasing=bool(anti_aliasing),
        preserve_range=True,
    )
    return _to_dtype(np.asarray(resized, dtype=np.float64), image.dtype)


def _per_channel(value: float | Sequence[float], channels: int, name: str) -> np.ndarray:
    values = np.asarray(value, dtype=np.float64).reshape(-1)
    if values.size == 1:
        return np.repeat(values, channels)
    if values.size != channels:
        raise OptionError(f"`{name}` must be one number or one per channel ({channels}), got {value!r}")
    return values


def normalize(
    image: np.ndarray,
    *,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
) -> np.ndarray:
    """Standardise intensities: ``(image − mean) / std`` per channel, as float32.

    Parameters
    ----------
    image : (M, N[, C]) ndarray
        Image of any integer or float dtype.
    mean, std : float or sequence of float, optional
        Statistics to use, one number or one per channel (e.g. computed on the training set). ``None``
        (the default) uses the image's own per-channel mean or standard deviation (a per-image z-score).

    Returns
    -------
    normalized : (M, N[, C]) ndarray of float32
        A channel whose own standard deviation is zero (a constant image) becomes all zeros rather than
        NaN or infinity.
    """
    image = _check_image(image)
    values = image.astype(np.float64)
    planes = values if values.ndim == 3 else values[..., np.newaxis]
    channels = planes.shape[-1]
    if mean is None:
        centre = planes.mean(axis=(0, 1))
    else:
        centre = _per_channel(mean, channels, "mean")
    if std is None:
        spread = planes.std(axis=(0, 1))
        # A constant channel has std 0 up to summation round-off (~1e-15 relative); treat it as exactly 0.
        flat = spread <= 1e-10 * np.maximum(np.abs(planes).max(axis=(0, 1)), np.finfo(np.float64).tiny)
        spread = np.where(flat, np.inf, spread)
    else:
        spread = _per_channel(std, channels, "std")
        if not np.all(spread > 0) or not np.all(np.isfinite(spread)):
            raise OptionError(f"`std` must be positive and finite, got {std!r}")
    result = (planes - centre) / spread
    return result.reshape(image.shape).astype(np.float32)
