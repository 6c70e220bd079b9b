"""Reading and writing microscope images without losing bits.

Images come back as numpy arrays in their stored dtype, channels last: ``(H, W)`` for one channel and
``(H, W, C)`` for several. 16-bit data stays 16-bit (the most repeated complaint against other deep-learning
loaders is silent truncation to 8 bits). Intensity scaling is never implicit: :func:`normalize_intensity`
does it, by bit depth, by dtype range or by percentiles, as the caller chooses.

Every read validates the file and raises :class:`~cytolens.core.errors.ImageReadError` naming the file and the
problem (empty, truncated or corrupt, unknown format, unexpected dimensionality, NaN/inf values, a declared
size past :func:`max_image_pixels`, checked before anything is decoded). Every write is atomic.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import png  # pypng: Pillow reads and writes 16-bit colour PNG as 8-bit
import tifffile

from cytolens.core.atomic import atomic_path
from cytolens.core.errors import CytolensError, ImageReadError, OptionError, check_choice, check_utf8_name
from cytolens.data.vendor import VENDOR_FORMATS, VENDOR_SUFFIXES, read_vendor_image, vendor_channel_names

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

# tifffile logs each damaged tag it meets before raising; cytolens reports the file in one line of its own, so
# without a handler here Python's last-resort handler would print those records on stderr too.
logging.getLogger("tifffile").addHandler(logging.NullHandler())

TIFF_SUFFIXES = (".tif", ".tiff")
PNG_SUFFIXES = (".png",)
JPEG_SUFFIXES = (".jpg", ".jpeg")
# ND2, CZI and LIF are read through bioio, the optional `formats` extra (cytolens.data.vendor).
IMAGE_SUFFIXES = TIFF_SUFFIXES + PNG_SUFFIXES + JPEG_SUFFIXES + VENDOR_SUFFIXES

# Magic numbers identify the real format even when a file's suffix lies.
_MAGIC = {
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
    b"II+\x00": "tiff",  # BigTIFF
    b"MM\x00+": "tiff",
    b"\x89PNG": "png",
    b"\xff\xd8\xff": "jpeg",
}
# Axes that tifffile reports and that cytolens treats as channels.
_CHANNEL_AXES = "CS"
# Generic axes (pages, sequences) with no declared meaning: a stack of them is read as channels.
_GENERIC_AXES = "QIP"
MAX_CHANNELS = 64
#: Largest image read whole, in pixel values (height × width × channels × pages), unless
#: ``CYTOLENS_MAX_IMAGE_PIXELS`` says otherwise: a file declaring more is refused before anything is allocated
#: (a damaged header or a decompression bomb would otherwise ask for gigabytes to exabytes). 2³⁰ values is a
#: 32,768² 16-bit image (2 GiB decoded); large TIFFs that ``segment predict`` streams band by band are not held
#: whole and are not limited by it.
DEFAULT_MAX_IMAGE_PIXELS = 1 << 30
MAX_IMAGE_PIXELS_ENV = "CYTOLENS_MAX_IMAGE_PIXELS"

# What tifffile, Pillow and pypng raise for damaged files.
# Found by fuzzing (tests/test_io_fuzz.py): a mutated header also makes tifffile divide by zero or fail an assert.
_DECODER_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, RuntimeError, LookupError, TypeError, SyntaxError, EOFError, ArithmeticError,
    AssertionError, struct.error, zlib.error, png.Error,
)

NormalizeMethod = Literal["bit_depth", "dtype", "percentile"]
NORMALIZE_METHODS: tuple[str, ...] = ("bit_depth", "dtype", "percentile")


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`read_image_info` learns about an image file.

    Attributes
    ----------
    path : Path
        The file.
    format : str
        ``"tiff"``, ``"ome-tiff"``, ``"png"``, ``"jpeg"``, or a vendor format: ``"nd2"``, ``"czi"``, ``"lif"``.
    shape : tuple of int
        Shape of the array :func:`read_image` returns, ``(H, W)`` or ``(H, W, C)``.
    dtype : numpy.dtype
        Stored dtype.
    bits_used : int
        Bits needed for the largest value present (see :func:`bits_in_use`); for float images, 32 or 64.
    channel_names : tuple of str, optional
        Channel names from OME metadata, when the file has them.
    """

    path: Path
    format: str
    shape: tuple[int, ...]
    dtype: np.dtype
    bits_used: int
    channel_names: tuple[str, ...] | None = None

    @property
    def channels(self) -> int:
        """Number of channels (1 for a grayscale image)."""
        return 1 if len(self.shape) == 2 else self.shape[2]


def detect_format(path: str | Path) -> str:
    """Return the image format of ``path`` from its first bytes: ``"tiff"``, ``"png"`` or ``"jpeg"``; or, by its
    suffix, a vendor format read through bioio: ``"nd2"``, ``"czi"`` or ``"lif"``.

    Raises
    ------
    ImageReadError
        If the file is missing, empty, or of a format cytolens does not read.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError("file not found", path=path)
    if path.is_dir():
        raise ImageReadError("is a folder, not an image file", path=path)
    size = path.stat().st_size
    if size == 0:
        raise ImageReadError("file is empty (0 bytes)", path=path)
    if path.suffix.lower() in VENDOR_FORMATS:  # none is TIFF-based; bioio's plugin checks the file itself
        return VENDOR_FORMATS[path.suffix.lower()][0]
    with path.open("rb") as handle:
        head = handle.read(8)
    for magic, fmt in _MAGIC.items():
        if head.startswith(magic):
            return fmt
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise ImageReadError(
            f"not a valid {path.suffix.lower().lstrip('.').upper()} file (corrupt, or another format with the "
            "wrong name)",
            path=path,
        )
    raise ImageReadError(
        f"unknown image format {path.suffix or '(no suffix)'!r}; cytolens reads TIFF/OME-TIFF, PNG and JPEG, and "
        "ND2, CZI and LIF with the `formats` extra",
        path=path,
    )


def max_image_pixels() -> int:
    """The largest number of pixel values an image read whole may declare (see :data:`DEFAULT_MAX_IMAGE_PIXELS`).

    Raises
    ------
    OptionError
        If ``CYTOLENS_MAX_IMAGE_PIXELS`` is set to anything but a positive whole number.
    """
    value = os.environ.get(MAX_IMAGE_PIXELS_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit < 1:
        raise OptionError(f"{MAX_IMAGE_PIXELS_ENV} must be a positive whole number of pixels, got {value!r}")
    return limit


def _check_declared_size(path: Path, shape: tuple[int, ...]) -> None:
    """Refuse an image whose header declares more pixel values than :func:`max_image_pixels`, before decoding."""
    values = int(np.prod([int(n) for n in shape], dtype=object))
    limit = max_image_pixels()
    if values > limit:
        size = " × ".join(str(int(n)) for n in shape)
        raise ImageReadError(
            f"declares an image of {size} ({values / 1e9:.3g} billion pixel values), more than the limit of "
            f"{limit / 1e9:.3g} billion: a damaged header or a decompression bomb; set {MAX_IMAGE_PIXELS_ENV} "
            "to read a genuine image this large",
            path=path,
        )


def read_image(
    path: str | Path,
    *,
    channel_axis: int | None = None,
    grayscale: bool = False,
) -> np.ndarray:
    """Read a 2-D image, grayscale or multi-channel, in its stored dtype.

    Parameters
    ----------
    path : str or Path
        A TIFF (single or multi-page, OME-TIFF), PNG (8 or 16-bit) or JPEG file; with the `formats` extra, the
        first scene of an ND2, CZI or LIF file (:mod:`cytolens.data.vendor`).
    channel_axis : int, optional
        Which axis of the stored array holds the channels, for files whose metadata does not say. By default
        the file's own axes are used (OME/ImageJ ``C``, RGB samples ``S``), and a plain multi-page TIFF is read
        as one channel per page. Vendor files always declare their axes; it is not used for them.
    grayscale : bool, default False
        Return a single-channel ``(H, W)`` image: channels that are identical copies (a grayscale image saved
        as RGB) collapse to one; different channels are averaged (same dtype, rounded).

    Returns
    -------
    image : (H, W) or (H, W, C) ndarray
        uint8, uint16, other integer or float dtype exactly as stored; an alpha channel is kept as a channel.

    Raises
    ------
    ImageReadError
        If the file is empty, truncated, corrupt, of an unknown format, not 2-D (after dropping length-1
        axes), or holds NaN or infinite values.
    """
    path = Path(path)
    fmt = detect_format(path)
    try:
        if fmt == "tiff":
            image = _read_tiff(path, channel_axis=channel_axis)
        elif fmt in ("nd2", "czi", "lif"):
            image = read_vendor_image(path)
        else:
            image = _read_pillow(path, channel_axis=channel_axis)
    except (ImageReadError, OptionError):  # ours, already phrased for the user (OptionError is a ValueError)
        raise
    except MemoryError as exc:
        raise ImageReadError(f"cannot be read: decoding it needs more memory than this machine has ({exc})",
                             path=path) from exc
    except _DECODER_ERRORS as exc:
        # Decoders signal damage with many exception types; the user only needs to know the file is bad.
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageReadError(f"cannot be read, the file is truncated or corrupt ({detail})", path=path) from exc
    if image.dtype == bool:  # a bilevel (1-bit) image: 0 and 1, as the integers every pipeline expects
        image = image.astype(np.uint8)
    if image.dtype.kind not in "uif":
        raise ImageReadError(f"unsupported pixel type {image.dtype}", path=path)
    _check_finite(image, path)
    if grayscale:
        # Only Pillow's formats mark a last channel as alpha (LA, RGBA); a TIFF's channels are all data.
        has_alpha = fmt != "tiff" and image.ndim == 3 and image.shape[2] in (2, 4)
        image = to_grayscale(image, alpha=has_alpha)
    return image


def read_image_info(path: str | Path, *, channel_axis: int | None = None) -> ImageInfo:
    """Read and validate an image and describe it (shape, dtype, bit depth in use, channel names).

    The whole image is decoded, so every problem :func:`read_image` would raise is raised here too.
    """
    path = Path(path)
    image = read_image(path, channel_axis=channel_axis)
    fmt = detect_format(path)
    if fmt == "tiff":
        with tifffile.TiffFile(path) as tif:
            fmt = "ome-tiff" if tif.is_ome else fmt
    return ImageInfo(path, fmt, image.shape, image.dtype, bits_in_use(image), read_channel_names(path))


def read_channel_names(path: str | Path) -> tuple[str, ...] | None:
    """The channel names a file records (OME-TIFF's ``Channel`` names, a vendor file's own), without decoding
    its pixels; None when it names none (plain TIFF, PNG, JPEG).

    Raises
    ------
    ImageReadError
        If the file cannot be opened, or a vendor file lacks the `formats` extra.
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt in ("nd2", "czi", "lif"):
        return vendor_channel_names(path)
    if fmt != "tiff":
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            return _ome_channel_names(tif.ome_metadata) if tif.is_ome else None
    except _DECODER_ERRORS as exc:
        raise ImageReadError(f"cannot be read as TIFF ({exc})", path=path) from exc


def _read_tiff(path: Path, *, channel_axis: int | None) -> np.ndarray:
    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise ImageReadError("TIFF file holds no image", path=path)
        series = tif.series[0]
        # A plain multi-page file written page by page comes back as several 2-D series of one shape:
        # stack them as channels (a common way to store one channel per page).
        stacked = len(tif.series) > 1 and all(s.shape == series.shape and s.axes == "YX" for s in tif.series)
        _check_declared_size(path, ((len(tif.series),) if stacked else ()) + tuple(series.shape))
        data = series.asarray()
        axes = series.axes
        if stacked:
            data = np.stack([s.asarray() for s in tif.series])
            axes = "Q" + axes
    return _to_channels_last(data, axes, channel_axis=channel_axis, path=path)


def _read_pillow(path: Path, *, channel_axis: int | None) -> np.ndarray:
    from PIL import Image

    if detect_format(path) == "png" and _png_is_16bit_colour(path):
        with Image.open(path) as opened:  # the header only, for the size check
            _check_declared_size(path, (opened.height, opened.width, len(opened.getbands())))
        data = _read_png_16bit_colour(path)
    else:
        try:
            with Image.open(path) as opened:
                # The header's size is checked before any pixel is decoded; Pillow refuses sizes past its own
                # limit (about 179 megapixels) too.
                _check_declared_size(path, (opened.height, opened.width, len(opened.getbands())))
                data = np.asarray(_pillow_pixels(opened))
        except Image.DecompressionBombError as exc:
            raise ImageReadError(f"declares an image too large to decode safely ({exc})", path=path) from exc
    axes = "YX" if data.ndim == 2 else "YXS"
    return _to_channels_last(data, axes, channel_axis=channel_axis, path=path)


def _pillow_pixels(image: PILImage) -> PILImage:
    """The image as numpy should see it: a palette image becomes its palette's colours; every other mode (1-bit,
    8/16-bit grayscale, RGB(A), CMYK, 32-bit integer and float) keeps its values."""
    return image.convert(image.palette.mode) if image.mode == "P" and image.palette is not None else image


def _png_is_16bit_colour(path: Path) -> bool:
    """True for a 16-bit PNG that is not plain grayscale, which Pillow would silently read as 8-bit."""
    with path.open("rb") as handle:
        header = handle.read(26)
    # IHDR is always the first chunk: bytes 24 and 25 are bit depth and colour type.
    return len(header) == 26 and header[24] == 16 and header[25] != 0


def _read_png_16bit_colour(path: Path) -> np.ndarray:
    width, height, rows, info = png.Reader(filename=str(path)).asDirect()
    planes = int(info["planes"])
    data = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
    return data.reshape(height, width, planes) if planes > 1 else data.reshape(height, width)


def _to_channels_last(data: np.ndarray, axes: str, *, channel_axis: int | None, path: Path) -> np.ndarray:
    """Drop length-1 axes and move the channel axis last; refuse anything that is not one 2-D image."""
    if len(axes) != data.ndim:  # tifffile always agrees, but guard against an odd reader
        axes = "Q" * (data.ndim - 2) + "YX"
    if channel_axis is not None:
        if data.ndim == 2:
            raise OptionError(f"`channel_axis` was given but {path} holds a single-channel 2-D image")
        if not -data.ndim <= channel_axis < data.ndim:
            raise OptionError(f"`channel_axis` must be in [{-data.ndim}, {data.ndim - 1}] for {path}, got {channel_axis}")
        # The user's word overrides the file's labels: the named axis is C and the last two others are Y, X.
        data = np.moveaxis(data, channel_axis, -1)
        axes = "Q" * (data.ndim - 3) + "YXC"
    keep = [i for i, (ax, n) in enumerate(zip(axes, data.shape)) if n > 1 or ax in "YX"]
    data = data.reshape([data.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    extra = [(ax, n) for ax, n in zip(axes, data.shape) if ax not in "YX"]
    if len(extra) > 1 or (extra and extra[0][0] not in _CHANNEL_AXES + _GENERIC_AXES):
        described = ", ".join(f"{_AXIS_NAMES.get(ax, ax)} of {n}" for ax, n in extra)
        raise ImageReadError(
            f"unexpected dimensionality: shape {tuple(data.shape)} (axes {axes}) has {described}; cytolens reads "
            "2-D images with optional channels (save one plane, or name the channel axis with read_image's "
            "channel_axis)",
            path=path,
        )
    if extra and extra[0][1] > MAX_CHANNELS:
        raise ImageReadError(
            f"unexpected dimensionality: {extra[0][1]} pages would be {extra[0][1]} channels (at most "
            f"{MAX_CHANNELS}); is this a z-stack or a time series?",
            path=path,
        )
    if "Y" not in axes or "X" not in axes:
        raise ImageReadError(f"unexpected dimensionality: shape {tuple(data.shape)} is not an image", path=path)
    if extra:
        data = np.moveaxis(data, axes.index(extra[0][0]), -1)
    return np.ascontiguousarray(data)


_AXIS_NAMES = {"Z": "a Z axis", "T": "a time axis", "C": "a channel axis", "S": "samples", "Q": "pages"}


def _check_finite(image: np.ndarray, path: Path) -> None:
    if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
        n_nan = int(np.isnan(image).sum())
        n_inf = int(np.isinf(image).sum())
        raise ImageReadError(f"holds invalid values ({n_nan} NaN, {n_inf} infinite pixels)", path=path)
    if image.dtype.kind not in "uif" and image.dtype != np.bool_:
        raise ImageReadError(f"unsupported pixel type {image.dtype}", path=path)


def _ome_channel_names(ome_xml: str | None) -> tuple[str, ...] | None:
    if not ome_xml:
        return None
    import xml.etree.ElementTree as ET

    root = ET.fromstring(ome_xml)
    pixels = next((el for el in root.iter() if el.tag.endswith("}Pixels")), None)
    if pixels is None:
        return None
    names = [el.get("Name") or "" for el in pixels if el.tag.endswith("}Channel")]
    return tuple(names) if names and any(names) else None


def to_grayscale(image: np.ndarray, *, alpha: bool = False) -> np.ndarray:
    """Collapse a channels-last image to ``(H, W)``, keeping the dtype.

    Identical channels (a grayscale image stored as RGB) collapse without change; otherwise the channels
    are averaged (integers rounded).

    Parameters
    ----------
    image : (H, W) or (H, W, C) ndarray
    alpha : bool, default False
        The last channel is transparency (a PNG's LA or RGBA) and is ignored. Every channel of a microscopy
        TIFF is data, so this is never guessed from the channel count.
    """
    if image.ndim == 2:
        return image
    channels = image[..., :-1] if alpha and image.shape[2] > 1 else image
    if all(np.array_equal(channels[..., 0], channels[..., c]) for c in range(1, channels.shape[2])):
        return np.ascontiguousarray(channels[..., 0])
    mean = channels.mean(axis=2, dtype=np.float64)
    if np.issubdtype(image.dtype, np.integer):
        return np.rint(mean).astype(image.dtype)
    return mean.astype(image.dtype)


def bits_in_use(image: np.ndarray) -> int:
    """Bits needed for the largest value of an integer image (e.g. 14 for a 14-bit camera in a uint16 file).

    Float images return their storage size in bits. An all-zero image returns 1.
    """
    if np.issubdtype(image.dtype, np.floating):
        return image.dtype.itemsize * 8
    if image.dtype == np.bool_:
        return 1
    top = int(image.max()) if image.size else 0
    return max(1, top.bit_length())


def normalize_intensity(
    image: np.ndarray,
    *,
    method: NormalizeMethod,
    bit_depth: int | None = None,
    percentiles: tuple[float, float] = (1.0, 99.8),
    clip: bool = True,
) -> np.ndarray:
    """Scale intensities to ``[0, 1]`` as float32, by a rule chosen explicitly.

    Parameters
    ----------
    image : (H, W) or (H, W, C) ndarray
        Any integer or float dtype. Not modified.
    method : {"bit_depth", "dtype", "percentile"}
        ``"bit_depth"`` divides by ``2**bit_depth - 1`` (a 14-bit camera in a 16-bit file: ``bit_depth=14``);
        ``"dtype"`` divides by the dtype's maximum (255, 65535); ``"percentile"`` maps the low and high
        percentiles of each channel to 0 and 1.
    bit_depth : int, optional
        Required for ``method="bit_depth"``; between 1 and 32.
    percentiles : (float, float), default (1.0, 99.8)
        Low and high percentiles for ``method="percentile"``.
    clip : bool, default True
        Clip the result to ``[0, 1]``.

    Returns
    -------
    (H, W) or (H, W, C) ndarray of float32
    """
    check_choice("method", method, NORMALIZE_METHODS)
    data = np.asarray(image, dtype=np.float32)
    if method == "bit_depth":
        if bit_depth is None or not 1 <= bit_depth <= 32:
            raise OptionError(f"`bit_depth` must be an integer in [1, 32] for method='bit_depth', got {bit_depth!r}")
        out = data / np.float32(2**bit_depth - 1)
    elif method == "dtype":
        if not np.issubdtype(image.dtype, np.integer):
            raise OptionError(
                f"method='dtype' needs an integer image (a float image has no fixed range), got {image.dtype}"
            )
        out = data / np.float32(np.iinfo(image.dtype).max)
    else:
        low, high = percentiles
        if not 0 <= low < high <= 100:
            raise OptionError(f"`percentiles` must satisfy 0 <= low < high <= 100, got {percentiles!r}")
        axes = (0, 1)
        lo = np.percentile(data, low, axis=axes, keepdims=True).astype(np.float32)
        hi = np.percentile(data, high, axis=axes, keepdims=True).astype(np.float32)
        # A flat channel has no contrast to stretch; map it to 0 rather than dividing by zero.
        span = np.where(hi > lo, hi - lo, np.float32(1))
        out = (data - lo) / span
    if clip:
        out = np.clip(out, 0.0, 1.0)
    return out.astype(np.float32, copy=False)


def write_tiff(
    path: str | Path,
    image: np.ndarray,
    *,
    channel_names: list[str] | tuple[str, ...] | None = None,
    ome: bool | None = None,
    compression: str | None = None,
) -> Path:
    """Write an image as TIFF or OME-TIFF, atomically, in its own dtype.

    Parameters
    ----------
    path : str or Path
        Destination; a name ending in ``.ome.tif``/``.ome.tiff`` writes OME-TIFF unless ``ome`` says otherwise.
    image : (H, W) or (H, W, C) ndarray
        Channels last; stored channel-first (one page per channel) so Fiji and napari show channels.
    channel_names : sequence of str, optional
        Names of the C channels, stored in the OME metadata (implies OME-TIFF).
    ome : bool, optional
        Force OME-TIFF on or off.
    compression : str, optional
        A tifffile compression name such as ``"zlib"``; uncompressed by default.

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise OptionError(f"`image` must be (H, W) or (H, W, C), got shape {image.shape}")
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channel_names is not None and len(channel_names) != channels:
        raise OptionError(f"`channel_names` has {len(channel_names)} names for {channels} channels")
    if channel_names is not None and ome is False:
        raise OptionError("`channel_names` are stored in OME metadata; they need ome=True (or ome=None)")
    if ome is None:
        ome = channel_names is not None or path.name.lower().endswith((".ome.tif", ".ome.tiff"))
    data = image if image.ndim == 2 else np.moveaxis(image, -1, 0)
    axes = "YX" if image.ndim == 2 else "CYX"
    metadata: dict[str, object] = {"axes": axes}
    if channel_names is not None:
        metadata["Channel"] = {"Name": list(channel_names)}
    with atomic_path(path) as tmp:
        tifffile.imwrite(
            tmp, data, ome=ome, metadata=metadata if ome else None, photometric="minisblack", compression=compression
        )
    return path


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an 8 or 16-bit image as PNG, atomically.

    Parameters
    ----------
    path : str or Path
        Destination.
    image : (H, W) or (H, W, C) ndarray of uint8 or uint16
        C is 1, 3 (RGB) or 4 (RGBA); 16-bit is written as 16-bit grayscale or RGB(A), never truncated.
    """
    from PIL import Image

    path = Path(path)
    image = np.asarray(image)
    if image.dtype not in (np.uint8, np.uint16):
        raise OptionError(f"PNG holds uint8 or uint16 pixels, got {image.dtype}; convert explicitly first")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise OptionError(f"PNG holds (H, W), (H, W, 3) or (H, W, 4) images, got shape {image.shape}")
    with atomic_path(path) as tmp:
        if image.dtype == np.uint16 and image.ndim == 3:
            writer = png.Writer(image.shape[1], image.shape[0], bitdepth=16, greyscale=False, alpha=image.shape[2] == 4)
            with tmp.open("wb") as handle:
                writer.write(handle, image.reshape(image.shape[0], -1))
        else:
            # Pillow keeps uint8 and 16-bit grayscale as they are (mode L, RGB, RGBA or I;16).
            Image.fromarray(image).save(tmp, format="PNG")
    return path


def write_image(path: str | Path, image: np.ndarray, **options: object) -> Path:
    """Write ``image`` in the format its suffix names (``.tif``, ``.tiff``, ``.ome.tif``, ``.png``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return write_tiff(path, image, **options)  # type: ignore[arg-type]
    if suffix in PNG_SUFFIXES:
        return write_png(path, image)
    raise OptionError(f"cannot write {path}: use a .tif, .tiff, .ome.tif or .png name (got {suffix or 'no suffix'!r})")


def iter_image_files(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder`` (by suffix, case-insensitive), in natural name order; hidden files skipped."""
    from natsort import natsorted

    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    images = [check_utf8_name(p) for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    return natsorted(images, key=lambda p: p.name)


def find_image_files(path: str | Path) -> list[Path]:
    """An image file, or every image file under a folder (recursively, hidden files skipped), in natural order.

    Raises
    ------
    CytolensError
        If ``path`` does not exist or a folder holds no image files.
    """
    from natsort import natsorted

    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise CytolensError("no such file or folder", path=path)
    found = [
        p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    ]
    if not found:
        raise CytolensError(f"holds no image files ({', '.join(IMAGE_SUFFIXES)})", path=path)
    return natsorted(found, key=str)
