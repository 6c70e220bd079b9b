"""Label images the paper's way: unsupervised pixel classification of DAPI + whole-cell-stain fluorescence.

MIDL 2019 built its ground truth by classifying the pixels of two fluorescence channels, without manual
annotation, into background (0), nucleus (1) and cytoplasm (2). :func:`derive_labels` does the same for any
pair of images, real or simulated, assuming only that nuclei are DAPI-bright and cells are bright in the
whole-cell stain.

Method (per image and channel, all options in :func:`derive_labels`)
--------------------------------------------------------------------
1. **Denoise** with a light Gaussian (``smoothing_sigma``, 1 px).
2. **Flatten the background** (``flatten``): a first pass (Otsu, step 4) marks the dim pixels; a quadratic
   surface is fitted to them (least squares, refitted without 3-MAD outliers) and subtracted. This removes the
   offset and the uneven illumination of the background, and extrapolates smoothly under confluent regions.
3. **Scale-free intensities**: ``f = arcsinh(x / σ)``, where σ is the camera noise estimated from neighbouring
   pixel differences (median absolute deviation). The transform is linear within the noise and logarithmic
   above it, so a dim cell and a bright one differ by an offset rather than a factor, and the result does not
   depend on the dtype or dynamic range (uint8, uint16, float).
4. **Classify**: Otsu's threshold on ``f`` (``method="otsu"``, the default) or a two-component Gaussian mixture
   (``method="gmm"``, scikit-learn, seeded, fitted on a pixel subsample); pixels of the bright component are
   foreground. The classifier's boundary sits only a few noise levels above the background, outside a blurred
   edge; each nucleus is therefore cut at ``nucleus_edge`` (half) of its own mean brightness, the
   half-maximum where a blurred step edge truly lies. Cells are not cut: their lamellae are thin and dim.
5. **Assign** nucleus where DAPI is foreground, cytoplasm where the whole-cell stain is foreground and DAPI is
   not, background elsewhere; a nucleus is always part of its cell.
6. **Clean up**: objects smaller than ``min_size`` px (debris) are removed from both masks, nuclei are filled
   (DAPI-poor nucleoli leave holes) and holes in cells smaller than ``hole_size`` px are closed. Larger
   enclosed gaps between cells stay background.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import ndimage as ndi

from cytolens.core.errors import LayoutError, OptionError, check_choice
from cytolens.data.io import iter_image_files, read_image, write_tiff
from cytolens.data.label_pairs import FLUORESCENCE_FOLDERS

LABEL_METHODS: tuple[str, ...] = ("gmm", "otsu")
CLASS_NAMES: tuple[str, ...] = ("background", "nucleus", "cytoplasm")
BACKGROUND, NUCLEUS, CYTOPLASM = 0, 1, 2


def _as_float_image(name: str, image: Any) -> NDArray[np.float32]:
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise OptionError(f"`{name}` must be a 2-D (H, W) image, got shape {array.shape}.")
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise OptionError(f"`{name}` must hold real numbers (integer or float), got dtype {array.dtype}.")
    out = array.astype(np.float32)  # always a copy: the caller's image is never modified
    if not np.all(np.isfinite(out)):
        raise OptionError(f"`{name}` holds NaN or infinite values.")
    return out


def _noise_sigma(image: NDArray[np.float32]) -> float:
    """Robust per-pixel noise from horizontal neighbour differences (edges and objects barely move the median)."""
    diff = np.diff(image[::2], axis=1).ravel()
    sigma = 1.4826 * float(np.median(np.abs(diff - np.median(diff)))) / np.sqrt(2.0)
    # A noise-free (e.g. drawn or quantised) image has σ = 0; fall back to a small share of its dynamic range.
    low, high = np.percentile(image[::4, ::4], [0.1, 99.9])
    return max(sigma, 1e-3 * float(high - low), 1e-6)


def _background_surface(
    image: NDArray[np.float32], background: NDArray[np.bool_], rng: np.random.Generator
) -> NDArray[np.float32]:
    """Quadratic surface fitted to the background pixels (robustly), evaluated over the frame.

    Uneven illumination is smooth across a field, and a quadratic extrapolates sensibly under confluent regions
    where a local (block-wise) estimate would mistake dim cells for background.
    """
    height, width = image.shape
    rows, cols = np.nonzero(background)
    if rows.size < 1000:  # too little background to fit a surface: remove its level only
        level = float(np.median(image[background])) if rows.size else float(np.percentile(image, 2.0))
        return np.full(image.shape, level, dtype=np.float32)
    if rows.size > 20_000:
        pick = rng.choice(rows.size, 20_000, replace=False)
        rows, cols = rows[pick], cols[pick]
    y, x = 2.0 * rows / max(1, height - 1) - 1.0, 2.0 * cols / max(1, width - 1) - 1.0
    design = np.stack([np.ones_like(y), y, x, y * y, x * y, x * x], axis=1)
    values = image[rows, cols].astype(np.float64)
    keep = np.ones(values.size, dtype=bool)
    for _ in range(2):  # refit without outliers (cell edges and debris the first pass let through)
        coef = np.linalg.lstsq(design[keep], values[keep], rcond=None)[0]
        residual = values - design @ coef
        spread = 1.4826 * float(np.median(np.abs(residual[keep]))) + 1e-6
        keep = np.abs(residual) < 3.0 * spread
    yy = np.linspace(-1.0, 1.0, height)
    xx = np.linspace(-1.0, 1.0, width)
    column = (coef[0] + coef[1] * yy + coef[3] * yy * yy).astype(np.float32)
    row = (coef[2] * xx + coef[5] * xx * xx).astype(np.float32)
    surface = np.add.outer(column, row)
    surface += np.outer(yy.astype(np.float32), (coef[4] * xx).astype(np.float32))
    return surface


def _bright_pixels(feature: NDArray[np.float32], method: str, seed: int, max_samples: int) -> NDArray[np.bool_]:
    """Pixels of the bright class of a 1-D intensity feature."""
    flat = feature.ravel()
    rng = np.random.default_rng(seed)
    sample = flat if flat.size <= max_samples else flat[rng.choice(flat.size, max_samples, replace=False)]
    if float(sample.max() - sample.min()) <= 1e-6:
        return np.zeros(feature.shape, dtype=bool)  # a flat image has nothing bright in it
    if method == "otsu":
        from skimage.filters import threshold_otsu

        return feature > threshold_otsu(sample)
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(n_components=2, covariance_type="full", random_state=seed, max_iter=200, tol=1e-4)
    gmm.fit(sample.reshape(-1, 1).astype(np.float64))
    # Classify through a fine lookup table of the posterior: exact for 1-D, and far faster than predict() on
    # millions of pixels. Only values above the dim component's mean can be bright (a wide dim component can
    # otherwise claim the far tail on both sides).
    bright = int(np.argmax(gmm.means_.ravel()))
    dim_mean = float(gmm.means_.ravel()[1 - bright])
    grid = np.linspace(float(sample.min()), float(sample.max()), 4096)
    is_bright = (gmm.predict_proba(grid.reshape(-1, 1))[:, bright] > 0.5) & (grid > dim_mean)
    index = np.clip(np.searchsorted(grid, feature.ravel()), 0, grid.size - 1)
    return is_bright[index].reshape(feature.shape)


def _foreground(
    image: NDArray[np.float32], *, method: str, smoothing_sigma: float, flatten: bool, edge_fraction: float,
    log_scale: bool, seed: int, max_samples: int,
) -> NDArray[np.bool_]:
    """Bright pixels of one channel (steps 1-4 of the module docstring, plus the optional edge refinement)."""
    sigma = _noise_sigma(image)
    if smoothing_sigma > 0:
        image = ndi.gaussian_filter(image, smoothing_sigma, output=image, truncate=3.0)
    if flatten:  # a quick first pass finds the background; the surface fitted to it is removed
        first = _bright_pixels(np.arcsinh(image / np.float32(sigma)), "otsu", seed, max_samples)
        image -= _background_surface(image, ~first, np.random.default_rng(seed))
    else:
        image -= np.float32(np.percentile(image, 2.0))
    feature = np.arcsinh(image / np.float32(sigma)) if log_scale else image / np.float32(sigma)
    bright = _bright_pixels(feature, method, seed, max_samples)
    if edge_fraction > 0 and bright.any():
        # The classifier's boundary lies where an object is only a few noise levels above the background, well
        # outside the blurred edge; cutting each object at a fraction of its own mean brightness puts the edge
        # back at the half-maximum, where a blurred step really is, whatever the object's brightness.
        objects, n = ndi.label(bright)
        mean = np.bincount(objects.ravel(), weights=image.ravel(), minlength=n + 1) / np.maximum(
            np.bincount(objects.ravel(), minlength=n + 1), 1
        )
        bright &= image > (edge_fraction * mean).astype(np.float32)[objects]
    return bright


def derive_labels(
    dapi: NDArray[Any],
    cellstain: NDArray[Any],
    *,
    method: str = "otsu",
    smoothing_sigma: float = 1.0,
    flatten: bool = True,
    nucleus_edge: float = 0.5,
    min_size: int = 64,
    hole_size: int | None = None,
    seed: int = 0,
    max_samples: int = 100_000,
) -> NDArray[np.uint8]:
    """Classify the pixels of a DAPI + whole-cell-stain pair into background, nucleus and cytoplasm.

    Parameters
    ----------
    dapi, cellstain : (H, W) ndarray
        The nuclear and whole-cell fluorescence of one field, any integer or float dtype and range (a trailing
        channel axis of length 1 is accepted). Not modified.
    method : {"otsu", "gmm"}, optional
        Otsu's threshold (default: on simulated fields it agrees better with the truth, mean dice 0.97 vs 0.94,
        and is twice as fast) or a two-component Gaussian mixture on the arcsinh-scaled intensities.
    smoothing_sigma : float, optional
        Gaussian denoising in pixels (0 disables).
    flatten : bool, optional
        Subtract a smooth (quadratic) background fitted to the pixels a first Otsu pass finds dim; otherwise
        only the 2nd percentile is subtracted.
    nucleus_edge : float, optional
        Each nucleus is cut at this fraction of its own mean DAPI intensity (0.5: the half-maximum of a blurred
        edge); 0 keeps the classifier's boundary.
    min_size : int, optional
        Nuclei and cells smaller than this many pixels are removed (debris, noise).
    hole_size : int, optional
        Holes in cells up to this many pixels are closed; default ``4 * min_size``.
    seed : int, optional
        Seed of the pixel subsample and the mixture's initialisation.
    max_samples : int, optional
        Pixels the classifier is fitted on.

    Returns
    -------
    labels : (H, W) uint8 ndarray
        0 background, 1 nucleus, 2 cytoplasm.

    Raises
    ------
    OptionError
        If the images are not 2-D real arrays of the same shape or an option is invalid.
    """
    method = check_choice("method", method, LABEL_METHODS)
    dapi_f = _as_float_image("dapi", dapi)
    stain_f = _as_float_image("cellstain", cellstain)
    if dapi_f.shape != stain_f.shape:
        raise OptionError(f"`dapi` and `cellstain` must have the same shape, got {dapi_f.shape} and {stain_f.shape}.")
    if not isinstance(smoothing_sigma, (int, float)) or not 0 <= smoothing_sigma <= 50:
        raise OptionError(f"`smoothing_sigma` must be between 0 and 50 pixels, got {smoothing_sigma!r}.")
    if isinstance(nucleus_edge, bool) or not isinstance(nucleus_edge, (int, float)) or not 0 <= nucleus_edge < 1:
        raise OptionError(f"`nucleus_edge` must be a number in [0, 1), got {nucleus_edge!r}.")
    for name, value in (("min_size", min_size), ("max_samples", max_samples)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise OptionError(f"`{name}` must be a non-negative integer, got {value!r}.")
    if max_samples < 100:
        raise OptionError(f"`max_samples` must be at least 100, got {max_samples!r}.")
    hole_size = 4 * int(min_size) if hole_size is None else hole_size
    options = dict(method=method, smoothing_sigma=float(smoothing_sigma), flatten=bool(flatten),
                   seed=int(seed), max_samples=int(max_samples))

    from skimage.morphology import remove_small_holes, remove_small_objects

    # Nuclei are classified on linear intensities: they outshine everything else in DAPI by far, while a faint
    # cytoplasmic DAPI haze would form a class of its own on a log scale.
    nucleus = _foreground(dapi_f, edge_fraction=float(nucleus_edge), log_scale=False, **options)
    # Cells are classified on the log-like scale, so that dim cells and thin lamellae count, and not cut at
    # their half-maximum: a spread cell thins towards its edge, and its dim lamella is still cell.
    cell = _foreground(stain_f, edge_fraction=0.0, log_scale=True, **options)
    if min_size > 0:
        nucleus = remove_small_objects(nucleus, max_size=int(min_size) - 1)
        cell = remove_small_objects(cell | nucleus, max_size=int(min_size) - 1)
    nucleus = ndi.binary_fill_holes(nucleus)
    cell = cell | nucleus  # whole-cell stains fill the nucleus too; a nucleus is always inside its cell
    if hole_size > 0:
        cell = remove_small_holes(cell, max_size=int(hole_size))
    labels = np.zeros(dapi_f.shape, dtype=np.uint8)
    labels[cell] = CYTOPLASM
    labels[nucleus] = NUCLEUS
    return labels


def label_agreement(derived: NDArray[Any], truth: NDArray[Any], n_classes: int = 3) -> dict[str, float]:
    """Pixel accuracy and per-class Dice coefficients between two label images.

    Parameters
    ----------
    derived, truth : (H, W) integer ndarray
        Label images of the same shape with values in ``0 .. n_classes - 1``.
    n_classes : int, optional
        Number of classes.

    Returns
    -------
    dict of str to float
        ``pixel_accuracy``, ``dice_<class>`` for each class (``background``, ``nucleus``, ``cytoplasm``, then
        the class number for any further class) and ``mean_dice`` (unweighted mean over classes). A class absent
        from both images has Dice 1.
    """
    derived, truth = np.asarray(derived), np.asarray(truth)
    if derived.shape != truth.shape:
        raise OptionError(f"`derived` and `truth` must have the same shape, got {derived.shape} and {truth.shape}.")
    if n_classes < 1:
        raise OptionError(f"`n_classes` must be at least 1, got {n_classes!r}.")
    pair = truth.astype(np.int64).ravel() * n_classes + derived.astype(np.int64).ravel()
    confusion = np.bincount(pair, minlength=n_classes * n_classes)[: n_classes * n_classes].reshape(
        n_classes, n_classes
    )
    result = {"pixel_accuracy": float(np.trace(confusion) / max(1, derived.size))}
    dice = []
    for k in range(n_classes):
        overlap, total = 2.0 * confusion[k, k], confusion[k, :].sum() + confusion[:, k].sum()
        dice.append(float(overlap / total) if total > 0 else 1.0)
        result[f"dice_{CLASS_NAMES[k] if k < len(CLASS_NAMES) else k}"] = dice[-1]
    result["mean_dice"] = float(np.mean(dice))
    return result


def fluorescence_pairs(root: Path) -> list[tuple[str, Path, Path]]:
    """(stem, dapi file, cellstain file) for every stem of ``root/dapi/`` and ``root/cellstain/``.

    Raises
    ------
    LayoutError
        If a folder is missing or empty, or a stem has no partner in the other folder.
    """
    folders = {name: root / name for name in FLUORESCENCE_FOLDERS}
    for name, folder in folders.items():
        if not folder.is_dir():
            raise LayoutError(f"no `{name}/` folder with fluorescence images", path=root)
    files = {name: {p.name.split(".")[0]: p for p in iter_image_files(folder)} for name, folder in folders.items()}
    for one, other in (("dapi", "cellstain"), ("cellstain", "dapi")):
        unmatched = sorted(set(files[one]) - set(files[other]))
        if unmatched:
            raise LayoutError(f"{len(unmatched)} image(s) without a partner in `{other}/`, e.g. {unmatched[0]!r}",
                              path=folders[one])
    if not files["dapi"]:
        raise LayoutError("no images in `dapi/`", path=folders["dapi"])
    return [(stem, files["dapi"][stem], files["cellstain"][stem]) for stem in files["dapi"]]


def derive_label_folder(
    root: str | Path, *, progress: Callable[[int], None] | None = None, **options: Any
) -> pd.DataFrame:
    """Derive label images for every DAPI / whole-cell-stain pair of a field folder.

    Parameters
    ----------
    root : str or Path
        Folder with ``dapi/`` and ``cellstain/`` holding images of the same stems (``field_0000.tif`` …).
        Labels are written atomically to ``root/labels/<stem>.tif`` (uint8, 0 background, 1 nucleus,
        2 cytoplasm). If ``root/truth/<stem>.tif`` exists, agreement with it is measured.
    progress : callable, optional
        Called with 1 after each image.
    **options
        Passed to :func:`derive_labels` (``method``, ``min_size`` …).

    Returns
    -------
    pandas.DataFrame
        One row per image: ``stem``, ``path`` (of the label image, relative to ``root``), ``fraction_background``,
        ``fraction_nucleus``, ``fraction_cytoplasm`` and, where a truth image exists, the keys of
        :func:`label_agreement` (NaN otherwise).

    Raises
    ------
    LayoutError
        If a folder is missing or empty or a stem has no partner.
    ImageReadError
        If an image cannot be read.
    """
    root = Path(root)
    rows: list[dict[str, Any]] = []
    for stem, dapi_path, stain_path in fluorescence_pairs(root):
        dapi, stain = read_image(dapi_path, grayscale=True), read_image(stain_path, grayscale=True)
        if dapi.shape != stain.shape:
            raise LayoutError(f"shape {stain.shape} differs from its DAPI image's {dapi.shape}", path=stain_path)
        labels = derive_labels(dapi, stain, **options)
        relative = f"labels/{stem}.tif"
        write_tiff(root / relative, labels)
        row: dict[str, Any] = {"stem": stem, "path": relative}
        counts = np.bincount(labels.ravel(), minlength=3)
        row.update({f"fraction_{name}": float(counts[k] / labels.size) for k, name in enumerate(CLASS_NAMES)})
        truth_path = root / "truth" / f"{stem}.tif"
        if truth_path.is_file():
            truth = read_image(truth_path)
            if truth.shape != labels.shape:
                raise LayoutError(f"shape {truth.shape} differs from the fluorescence's {labels.shape}",
                                  path=truth_path)
            row.update(label_agreement(labels, truth))
        rows.append(row)
        if progress is not None:
            progress(1)
    return pd.DataFrame(rows)
