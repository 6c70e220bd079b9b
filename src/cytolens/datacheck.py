"""``cytolens data check``: detect a dataset's layout, validate every file, summarise what is there.

Class-folder datasets go through :func:`check_dataset`, image/label pairs through :func:`check_label_pairs`.

The same code runs before every pipeline, so a folder that passes the check is one the pipelines can read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cytolens.errors import ImageReadError
from cytolens.io import read_image, read_image_info
from cytolens.label_pairs import ImageLabelDataset, scan_image_label_pairs
from cytolens.layouts import ClassFolderDataset, scan_class_folders


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
    """

    dataset: ClassFolderDataset
    files: pd.DataFrame
    problems: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every image file could be read."""
        return not self.problems

    def summary(self) -> dict[str, object]:
        """A JSON-ready summary: layout, classes with counts, sizes, dtypes, bit depth in use, problems."""
        files = self.files
        counts = self.dataset.counts()
        return {
            "root": str(self.dataset.root),
            "layout": self.dataset.layout,
            "classes": list(self.dataset.classes),
            "counts": {name: {str(k): int(v) for k, v in row.items()} for name, row in counts.iterrows()},
            "images": len(files),
            **_image_summary(files, self.problems, self.dataset.ignored),
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
    group_pattern : str, optional
        See :func:`cytolens.layouts.scan_class_folders`.
    progress : callable, optional
        Called with 1 after each file (drives a progress bar).

    Returns
    -------
    DatasetCheck
        Files that fail validation are listed in ``problems`` and dropped from ``dataset.samples``; the
        layout errors that make the folder unusable as a whole raise instead.

    Raises
    ------
    LayoutError
        If the folder matches no layout or the class list does not fit it.
    """
    dataset = scan_class_folders(root, classes=classes, group_pattern=group_pattern)
    rows = []
    problems: list[tuple[Path, str]] = []
    keep = []
    samples = dataset.samples
    for path_text, class_name, split in zip(samples["path"], samples["class"], samples["split"]):
        path = Path(path_text)
        try:
            info = read_image_info(path)
        except ImageReadError as exc:
            problems.append((path, exc.message))
            keep.append(False)
        else:
            keep.append(True)
            rows.append(
                {
                    "path": path_text,
                    "class": class_name,
                    "split": split,
                    "height": info.shape[0],
                    "width": info.shape[1],
                    "channels": info.channels,
                    "dtype": str(info.dtype),
                    "bits_used": info.bits_used,
                    "format": info.format,
                }
            )
        if progress is not None:
            progress(1)
    dataset.samples = dataset.samples[keep].reset_index(drop=True)
    files = pd.DataFrame(
        rows, columns=["path", "class", "split", "height", "width", "channels", "dtype", "bits_used", "format"]
    )
    return DatasetCheck(dataset=dataset, files=files, problems=problems)


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
