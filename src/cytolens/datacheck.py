"""``cytolens data check``: detect a dataset's layout, validate every file, summarise what is there.

The same code runs before every pipeline, so a folder that passes the check is one the pipelines can read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cytolens.errors import ImageReadError
from cytolens.io import read_image_info
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
            "height": _range(files, "height"),
            "width": _range(files, "width"),
            "channels": sorted(int(c) for c in files["channels"].unique()) if len(files) else [],
            "dtypes": sorted(str(d) for d in files["dtype"].unique()) if len(files) else [],
            "formats": sorted(str(d) for d in files["format"].unique()) if len(files) else [],
            "bits_used_max": int(files["bits_used"].max()) if len(files) else None,
            "problems": [{"path": str(p), "problem": m} for p, m in self.problems],
            "ignored": [{"path": str(p), "reason": m} for p, m in self.dataset.ignored],
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
