"""Physical pixel sizes from the image files themselves: OME-TIFF's ``PhysicalSizeX/Y``, ImageJ TIFF's
resolution with its unit, and a vendor file's (ND2, CZI, LIF) calibration through bioio.

A microscope's acquisition software writes the calibration into the file; reading it there means a cell table in
µm² needs no number typed by hand (``--pixel-size`` then only overrides). PNG and JPEG carry no microscope
calibration, and a plain TIFF's resolution tags are a scanner's dots per inch, not a pixel size: both give None.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import tifffile

from cytolens.core.errors import ImageReadError
from cytolens.data.vendor import VENDOR_FORMATS, vendor_pixel_size

__all__ = ["PixelSize", "read_pixel_size"]

#: Length units as OME (UnitsLength) and ImageJ spell them, in micrometres.
_MICROMETRES: dict[str, float] = {
    "µm": 1.0, "μm": 1.0, "um": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "micrometre": 1.0,
    "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3, "Å": 1e-4, "angstrom": 1e-4,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3, "cm": 1e4, "m": 1e6,
}


@dataclass(frozen=True)
class PixelSize:
    """The physical size of one pixel.

    Attributes
    ----------
    y_um, x_um : float
        Height and width of a pixel in micrometres.
    source : str
        Where it was read: ``"OME-XML"``, ``"ImageJ"``, or the vendor format (``"ND2"``, ``"CZI"``, ``"LIF"``).
    """

    y_um: float
    x_um: float
    source: str

    @property
    def area_um2(self) -> float:
        """The area of one pixel in µm²."""
        return self.y_um * self.x_um

    @property
    def side_um(self) -> float:
        """The side of a square pixel of the same area (what a cell table's µm² areas need)."""
        return math.sqrt(self.area_um2)


def _micrometres(value: float, unit: str | None) -> float | None:
    factor = _MICROMETRES.get((unit or "µm").strip().replace("\\u00B5", "µ"))
    if factor is None or not math.isfinite(value) or value <= 0:
        return None
    return value * factor


def _from_ome(xml: str) -> PixelSize | None:
    root = ET.fromstring(xml)
    pixels = next((element for element in root.iter() if element.tag.endswith("}Pixels")), None)
    if pixels is None or "PhysicalSizeX" not in pixels.attrib:
        return None
    x = _micrometres(float(pixels.attrib["PhysicalSizeX"]), pixels.attrib.get("PhysicalSizeXUnit"))
    y_text = pixels.attrib.get("PhysicalSizeY", pixels.attrib["PhysicalSizeX"])
    y = _micrometres(float(y_text), pixels.attrib.get("PhysicalSizeYUnit", pixels.attrib.get("PhysicalSizeXUnit")))
    return PixelSize(y, x, "OME-XML") if x is not None and y is not None else None


def _from_imagej(tif: tifffile.TiffFile) -> PixelSize | None:
    metadata = tif.imagej_metadata or {}
    unit = metadata.get("unit")
    tags = tif.pages.first.tags
    if not unit or "XResolution" not in tags:
        return None  # ImageJ writes no unit for an uncalibrated image (its size is then "1 pixel")

    def size(tag: str) -> float | None:
        numerator, denominator = tags[tag].value if tag in tags else tags["XResolution"].value
        return _micrometres(denominator / numerator, str(unit)) if numerator > 0 else None

    x, y = size("XResolution"), size("YResolution")
    return PixelSize(y, x, "ImageJ") if x is not None and y is not None else None


def read_pixel_size(path: str | Path) -> PixelSize | None:
    """The physical pixel size a file records (OME-XML first, then ImageJ's calibration; a vendor file's own), or
    None.

    Parameters
    ----------
    path : str or Path
        An image file; TIFF (and OME-TIFF) files and, with the `formats` extra, ND2, CZI and LIF files are
        looked into.

    Returns
    -------
    PixelSize or None
        None for PNG/JPEG, a TIFF without calibration, or a unit that is not a length.

    Raises
    ------
    ImageReadError
        If the TIFF cannot be opened or its OME-XML is not XML; a vendor file without the `formats` extra.
    """
    path = Path(path)
    if path.suffix.lower() in VENDOR_FORMATS:
        found_vendor = vendor_pixel_size(path)
        label = VENDOR_FORMATS[path.suffix.lower()][0].upper()
        return None if found_vendor is None else PixelSize(found_vendor[0], found_vendor[1], label)
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    try:
        with tifffile.TiffFile(path) as tif:
            if tif.is_ome and tif.ome_metadata:
                found = _from_ome(tif.ome_metadata)
                if found is not None:
                    return found
            return _from_imagej(tif) if tif.is_imagej else None
    except ET.ParseError as exc:
        raise ImageReadError(f"its OME-XML metadata is not valid XML ({exc})", path=path) from exc
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise ImageReadError(f"cannot be read as TIFF ({exc})", path=path) from exc
