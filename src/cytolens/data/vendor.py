"""Vendor microscope formats (Nikon ND2, Zeiss CZI, Leica LIF) read through bioio, the optional `formats` extra.

Acquisition software saves in these formats first; a lab should not have to export TIFFs before cytolens reads
them. bioio and its per-format plugins are large (dask, xarray, vendor SDKs), so they are an optional extra and
imported only when such a file is read. Without them the error names the extra to install.

A vendor file often holds several scenes (stage positions) and Z or time axes. cytolens reads one 2-D image per
file, as it does for TIFF: the first scene, and a single Z plane and time point (a stack is refused with the
same words as a TIFF stack); channels come last, in their stored dtype.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from cytolens.core.errors import ImageReadError

__all__ = ["EXTRA_HINT", "VENDOR_FORMATS", "VENDOR_SUFFIXES", "read_vendor_image", "vendor_channel_names",
           "vendor_pixel_size"]

#: File suffix → (format name, bioio plugin module, what users call the format).
VENDOR_FORMATS: dict[str, tuple[str, str, str]] = {
    ".nd2": ("nd2", "bioio_nd2", "Nikon ND2"),
    ".czi": ("czi", "bioio_czi", "Zeiss CZI"),
    ".lif": ("lif", "bioio_lif", "Leica LIF"),
}
VENDOR_SUFFIXES: tuple[str, ...] = tuple(VENDOR_FORMATS)
#: How to get the readers, quoted in every error that lacks them.
EXTRA_HINT = "pip install 'cytolens[formats]'"


def _open(path: Path) -> Any:
    """A ``bioio.BioImage`` on the file's first scene, through the plugin its suffix names."""
    suffix = path.suffix.lower()
    if suffix not in VENDOR_FORMATS:
        raise ImageReadError(f"is not one of the vendor formats {', '.join(VENDOR_SUFFIXES)}", path=path)
    _, plugin, label = VENDOR_FORMATS[suffix]
    if importlib.util.find_spec("bioio") is None or importlib.util.find_spec(plugin) is None:
        raise ImageReadError(
            f"is a {label} file; reading it needs the `formats` extra (bioio and {plugin.replace('_', '-')}): "
            f"{EXTRA_HINT}",
            path=path,
        )
    import bioio
    from bioio_base.exceptions import UnsupportedFileFormatError

    reader = importlib.import_module(plugin).Reader
    try:
        return bioio.BioImage(path, reader=reader)
    except UnsupportedFileFormatError as exc:  # the plugin looked at the bytes and said no
        raise ImageReadError(f"not a valid {label} file (corrupt, or another format with the wrong name)",
                             path=path) from exc
    except Exception as exc:  # noqa: BLE001 - each plugin and vendor SDK raises its own types for a damaged file
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageReadError(f"cannot be read as {label} ({detail})", path=path) from exc


def read_vendor_image(path: str | Path) -> np.ndarray:
    """Read the first scene of a vendor file as one 2-D image, channels last, in its stored dtype.

    Parameters
    ----------
    path : str or Path
        An ``.nd2``, ``.czi`` or ``.lif`` file.

    Returns
    -------
    image : (H, W) or (H, W, C) ndarray

    Raises
    ------
    ImageReadError
        If the `formats` extra is missing (the error says how to install it), the file is damaged, or the scene
        holds more than one Z plane or time point.
    """
    from cytolens.data.io import _check_declared_size, _to_channels_last

    path = Path(path)
    image = _open(path)
    dims = image.dims
    shape = {axis: int(getattr(dims, axis)) for axis in dims.order}
    _check_declared_size(path, tuple(shape.values()))
    order = "".join(axis for axis in "TZCYXS" if axis in shape)  # S: RGB samples of a brightfield camera
    try:
        data = np.asarray(image.get_image_data(order))
    except Exception as exc:  # noqa: BLE001 - as in _open
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageReadError(f"cannot be read, the file is truncated or corrupt ({detail})", path=path) from exc
    # _to_channels_last refuses Z and T axes longer than 1 in the words it uses for TIFF stacks.
    return _to_channels_last(data, order, channel_axis=None, path=path)


def vendor_channel_names(path: str | Path) -> tuple[str, ...] | None:
    """The channel names a vendor file records for its first scene, or None when it names none."""
    names = tuple(str(name) for name in (_open(Path(path)).channel_names or ()))
    return names if names and any(names) else None


def vendor_pixel_size(path: str | Path) -> tuple[float, float] | None:
    """``(y_um, x_um)``, the pixel size a vendor file records (bioio reports micrometres), or None."""
    sizes = _open(Path(path)).physical_pixel_sizes
    y, x = sizes.Y, sizes.X
    if y is None or x is None or not (np.isfinite(y) and np.isfinite(x)) or y <= 0 or x <= 0:
        return None
    return float(y), float(x)
