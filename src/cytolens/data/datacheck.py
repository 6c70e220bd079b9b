"""``cytolens data check``: detect a dataset's layout, validate every file, summarise what is there.

Class-folder datasets go through :func:`check_dataset`, image/label pairs through :func:`check_label_pairs`,
BBBC021-layout datasets (plate folders and their CSV tables) through :func:`check_bbbc021`.

The same code runs before every pipeline, so a folder that passes the check is one the pipelines can read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cytolens.core.errors import ImageReadError
from cytolens.core.hashing import file_sha1
from cytolens.data.io import read_image, read_image_info
from cytolens.data.label_pairs import ImageLabelDataset, scan_image_label_pairs
from cytolens.data.layouts import ClassFolderDataset, scan_class_folders

#: Images smaller than this on a side are refused: a 1 × 1 "image" is a broken export, not a cell.
MIN_IMAGE_SIDE = 8
FILE_COLUMNS = ["path", "class", "split", "height", "width", "channels", "dtype", "bits_used", "format"]


@dataclass
class DatasetCheck:
    """The result of :func:`check_dataset`.

    Attributes
    ----------
    dataset : ClassFolderDataset
        The scanned layout; ``dataset.samples`` lists only the images that passed validation.
    files : pandas.DataFrame
        One row per valid image: ``path``, ``class``, ``split``, ``height``, ``width``, ``channels``,
        ``dtype``, ``bits_used``, ``format``.
    problems : list of (Path, str)
        Files that failed validation, with the one-line reason.
    warnings : list of (Path, str)
        What leaves the data usable but the user should know (a leak, a single class).
    """

    dataset: ClassFolderDataset
    files: pd.DataFrame
    problems: list[tuple[Path, str]] = field(default_factory=list)
    warnings: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every image file could be used."""
        return not self.problems

    def summary(self) -> dict[str, object]:
        """A JSON-ready summary: layout, classes with counts, sizes, dtypes, bit depth in use, problems, warnings."""
        files = self.files
        counts = self.dataset.counts()
        return {
            "root": str(self.dataset.root),
            "layout": self.dataset.layout,
            "classes": list(self.dataset.classes),
            "counts": {name: {str(k): int(v) for k, v in row.items()} for name, row in counts.iterrows()},
            "images": len(files),
            **_image_summary(files, self.problems, self.dataset.ignored),
            "warnings": [{"path": str(p), "warning": m} for p, m in self.warnings],
        }


def _image_summary(
    files: pd.DataFrame, problems: list[tuple[Path, str]], ignored: list[tuple[Path, str]]
) -> dict[str, object]:
    """The part of a check summary every layout shares: sizes, channels, dtypes, formats, bits, problems."""
    return {
        "height": _range(files, "height"),
        "width": _range(files, "width"),
        "channels": sorted(int(c) for c in files["channels"].unique()) if len(files) else [],
        "dtypes": sorted(str(d) for d in files["dtype"].unique()) if len(files) else [],
        "formats": sorted(str(d) for d in files["format"].unique()) if len(files) else [],
        "bits_used_max": int(files["bits_used"].max()) if len(files) else None,
        "problems": [{"path": str(p), "problem": m} for p, m in problems],
        "ignored": [{"path": str(p), "reason": m} for p, m in ignored],
    }


def _range(files: pd.DataFrame, column: str) -> list[int] | None:
    if not len(files):
        return None
    return [int(files[column].min()), int(files[column].max())]


def check_dataset(
    root: str | Path,
    *,
    classes: Sequence[str] | None = None,
    preferred_classes: Sequence[str] | None = None,
    group_pattern: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> DatasetCheck:
    """Detect the layout of ``root``, read and validate every image, and collect the problems.

    Parameters
    ----------
    root : str or Path
        The dataset folder.
    classes : sequence of str, optional
        Class names in label order (default: natural order of the folders).
    preferred_classes : sequence of str, optional
        A protocol's class order, used when the folders are exactly these classes (see
        :func:`cytolens.data.layouts.scan_class_folders`).
    group_pattern : str, optional
        See :func:`cytolens.data.layouts.scan_class_folders`.
    progress : callable, optional
        Called with 1 after each file (drives a progress bar).

    Returns
    -------
    DatasetCheck
        Files that fail validation (unreadable, smaller than :data:`MIN_IMAGE_SIDE` on a side, or with another
        channel count than the dataset's) are listed in ``problems`` and dropped from ``dataset.samples``;
        ``warnings`` names identical files in two classes or on both sides of a split, and a single class. The
        layout errors that make the folder unusable as a whole raise instead.

    Raises
    ------
    LayoutError
        If the folder matches no layout or the class list does not fit it.
    """
    dataset = scan_class_folders(root, classes=classes, preferred_classes=preferred_classes,
                                 group_pattern=group_pattern)
    rows = []
    problems: dict[Path, str] = {}
    samples = dataset.samples
    for path_text, class_name, split in zip(samples["path"], samples["class"], samples["split"]):
        path = Path(path_text)
        try:
            info = read_image_info(path)
        except ImageReadError as exc:
            problems[path] = exc.message
        else:
            if min(info.shape[:2]) < MIN_IMAGE_SIDE:
                problems[path] = (f"is {info.shape[0]} × {info.shape[1]} pixels; an image must be at least "
                                  f"{MIN_IMAGE_SIDE} × {MIN_IMAGE_SIDE}")
            else:
                rows.append({
                    "path": path_text, "class": class_name, "split": split, "height": info.shape[0],
                    "width": info.shape[1], "channels": info.channels, "dtype": str(info.dtype),
                    "bits_used": info.bits_used, "format": info.format, "sha1": file_sha1(path),
                })
        if progress is not None:
            progress(1)
    files = pd.DataFrame(rows, columns=[*FILE_COLUMNS, "sha1"])
    problems.update(_odd_channel_counts(files))
    files = files[~files["path"].map(lambda p: Path(p) in problems)]
    warnings = _duplicates_across_classes(files)
    if len(dataset.classes) == 1:
        warnings.append((Path(root), f"only one class ({dataset.classes[0]!r}); classification needs at least two"))
    dataset.samples = dataset.samples[~dataset.samples["path"].map(lambda p: Path(p) in problems)].reset_index(
        drop=True)
    return DatasetCheck(dataset=dataset, files=files.drop(columns="sha1").reset_index(drop=True),
                        problems=list(problems.items()), warnings=warnings)


def _odd_channel_counts(files: pd.DataFrame) -> dict[Path, str]:
    """Images whose channel count is not the dataset's (most common) one, unless their channels are copies.

    A z-stack saved among 2-D images reads as a many-channel image, and an RGB PNG among grayscale ones as a
    3-channel image; a grayscale image saved as RGB (three equal channels) is fine, since the pipelines read
    it as one channel.
    """
    if not len(files):
        return {}
    usual = int(files["channels"].mode().min())
    odd: dict[Path, str] = {}
    for path_text, channels in zip(files["path"], files["channels"]):
        if int(channels) == usual:
            continue
        image = read_image(Path(path_text))
        if usual == 1 and image.ndim == 3 and all(np.array_equal(image[..., 0], image[..., c])
                                                  for c in range(1, image.shape[2])):
            continue
        odd[Path(path_text)] = (f"has {int(channels)} channels where the dataset's images have {usual} (an RGB "
                                "image among grayscale ones, or a stack of planes saved as one file?)")
    return odd


def _duplicates_across_classes(files: pd.DataFrame) -> list[tuple[Path, str]]:
    """A warning for each file identical, byte for byte, to one in another class or on the other side of a split."""
    warnings = []
    for _, same in files.groupby("sha1"):
        if len(same) < 2:
            continue
        first = same.iloc[0]
        for _, other in same.iloc[1:].iterrows():
            if other["class"] != first["class"]:
                warnings.append((Path(other["path"]), f"identical to {first['path']} (class {first['class']!r}): "
                                                      f"the same image in two classes"))
            elif other["split"] != first["split"]:
                warnings.append((Path(other["path"]), f"identical to {first['path']}: the same image in "
                                                      "training and test data (a leak)"))
    return warnings


@dataclass
class PairCheck:
    """The result of :func:`check_label_pairs`.

    Attributes
    ----------
    dataset : ImageLabelDataset
        The scanned pairs; ``dataset.samples`` lists only the pairs that passed validation.
    files : pandas.DataFrame
        One row per valid pair: ``stem``, ``height``, ``width``, ``channels``, ``dtype``, ``bits_used``,
        ``format`` and ``pixels_<class>`` for every class.
    problems : list of (Path, str)
        Files that failed validation, with the one-line reason.
    """

    dataset: ImageLabelDataset
    files: pd.DataFrame
    problems: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every pair is usable."""
        return not self.problems

    def summary(self) -> dict[str, object]:
        """A JSON-ready summary: layout, classes with pixel fractions, sizes, dtypes, bit depth, problems."""
        files = self.files
        pixels = {name: int(files[f"pixels_{name}"].sum()) for name in self.dataset.classes} if len(files) else {}
        total = sum(pixels.values()) or 1
        return {
            "root": str(self.dataset.root),
            "layout": self.dataset.layout,
            "images_folder": self.dataset.images.name,
            "classes": list(self.dataset.classes),
            "images": len(files),
            "pixel_fraction": {name: count / total for name, count in pixels.items()},
            **_image_summary(files, self.problems, self.dataset.ignored),
        }


def check_label_pairs(
    root: str | Path,
    *,
    classes: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> PairCheck:
    """Validate every image/label pair of a segmentation dataset.

    A pair is usable when both files read, the label image is a single-channel integer image of the image's
    height and width, and its values lie in ``0..K-1`` for the K class names.

    Parameters
    ----------
    root : str or Path
        Folder with ``images/`` (or ``brightfield/``) and ``labels/``.
    classes : sequence of str, optional
        Class names in label order (default: background, nucleus, cytoplasm).
    progress : callable, optional
        Called with 1 after each pair.

    Raises
    ------
    LayoutError
        If the folder is not a pair layout or the stems do not match.
    """
    dataset = scan_image_label_pairs(root, classes=tuple(classes) if classes is not None else None)
    n_classes = len(dataset.classes)
    rows, keep, problems = [], [], []
    for stem, image_path, label_path in zip(dataset.samples["stem"], dataset.samples["path"], dataset.samples["label_path"]):
        problem = None
        try:
            info = read_image_info(image_path)
            label = read_image(label_path)
        except ImageReadError as exc:
            problem = (exc.path or Path(image_path), exc.message)
        else:
            problem = _label_problem(label, info.shape[:2], n_classes)
            if problem is not None:
                problem = (Path(label_path), problem)
        if problem is not None:
            problems.append(problem)
            keep.append(False)
        else:
            keep.append(True)
            counts = np.bincount(label.ravel().astype(np.int64), minlength=n_classes)
            row = {"stem": stem, "height": info.shape[0], "width": info.shape[1], "channels": info.channels,
                   "dtype": str(info.dtype), "bits_used": info.bits_used, "format": info.format}
            row.update({f"pixels_{name}": int(counts[k]) for k, name in enumerate(dataset.classes)})
            rows.append(row)
        if progress is not None:
            progress(1)
    dataset.samples = dataset.samples[keep].reset_index(drop=True)
    columns = ["stem", "height", "width", "channels", "dtype", "bits_used", "format",
               *(f"pixels_{name}" for name in dataset.classes)]
    return PairCheck(dataset=dataset, files=pd.DataFrame(rows, columns=columns), problems=problems)


def _label_problem(label: np.ndarray, shape: tuple[int, ...], n_classes: int) -> str | None:
    if label.ndim != 2:
        return f"a label image must have one channel, got shape {label.shape}"
    if not np.issubdtype(label.dtype, np.integer):
        return f"a label image must hold integer class indices, got {label.dtype}"
    if label.shape != tuple(shape):
        return f"label size {label.shape[0]}×{label.shape[1]} differs from its image's {shape[0]}×{shape[1]}"
    low, high = int(label.min()), int(label.max())
    if low < 0 or high >= n_classes:
        return f"label values {low}..{high} fall outside 0..{n_classes - 1} for {n_classes} classes"
    return None


@dataclass
class BBBC021Check:
    """The result of :func:`check_bbbc021`.

    Attributes
    ----------
    root : Path
        The dataset folder.
    fields : pandas.DataFrame
        :func:`~cytolens.data.bbbc021.read_bbbc021`'s table, only the fields whose three files are usable.
    files : pandas.DataFrame
        One row per valid file: ``ImageNumber``, ``channel``, ``path``, ``height``, ``width``, ``channels``,
        ``dtype``, ``bits_used``, ``format``.
    problems : list of (Path, str)
        Files (or tables) that failed validation, with the one-line reason.
    ignored : list of (Path, str)
        Files beside the dataset that are not part of BBBC021's layout.
    n_listed : int
        Fields listed in ``BBBC021_v1_image.csv``.
    """

    root: Path
    fields: pd.DataFrame
    files: pd.DataFrame
    problems: list[tuple[Path, str]] = field(default_factory=list)
    ignored: list[tuple[Path, str]] = field(default_factory=list)
    n_listed: int = 0

    @property
    def ok(self) -> bool:
        """True when every listed file is usable and the MOA table is there."""
        return not self.problems

    def summary(self) -> dict[str, object]:
        """A JSON-ready summary: plates, weeks, compounds, MOAs, treatments, fields, sizes, problems."""
        from cytolens.data.bbbc021 import CONTROL

        fields = self.fields
        annotated = fields[fields["MOA"].notna() & (fields["Compound"] != CONTROL)]
        treatments = annotated.drop_duplicates(["Compound", "Concentration"])
        weeks = sorted(fields["Batch"].unique(), key=lambda w: (len(w), w))
        return {
            "root": str(self.root),
            "layout": "bbbc021",
            "plates": int(fields["Plate"].nunique()),
            "weeks": weeks,
            "plates_per_week": {w: int(n) for w, n in fields.groupby("Batch")["Plate"].nunique().items()},
            "compounds": int(fields.loc[fields["Compound"] != CONTROL, "Compound"].nunique()),
            "compounds_with_moa": int(annotated["Compound"].nunique()),
            "compounds_without_moa": sorted(set(fields["Compound"]) - set(annotated["Compound"]) - {CONTROL}),
            "fields_without_moa": int(fields["MOA"].isna().sum()),
            "moas": sorted(fields["MOA"].dropna().unique().tolist()),
            "treatments": len(treatments),
            "treatments_per_moa": {m: int(n) for m, n in treatments.groupby("MOA").size().items()},
            "fields_listed": self.n_listed,
            "images": len(fields),
            "dmso_fields": int((fields["Compound"] == CONTROL).sum()),
            **_image_summary(self.files, self.problems, self.ignored),
        }


def check_bbbc021(root: str | Path, *, progress: Callable[[int], None] | None = None) -> BBBC021Check:
    """Validate a BBBC021-layout dataset: both tables, then every field's DAPI, tubulin and actin files.

    A field is usable when its three files read as single-channel images of one size. A missing
    ``BBBC021_v1_moa.csv`` is a problem too (no MOA can be evaluated), but the fields stay usable.

    Parameters
    ----------
    root : str or Path
        Folder holding ``BBBC021_v1_image.csv``.
    progress : callable, optional
        Called with 1 after each field.

    Raises
    ------
    LayoutError
        If the tables are missing or malformed (see :func:`~cytolens.data.bbbc021.read_bbbc021`).
    """
    from cytolens.data.bbbc021 import CHANNELS, IMAGE_CSV, MOA_CSV, read_bbbc021

    root = Path(root)
    table = read_bbbc021(root)
    problems: list[tuple[Path, str]] = []
    if table.attrs.get("moa_csv") is None:
        problems.append((root / MOA_CSV, "missing: no mechanism of action is known for any compound"))
    rows, keep = [], []
    for image_number, *paths in table[["ImageNumber", *(f"path_{c}" for c in CHANNELS)]].itertuples(index=False):
        infos, bad = [], False
        for channel, path_text in zip(CHANNELS, paths):
            try:
                info = read_image_info(path_text)
            except ImageReadError as exc:
                problems.append((Path(path_text), exc.message))
                bad = True
                continue
            if info.channels != 1:
                problems.append((Path(path_text), f"the {channel} image must have one channel, got {info.channels}"))
                bad = True
            infos.append((channel, path_text, info))
        shapes = {info.shape[:2] for _, _, info in infos}
        if not bad and len(shapes) > 1:
            sizes = ", ".join(f"{c} {i.shape[0]}×{i.shape[1]}" for c, _, i in infos)
            problems.append((Path(paths[0]), f"the field's channels differ in size ({sizes})"))
            bad = True
        keep.append(not bad)
        for channel, path_text, info in infos:
            rows.append({"ImageNumber": image_number, "channel": channel, "path": path_text,
                         "height": info.shape[0], "width": info.shape[1], "channels": info.channels,
                         "dtype": str(info.dtype), "bits_used": info.bits_used, "format": info.format})
        if progress is not None:
            progress(1)
    listed = {Path(p).name for c in CHANNELS for p in table[f"path_{c}"]}
    known = {IMAGE_CSV, MOA_CSV}
    ignored: list[tuple[Path, str]] = []
    folders = {Path(p).parent for p in table["path_DAPI"]}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.name in known or entry.resolve() in folders:
            continue
        ignored.append((entry, "not part of BBBC021's layout (not listed in the tables)"))
    for folder in sorted(folders):
        if folder.is_dir():
            for entry in sorted(folder.iterdir()):
                if entry.is_file() and not entry.name.startswith(".") and entry.name not in listed:
                    ignored.append((entry, f"not listed in {IMAGE_CSV}"))
    files = pd.DataFrame(rows, columns=["ImageNumber", "channel", "path", "height", "width", "channels", "dtype",
                                        "bits_used", "format"])
    fields = table[np.asarray(keep, dtype=bool)].reset_index(drop=True)
    fields.attrs = dict(table.attrs)
    return BBBC021Check(root=root, fields=fields, files=files, problems=problems, ignored=ignored,
                        n_listed=len(table))
