"""Dataset layouts on disk, and the manifest every run records.

Layouts known so far:

``class_folders``
    ``DATA/<class>/*.tif`` — one folder per class, one image per sample (a single cell, as in Shpilman et al.).
``class_folders_split``
    ``DATA/train/<class>/`` and ``DATA/test/<class>/`` — the same with a fixed test set.
``image_label_pairs``
    ``DATA/images/`` + ``DATA/labels/`` paired by file stem, for segmentation (see :mod:`cytolens.data.label_pairs`).
``bbbc021``
    BBBC021's plate folders described by ``BBBC021_v1_image.csv`` and ``BBBC021_v1_moa.csv``, for profiling
    (see :mod:`cytolens.data.bbbc021`).

Class names are strings and stay themselves (``"0"``, ``"0.1"``, ``"1"``); their order is explicit
(``classes=["0", "0.1", "1"]``) or natural (numeric names by value, others in natural sort order).

A *manifest* is one row per sample with ``path``, ``class``, ``label`` (index into the class order), ``group``
and ``split``. Samples of one group (the augmented copies of one image, or the cells of one field) always stay
on one side of any split; by default each image is its own group, and ``group_pattern`` (a regular expression
whose first capture group, or whole match, is taken from the file stem) groups several images together.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cytolens.core.atomic import atomic_path
from cytolens.core.errors import LayoutError, OptionError, check_utf8_name
from cytolens.core.files import read_parquet_table
from cytolens.data.io import IMAGE_SUFFIXES, iter_image_files
from cytolens.data.label_pairs import IMAGE_FOLDERS, LABEL_FOLDER, image_folder

LAYOUTS: tuple[str, ...] = ("class_folders", "class_folders_split", "image_label_pairs", "bbbc021")
SPLIT_FOLDERS: tuple[str, ...] = ("train", "test")
MANIFEST_COLUMNS: tuple[str, ...] = ("path", "class", "label", "group", "split")


@dataclass
class ClassFolderDataset:
    """A scanned class-folder dataset.

    Attributes
    ----------
    root : Path
        The dataset folder.
    layout : str
        ``"class_folders"`` or ``"class_folders_split"``.
    classes : tuple of str
        Class names in label order.
    samples : pandas.DataFrame
        The manifest: one row per image (columns :data:`MANIFEST_COLUMNS`); ``split`` is ``"train"`` or
        ``"test"`` for a split layout and ``""`` (not yet assigned) otherwise; ``path`` is absolute.
    ignored : list of (Path, str)
        Files and folders that were passed over, with the reason.
    """

    root: Path
    layout: str
    classes: tuple[str, ...]
    samples: pd.DataFrame
    ignored: list[tuple[Path, str]] = field(default_factory=list)

    def counts(self) -> pd.DataFrame:
        """Samples per class (rows, in class order) and split (columns)."""
        table = self.samples.groupby(["class", "split"]).size().unstack(fill_value=0)
        return table.reindex(list(self.classes), fill_value=0)


def parse_class_list(text: str) -> list[str]:
    """Parse ``"0,0.1,1"`` into ``["0", "0.1", "1"]``; names are kept as strings, blanks stripped.

    Raises
    ------
    OptionError
        If the list is empty or names a class twice.
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise OptionError(f"`classes` must list at least one class name separated by commas, got {text!r}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise OptionError(f"`classes` names {', '.join(duplicates)} more than once")
    return names


def natural_class_order(names: Iterable[str]) -> list[str]:
    """Order class names naturally: by numeric value when all names are numbers, else natural sort.

    ``["1", "0.1", "0"]`` → ``["0", "0.1", "1"]``; ``["img10", "img2"]`` → ``["img2", "img10"]``.
    """
    from natsort import natsorted

    names = list(names)
    try:
        return sorted(names, key=lambda n: (float(n), n))
    except ValueError:
        return list(natsorted(names))


def detect_layout(root: str | Path) -> str:
    """Name the layout of a dataset folder (one of :data:`LAYOUTS`).

    Raises
    ------
    LayoutError
        If ``root`` is missing, not a folder, or matches no known layout.
    """
    root = Path(root)
    if not root.exists():
        raise LayoutError("dataset folder not found", path=root)
    if not root.is_dir():
        raise LayoutError("is a file; give the dataset folder", path=root)
    from cytolens.data.bbbc021 import is_bbbc021

    # Checked first: BBBC021's plate folders of TIFFs would otherwise look like class folders.
    if is_bbbc021(root):
        return "bbbc021"
    subdirs = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    # Checked next: images/ and labels/ would otherwise look like two classes.
    if image_folder(root) is not None:
        return "image_label_pairs"
    pair_images = sorted(subdirs & set(IMAGE_FOLDERS))
    if pair_images:
        # An images/ (or brightfield/) folder is a segmentation dataset's, not a class named "brightfield".
        raise LayoutError(
            f"has {pair_images[0]}/ but no {LABEL_FOLDER}/: a segmentation dataset needs its label images there "
            f"('cytolens segment labels {root}' derives them from the fluorescence channels)",
            path=root,
        )
    if "train" in subdirs and _has_class_folders(root / "train"):
        return "class_folders_split"
    if any(iter_image_files(root / name) for name in subdirs):
        return "class_folders"
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.iterdir() if p.is_file()):
        raise LayoutError(
            "holds images directly; put each class in its own folder (DATA/<class>/*.tif), "
            "optionally under DATA/train/ and DATA/test/",
            path=root,
        )
    raise LayoutError(
        "matches no known layout: expected class folders (DATA/<class>/*.tif), DATA/train/<class>/ and "
        "DATA/test/<class>/, DATA/images/ with DATA/labels/, or BBBC021's BBBC021_v1_image.csv with plate folders",
        path=root,
    )


def _has_class_folders(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_dir() and iter_image_files(p) for p in folder.iterdir())


def scan_class_folders(
    root: str | Path,
    *,
    classes: Sequence[str] | None = None,
    preferred_classes: Sequence[str] | None = None,
    group_pattern: str | None = None,
) -> ClassFolderDataset:
    """Find every image of a class-folder dataset (with or without train/test folders).

    Parameters
    ----------
    root : str or Path
        The dataset folder.
    classes : sequence of str, optional
        Class names in label order; class folders not listed are ignored (and reported). By default every
        class folder, in :func:`natural_class_order`.
    preferred_classes : sequence of str, optional
        A protocol's own class names in label order (a shipped config's ``classes``): used when ``classes`` is
        not given and the class folders are exactly these names; any other dataset keeps its own classes in
        natural order, so one config serves any lab's class folders.
    group_pattern : str, optional
        Regular expression applied to each file stem; its first capture group (or the whole match) is the
        group id (prefixed by the class, ``"0/field3"``), so that e.g. ``r"^(field\\d+)_"`` keeps all cells of one
        field together. Files it does not match are an error. By default each image is its own group.

    Returns
    -------
    ClassFolderDataset

    Raises
    ------
    LayoutError
        If the folder matches no class-folder layout, a listed class has no folder, or a class has no images.
    """
    root = Path(root)
    layout = detect_layout(root)
    if layout == "image_label_pairs":
        raise LayoutError("holds images/ and labels/ for segmentation, not class folders", path=root)
    if layout == "bbbc021":
        raise LayoutError("holds a BBBC021-layout dataset (plates and BBBC021_v1_image.csv), not class folders",
                          path=root)
    splits = SPLIT_FOLDERS if layout == "class_folders_split" else ("",)
    ignored: list[tuple[Path, str]] = []
    found: dict[str, dict[str, list[Path]]] = {}
    for split in splits:
        base = root / split if split else root
        if not base.is_dir():
            continue
        for entry in sorted(base.iterdir()):
            if entry.name.startswith("."):
                continue
            check_utf8_name(entry)  # a class name goes into every table and report
            if split == "" and entry.is_dir() and entry.name in SPLIT_FOLDERS:
                ignored.append((entry, "a split folder beside class folders; use either layout, not both"))
                continue
            if entry.is_symlink() and not entry.exists():
                ignored.append((entry, "a symbolic link that leads nowhere (a loop or a missing target)"))
                continue
            if not entry.is_dir():
                ignored.append((entry, "not in a class folder (metadata, or an image without a class)"))
                continue
            images = iter_image_files(entry)
            others = [p for p in entry.iterdir() if p.is_file() and not p.name.startswith(".") and p not in images]
            ignored.extend((p, "not an image format cytolens reads") for p in others)
            ignored.extend((p, "a symbolic link that leads nowhere (a loop or a missing target)")
                           for p in entry.iterdir() if p.is_symlink() and not p.exists())
            if not images:
                ignored.append((entry, "class folder with no images"))
                continue
            found.setdefault(entry.name, {})[split] = images
    if layout == "class_folders_split":
        for extra in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in SPLIT_FOLDERS):
            if not extra.name.startswith("."):
                ignored.append((extra, "beside train/ and test/; not part of the dataset"))
        test_only = sorted(name for name, by_split in found.items() if "train" not in by_split)
        if test_only:
            raise LayoutError(f"class {test_only[0]!r} has test images but no training images", path=root / "test")

    if classes is None:
        order = natural_class_order(found)
        if preferred_classes is not None and sorted(preferred_classes) == sorted(order):
            order = list(preferred_classes)
    else:
        order = list(classes)
        missing = [name for name in order if name not in found]
        if missing:
            raise LayoutError(
                f"no image folder for class {missing[0]!r} (found: {', '.join(natural_class_order(found)) or 'none'})",
                path=root,
            )
        for name in natural_class_order(found):
            if name not in order:
                ignored.append((root / name, "class not in the requested class list"))
    if not order:
        raise LayoutError("no class folder holds images", path=root)

    compiled = _compile_group_pattern(group_pattern)
    rows = []
    for label, name in enumerate(order):
        for split, images in found[name].items():
            for path in images:
                rows.append(
                    {
                        "path": str(path.resolve()),
                        "class": name,
                        "label": label,
                        "group": _group_id(path, root, name, compiled),
                        "split": split,
                    }
                )
    samples = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    return ClassFolderDataset(root=root, layout=layout, classes=tuple(order), samples=samples, ignored=ignored)


def _compile_group_pattern(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise OptionError(f"`group_pattern` is not a valid regular expression ({exc}): {pattern!r}") from exc


def _group_id(path: Path, root: Path, class_name: str, pattern: re.Pattern[str] | None) -> str:
    if pattern is None:
        # Relative path without suffix: unique per image, readable, and stable when the dataset moves.
        return path.relative_to(root).with_suffix("").as_posix()
    match = pattern.search(path.stem)
    if match is None:
        raise LayoutError(f"file name does not match the group pattern {pattern.pattern!r}", path=path)
    # Qualified by class: "field1" of class 0 and "field1" of class 1 are different fields. The split folder
    # is left out on purpose, so a field with cells in both train/ and test/ shows up as one group.
    return f"{class_name}/{match.group(1) if pattern.groups else match.group(0)}"


def write_manifest(
    samples: pd.DataFrame, path: str | Path, *, required: Sequence[str] = MANIFEST_COLUMNS
) -> Path:
    """Write a manifest table to Parquet atomically.

    Parameters
    ----------
    samples : pandas.DataFrame
        At least the columns :data:`MANIFEST_COLUMNS`; extra columns are kept.
    path : str or Path
        Destination ``.parquet`` file.
    required : sequence of str, default MANIFEST_COLUMNS
        Columns that must be present (image/label pairs have no class column: ``("path", "group", "split")``).
    """
    missing = [c for c in required if c not in samples.columns]
    if missing:
        raise OptionError(f"a manifest needs the columns {', '.join(required)}; missing {', '.join(missing)}")
    path = Path(path)
    with atomic_path(path) as tmp:
        samples.to_parquet(tmp, index=False)
    return path


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a manifest written by :func:`write_manifest`.

    Raises
    ------
    LayoutError
        If the file is missing or lacks a manifest column.
    """
    path = Path(path)
    if not path.is_file():
        raise LayoutError("manifest not found", path=path)
    table = read_parquet_table(path, "manifest")
    missing = [c for c in MANIFEST_COLUMNS if c not in table.columns]
    if missing:
        raise LayoutError(f"not a cytolens manifest (missing {', '.join(missing)})", path=path)
    return table
