"""The segmentation layout: images and label images paired by file stem.

``DATA/images/<stem>.tif`` + ``DATA/labels/<stem>.tif``. A simulated bright-field folder (``cytolens synth
brightfield``, then ``cytolens segment labels``) has ``brightfield/`` instead of ``images/``; it is read the
same way. Label images hold integer class indices ``0..K-1`` in the order of the class names (by default the
paper's ``background, nucleus, cytoplasm``). Each image is its own group: K-fold splits are by image, so no
field contributes patches to both sides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cytolens.core.errors import LayoutError
from cytolens.data.io import iter_image_files

LABEL_FOLDER = "labels"
#: Folders searched for the input images, in order.
IMAGE_FOLDERS: tuple[str, ...] = ("images", "brightfield")
DEFAULT_SEGMENTATION_CLASSES: tuple[str, ...] = ("background", "nucleus", "cytoplasm")
#: The fluorescence folders (nuclei, cell stain) that ``cytolens segment labels`` derives ``labels/`` from.
FLUORESCENCE_FOLDERS: tuple[str, ...] = ("dapi", "cellstain")


def has_fluorescence(root: Path) -> bool:
    """Whether ``root`` holds every folder of :data:`FLUORESCENCE_FOLDERS`, so its labels can be derived."""
    return all((root / name).is_dir() for name in FLUORESCENCE_FOLDERS)


def image_folder(root: Path) -> Path | None:
    """The folder of input images of a pair layout, or None when ``root`` is not one."""
    if not (root / LABEL_FOLDER).is_dir():
        return None
    return next((root / name for name in IMAGE_FOLDERS if (root / name).is_dir()), None)


@dataclass
class ImageLabelDataset:
    """A scanned image/label-pair dataset.

    Attributes
    ----------
    root : Path
    images : Path
        The folder of input images (``images/`` or ``brightfield/``).
    classes : tuple of str
        Class names; label value k is ``classes[k]``.
    samples : pandas.DataFrame
        One row per pair: ``stem``, ``path`` (image), ``label_path``, ``group`` (the stem), ``split`` (``""``).
    ignored : list of (Path, str)
        Files passed over, with the reason.
    """

    root: Path
    images: Path
    classes: tuple[str, ...]
    samples: pd.DataFrame
    ignored: list[tuple[Path, str]] = field(default_factory=list)
    layout: str = "image_label_pairs"


def _stem(path: Path) -> str:
    # "field_0001.ome.tif" and "field_0001.png" share the stem "field_0001".
    return path.name.split(".")[0]


def scan_image_label_pairs(root: str | Path, *, classes: tuple[str, ...] | list[str] | None = None) -> ImageLabelDataset:
    """Pair every image with its label image by file stem.

    Parameters
    ----------
    root : str or Path
        Folder with ``labels/`` and ``images/`` (or ``brightfield/``).
    classes : sequence of str, optional
        Class names in label order; default :data:`DEFAULT_SEGMENTATION_CLASSES`.

    Raises
    ------
    LayoutError
        If the folders are missing, hold no images, a stem appears twice, or an image has no label (or the
        reverse).
    """
    root = Path(root)
    images = image_folder(root)
    if images is None:
        hint = ""
        if not (root / LABEL_FOLDER).is_dir() and has_fluorescence(root):
            # The MIDL 2019 layout before its labels are derived: name the command that derives them.
            hint = f"; derive them from dapi/ and cellstain/ with `cytolens segment labels {root}`"
        raise LayoutError(f"expected {LABEL_FOLDER}/ beside images/ (or brightfield/){hint}", path=root)
    found: dict[str, dict[str, Path]] = {}
    for kind, folder in (("image", images), ("label", root / LABEL_FOLDER)):
        by_stem: dict[str, Path] = {}
        for path in iter_image_files(folder):
            stem = _stem(path)
            if stem in by_stem:
                raise LayoutError(f"two files share the stem {stem!r}: {by_stem[stem].name} and {path.name}", path=folder)
            by_stem[stem] = path
        if not by_stem:
            raise LayoutError("holds no image files", path=folder)
        found[kind] = by_stem
    for kind, other, folder in (("image", "label", root / LABEL_FOLDER), ("label", "image", images)):
        unmatched = sorted(set(found[kind]) - set(found[other]))
        if unmatched:
            raise LayoutError(
                f"{len(unmatched)} {kind}(s) without a partner here, e.g. {unmatched[0]!r}", path=folder
            )
    from natsort import natsorted

    rows = [
        {"stem": stem, "path": str(found["image"][stem].resolve()), "label_path": str(found["label"][stem].resolve()),
         "group": stem, "split": ""}
        for stem in natsorted(found["image"])
    ]
    names = tuple(classes) if classes is not None else DEFAULT_SEGMENTATION_CLASSES
    if len(names) < 2:
        raise LayoutError(f"segmentation needs at least 2 classes, got {list(names)}", path=root)
    return ImageLabelDataset(root=root, images=images, classes=names, samples=pd.DataFrame(rows))
