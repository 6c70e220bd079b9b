"""BBBC021's layout on disk: plate folders of per-channel 16-bit TIFFs described by two CSV tables.

BBBC021 (MCF-7 cells, Broad Bioimage Benchmark Collection) is distributed as one folder per plate (named
``Week<k>_<barcode>``, the "week" being the batch) holding one TIFF per field and channel, plus::

    BBBC021_v1_image.csv   one row per field: TableNumber, ImageNumber, Image_FileName_{DAPI,Tubulin,Actin},
                           Image_PathName_{DAPI,Tubulin,Actin} (the plate folder), Image_Metadata_Plate_DAPI,
                           Image_Metadata_Well_DAPI, Replicate, Image_Metadata_Compound,
                           Image_Metadata_Concentration
    BBBC021_v1_moa.csv     compound, concentration, moa — the mechanism of action of the annotated treatments

File names carry the site and the channel: ``Week1_150607_B02_s1_w1<GUID>.tif`` is site 1 of well B02, and
``w1``/``w2``/``w4`` are DAPI (DNA), β-tubulin and F-actin. Only 38 of the 113 compounds have an MOA; fields of
the others are kept with the MOA missing.

:func:`read_bbbc021` reads both tables, validates them, joins the MOA on (compound, concentration), derives the
week from the plate folder and resolves each file's absolute path. ``cytolens data check`` validates the files.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from cytolens.core.errors import LayoutError

IMAGE_CSV = "BBBC021_v1_image.csv"
MOA_CSV = "BBBC021_v1_moa.csv"
IMAGE_COLUMNS: tuple[str, ...] = (
    "TableNumber", "ImageNumber", "Image_FileName_DAPI", "Image_PathName_DAPI", "Image_FileName_Tubulin",
    "Image_PathName_Tubulin", "Image_FileName_Actin", "Image_PathName_Actin", "Image_Metadata_Plate_DAPI",
    "Image_Metadata_Well_DAPI", "Replicate", "Image_Metadata_Compound", "Image_Metadata_Concentration",
)
MOA_COLUMNS: tuple[str, ...] = ("compound", "concentration", "moa")
#: BBBC021's channels in CytoGAN's RGB order (DNA → R, tubulin → G, actin → B) and their ``w`` number.
CHANNELS: tuple[str, ...] = ("DAPI", "Tubulin", "Actin")
CHANNEL_WAVELENGTHS: dict[str, int] = {"DAPI": 1, "Tubulin": 2, "Actin": 4}
CONTROL = "DMSO"
#: The 12 MOAs of BBBC021, as spelled in ``BBBC021_v1_moa.csv``: a task over exactly these is the papers' task.
MOAS: tuple[str, ...] = (
    "Actin disruptors", "Aurora kinase inhibitors", "Cholesterol-lowering", "DNA damage", "DNA replication",
    "Eg5 inhibitors", "Epithelial", "Kinase inhibitors", "Microtubule destabilizers", "Microtubule stabilizers",
    "Protein degradation", "Protein synthesis",
)
#: Columns of the table :func:`read_bbbc021` returns.
FIELD_COLUMNS: tuple[str, ...] = (
    "ImageNumber", "TableNumber", "Plate", "Well", "Site", "Replicate", "Compound", "Concentration", "MOA",
    "Batch", "path_DAPI", "path_Tubulin", "path_Actin",
)
_SITE = re.compile(r"_s(\d+)(?:_w\d|[_.])", re.IGNORECASE)


def is_bbbc021(root: str | Path) -> bool:
    """True when ``root`` holds ``BBBC021_v1_image.csv``."""
    return (Path(root) / IMAGE_CSV).is_file()


def concentration_key(value: float) -> str:
    """A text key that matches concentrations written with different float precision (``0.3`` and ``0.30000001``)."""
    return f"{float(value):.6g}"


def week_of(path_name: str) -> str:
    """The week (batch) of a plate folder: ``"Week1_22123"`` or ``"Week1/Week1_22123"`` → ``"Week1"``."""
    folder = re.split(r"[\\/]", str(path_name).strip().rstrip("/\\"))[-1]
    return folder.split("_", 1)[0]


def _read_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise LayoutError(f"cannot be read as CSV ({detail})", path=path) from exc
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise LayoutError(f"lacks the column(s) {', '.join(missing)} (has: {', '.join(map(str, table.columns))})",
                          path=path)
    return table


def _blank_rows(table: pd.DataFrame, columns: list[str]) -> list[tuple[int, str]]:
    out = []
    for column in columns:
        blank = table[column].isna() | (table[column].astype(str).str.strip() == "")
        out.extend((int(i) + 2, column) for i in table.index[blank])  # +2: header line, 1-based lines
    return sorted(out)


def read_moa_table(path: str | Path) -> pd.DataFrame:
    """Read ``BBBC021_v1_moa.csv``: ``compound``, ``concentration`` (float), ``moa``.

    Raises
    ------
    LayoutError
        If a column is missing, a value is blank or not a number, or a treatment has two MOAs.
    """
    path = Path(path)
    table = _read_csv(path, MOA_COLUMNS)[list(MOA_COLUMNS)]
    blank = _blank_rows(table, list(MOA_COLUMNS))
    if blank:
        raise LayoutError(f"line {blank[0][0]}: empty {blank[0][1]}", path=path)
    numbers = pd.to_numeric(table["concentration"], errors="coerce")
    if numbers.isna().any():
        line = int(numbers.index[numbers.isna()][0]) + 2
        raise LayoutError(f"line {line}: concentration {table['concentration'][line - 2]!r} is not a number", path=path)
    table = table.assign(compound=table["compound"].astype(str).str.strip(), concentration=numbers.astype(float),
                         moa=table["moa"].astype(str).str.strip())
    key = table["compound"] + "@" + table["concentration"].map(concentration_key)
    conflicting = table.assign(key=key).groupby("key")["moa"].nunique()
    if (conflicting > 1).any():
        raise LayoutError(f"treatment {conflicting.index[conflicting > 1][0]} has more than one moa", path=path)
    return table.drop_duplicates().reset_index(drop=True)


def _resolve_folders(root: Path, path_names: pd.Series) -> dict[str, Path]:
    """Map each PathName to a folder: as written under ``root``, or its last component (the plate folder)."""
    resolved = {}
    for name in path_names.unique():
        text = str(name).strip().replace("\\", "/").strip("/")
        candidates = [root / text, root / text.split("/")[-1]]
        resolved[name] = next((c for c in candidates if c.is_dir()), candidates[0])
    return resolved


def read_bbbc021(root: str | Path) -> pd.DataFrame:
    """Read a BBBC021-layout dataset's tables: one row per field, with its MOA, week and file paths.

    Parameters
    ----------
    root : str or Path
        Folder with ``BBBC021_v1_image.csv``, (normally) ``BBBC021_v1_moa.csv`` and the plate folders. Plate
        folders are found where ``Image_PathName_*`` says, relative to ``root``, or by the last component of that
        path (``Week1/Week1_22123`` → ``root/Week1_22123``).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`FIELD_COLUMNS`: ``Site`` from the file name (``_s<k>_``; else the field's order in its
        well), ``Concentration`` float, ``MOA`` from the MOA table (``"DMSO"`` for DMSO, None where the table has
        no entry), ``Batch`` the week, ``path_<channel>`` absolute paths (not checked for existence: ``data check``
        does that). ``table.attrs`` holds ``root`` and ``moa_csv`` (None when there is no MOA table).

    Raises
    ------
    LayoutError
        Naming the CSV and the problem: no image table, a missing column, a blank value, a concentration that is
        not a number, a repeated ImageNumber, or an inconsistent MOA table.
    """
    root = Path(root)
    if not root.is_dir():
        raise LayoutError("dataset folder not found" if not root.exists() else "is a file; give the dataset folder",
                          path=root)
    image_csv = root / IMAGE_CSV
    if not image_csv.is_file():
        raise LayoutError(f"no {IMAGE_CSV}: not a BBBC021-layout dataset", path=root)
    table = _read_csv(image_csv, IMAGE_COLUMNS)
    if table.empty:
        raise LayoutError("lists no images", path=image_csv)
    required = [c for c in IMAGE_COLUMNS if c not in ("TableNumber", "Replicate")]
    blank = _blank_rows(table, required)
    if blank:
        raise LayoutError(f"line {blank[0][0]}: empty {blank[0][1]}", path=image_csv)
    for column in ("ImageNumber", "Image_Metadata_Concentration"):
        numbers = pd.to_numeric(table[column], errors="coerce")
        if numbers.isna().any():
            line = int(numbers.index[numbers.isna()][0]) + 2
            raise LayoutError(f"line {line}: {column} {table[column][line - 2]!r} is not a number", path=image_csv)
    repeated = table["ImageNumber"][table["ImageNumber"].duplicated()]
    if len(repeated):
        raise LayoutError(f"ImageNumber {repeated.iloc[0]} appears more than once", path=image_csv)

    moa_path = root / MOA_CSV
    moa = read_moa_table(moa_path) if moa_path.is_file() else None
    compound = table["Image_Metadata_Compound"].astype(str).str.strip()
    concentration = pd.to_numeric(table["Image_Metadata_Concentration"]).astype(float)
    lookup: dict[str, str] = {}
    if moa is not None:
        lookup = dict(zip(moa["compound"] + "@" + moa["concentration"].map(concentration_key), moa["moa"]))
    keys = compound + "@" + concentration.map(concentration_key)
    moa_values = [CONTROL if c == CONTROL else lookup.get(k) for c, k in zip(compound, keys)]

    fields = pd.DataFrame({
        "ImageNumber": pd.to_numeric(table["ImageNumber"]).astype(int),
        "TableNumber": pd.to_numeric(table["TableNumber"], errors="coerce").fillna(0).astype(int),
        "Plate": table["Image_Metadata_Plate_DAPI"].astype(str).str.strip(),
        "Well": table["Image_Metadata_Well_DAPI"].astype(str).str.strip(),
        "Site": table["Image_FileName_DAPI"].astype(str).map(_site_of),
        "Replicate": pd.to_numeric(table["Replicate"], errors="coerce").fillna(0).astype(int),
        "Compound": compound,
        "Concentration": concentration,
        "MOA": pd.Series(moa_values, dtype=object),
        "Batch": table["Image_PathName_DAPI"].map(week_of),
    })
    for channel in CHANNELS:
        folders = _resolve_folders(root, table[f"Image_PathName_{channel}"])
        fields[f"path_{channel}"] = [
            str((folders[p] / str(f).strip()).resolve())
            for p, f in zip(table[f"Image_PathName_{channel}"], table[f"Image_FileName_{channel}"])
        ]
    missing_site = fields["Site"] < 0
    if missing_site.any():
        order = fields.groupby(["Plate", "Well"])["ImageNumber"].rank(method="first").astype(int)
        fields.loc[missing_site, "Site"] = order[missing_site]
    fields = fields[list(FIELD_COLUMNS)].copy()
    fields.attrs["root"] = str(root)
    fields.attrs["moa_csv"] = str(moa_path) if moa is not None else None
    return fields


def _site_of(file_name: str) -> int:
    match = _SITE.search(file_name)
    return int(match.group(1)) if match else -1
