"""Scores for semantic segmentation: confusion matrix, dice, IoU, precision, recall, pixel accuracy.

Definitions
-----------
For a class ``c`` with ``TP`` pixels labelled ``c`` in both truth and prediction, ``FP`` pixels predicted ``c``
but truly another class and ``FN`` pixels truly ``c`` but predicted another class:

* **dice** = 2·TP / (2·TP + FP + FN) (Dice 1945; equal to the F1 score of the class's pixels),
* **IoU** (Jaccard) = TP / (TP + FP + FN),
* **precision** = TP / (TP + FP), **recall** = TP / (TP + FN),
* **pixel accuracy** = correctly labelled pixels / all pixels (trace of the confusion matrix over its sum).

Averages over classes are **macro** averages: ``mean_dice`` and ``mean_iou`` give every class the same weight
and **include background**; ``mean_dice_foreground`` and ``mean_iou_foreground`` leave out class 0.

Absent classes
--------------
A class absent from both truth and prediction has 0/0 dice and IoU. It is reported as NaN for that class and
**left out of the means**: the common convention, which neither rewards predicting nothing where there is
nothing (dice 1) nor punishes it (dice 0). Precision is NaN when nothing is predicted as the class, recall
when the class is absent from the truth. A class present in either truth or prediction always has a number
(0 when missed entirely), so ``mean_dice`` and ``mean_iou`` are never NaN; ``mean_dice_foreground`` is NaN only for an image holding nothing but background in truth and prediction.

Datasets
--------
:func:`evaluate_images` reports two dataset-level dice values, which differ whenever images differ in size or
in class balance:

* ``mean_dice`` — **the headline**: the confusion matrices of all images are summed (micro over pixels) and the
  dice per class is computed once from the sum, then averaged over classes. Every pixel weighs the same, and
  an image where a class covers a handful of pixels cannot swing the score.
* ``mean_dice_per_image`` — the per-image ``mean_dice`` averaged over images.

The paper (MIDL 2019, Table 1) reports a single "validation dice" beside a validation loss, which points to a
Keras metric averaged over validation batches, i.e. closest to a per-image (per-batch) mean. Its formula is not
given; note that the common Keras ``dice_coef``, which flattens the one-hot tensors of all classes together,
equals **pixel accuracy** for hard predictions. We therefore report all three side by side and headline the
summed-confusion ``mean_dice``, whose definition is unambiguous.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from cytolens.core.errors import OptionError
from cytolens.core.validation import check_int

Scores = dict[str, Any]


def _check_label_image(name: str, image: Any, num_classes: int) -> NDArray[np.int64]:
    array = np.asarray(image)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise OptionError(f"`{name}` must hold integer class indices, got dtype {array.dtype}.")
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise OptionError(
            f"`{name}` must hold class indices in 0..{num_classes - 1}, "
            f"got values {int(array.min())}..{int(array.max())}."
        )
    return array.astype(np.int64, copy=False).ravel()


def pixel_confusion(truth: Any, predicted: Any, *, num_classes: int) -> NDArray[np.int64]:
    """Count pixels of each true class against each predicted class.

    Parameters
    ----------
    truth, predicted : ndarray of int, any shape (the same for both)
        Class indices in ``0..num_classes-1``, e.g. (H, W) label images. Not modified.
    num_classes : int
        Number of classes K; fixes the matrix size even when a class never occurs.

    Returns
    -------
    (K, K) ndarray of int64
        ``matrix[i, j]`` = number of pixels of true class ``i`` predicted as ``j`` (rows = truth, columns =
        prediction, as :func:`cytolens.evaluation.stats.confusion_matrix`).

    Raises
    ------
    OptionError
        If the shapes differ, a dtype is not integer, a value is outside ``0..num_classes-1`` or ``num_classes``
        is not a positive integer.
    """
    num_classes = check_int("num_classes", num_classes, low=1)
    truth_shape, predicted_shape = np.shape(truth), np.shape(predicted)
    if truth_shape != predicted_shape:
        raise OptionError(f"`truth` and `predicted` must have the same shape, got {truth_shape} and {predicted_shape}.")
    true_flat = _check_label_image("truth", truth, num_classes)
    predicted_flat = _check_label_image("predicted", predicted, num_classes)
    # One bincount over the joint index is a single pass over the pixels, unlike K² boolean masks.
    joint = true_flat * num_classes + predicted_flat
    counts = np.bincount(joint, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def _ratio(numerator: NDArray[np.float64], denominator: NDArray[np.float64]) -> NDArray[np.float64]:
    """Elementwise ratio, NaN where the denominator is 0 (an undefined score, not a zero one)."""
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _mean_defined(values: NDArray[np.float64]) -> float:
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if defined.size else float("nan")


def scores_from_confusion(matrix: Any, class_names: Sequence[str]) -> Scores:
    """Dice, IoU, precision and recall per class, their means, and pixel accuracy from a confusion matrix.

    Parameters
    ----------
    matrix : (K, K) array-like of non-negative int
        Pixel counts, rows = true class, columns = predicted class (see :func:`pixel_confusion`).
    class_names : sequence of str
        K class names, in the order of the matrix; class 0 is background.

    Returns
    -------
    dict
        ``dice``, ``iou``, ``precision``, ``recall``: dict class name → float (NaN where undefined, see the
        module docstring); ``mean_dice``, ``mean_iou`` (macro over classes, background included),
        ``mean_dice_foreground``, ``mean_iou_foreground`` (class 0 left out), ``pixel_accuracy``: float;
        ``pixels``: int total; ``absent_classes``: list of the names absent from truth and prediction, which
        the means leave out; ``confusion``: (K, K) ndarray of int64, a copy of ``matrix``.

    Raises
    ------
    OptionError
        If ``matrix`` is not square, holds negative or non-integer counts, counts no pixel, or its size differs
        from the number of class names.
    """
    counts = np.asarray(matrix)
    names = [str(name) for name in class_names]
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise OptionError(f"`matrix` must be a square (K, K) confusion matrix, got shape {counts.shape}.")
    if counts.shape[0] != len(names):
        raise OptionError(f"`class_names` must name the matrix's {counts.shape[0]} classes, got {len(names)} names.")
    if counts.dtype == bool or not np.issubdtype(counts.dtype, np.number) or np.any(counts < 0) or np.any(
        counts != np.round(counts)
    ):
        raise OptionError("`matrix` must hold non-negative integer counts.")
    total = int(counts.sum())
    if total == 0:
        raise OptionError("`matrix` counts no pixel; scores are undefined.")
    counts = counts.astype(np.int64)
    true_positive = np.diag(counts).astype(np.float64)
    in_truth = counts.sum(axis=1).astype(np.float64)
    in_prediction = counts.sum(axis=0).astype(np.float64)
    # 2TP + FP + FN = |truth| + |prediction|; TP + FP + FN = that minus TP.
    dice = _ratio(2 * true_positive, in_truth + in_prediction)
    iou = _ratio(true_positive, in_truth + in_prediction - true_positive)
    precision = _ratio(true_positive, in_prediction)
    recall = _ratio(true_positive, in_truth)

    def by_name(values: NDArray[np.float64]) -> dict[str, float]:
        return {name: float(value) for name, value in zip(names, values)}

    return {
        "dice": by_name(dice),
        "iou": by_name(iou),
        "precision": by_name(precision),
        "recall": by_name(recall),
        "mean_dice": _mean_defined(dice),
        "mean_iou": _mean_defined(iou),
        "mean_dice_foreground": _mean_defined(dice[1:]),
        "mean_iou_foreground": _mean_defined(iou[1:]),
        "pixel_accuracy": float(true_positive.sum() / total),
        "pixels": total,
        "absent_classes": [name for name, value in zip(names, dice) if np.isnan(value)],
        "confusion": counts.copy(),
    }


def evaluate_images(
    pairs: Iterable[tuple[str, NDArray[np.integer], NDArray[np.integer]]], *, class_names: Sequence[str]
) -> tuple[pd.DataFrame, Scores]:
    """Score a set of predicted label images against their truth, per image and over the whole set.

    Images are consumed one at a time, so memory holds one pair and the running confusion matrix, whatever the
    number of images.

    Parameters
    ----------
    pairs : iterable of (str, ndarray, ndarray)
        ``(stem, truth, predicted)``: an image name and two integer label images of the same shape (any shape,
        typically (H, W)) with values in ``0..K-1``.
    class_names : sequence of str
        K class names; class 0 is background.

    Returns
    -------
    table : pandas.DataFrame
        One row per image, in input order: ``stem``, ``dice_<class>`` and ``iou_<class>`` for every class,
        ``mean_dice``, ``mean_dice_foreground``, ``mean_iou``, ``pixel_accuracy``, ``pixels``.
    summary : dict
        :func:`scores_from_confusion` of the summed confusion matrix (the headline ``mean_dice``; see the module
        docstring), plus ``mean_dice_per_image``, ``mean_dice_foreground_per_image``, ``mean_iou_per_image``
        and ``pixel_accuracy_per_image`` (averages of the table's columns) and ``images`` (the count).

    Raises
    ------
    OptionError
        If there is no image, two images share a stem, or a pair fails :func:`pixel_confusion`.
    """
    names = [str(name) for name in class_names]
    num_classes = len(names)
    if num_classes == 0:
        raise OptionError("`class_names` must name at least one class.")
    total = np.zeros((num_classes, num_classes), dtype=np.int64)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for stem, truth, predicted in pairs:
        if stem in seen:
            raise OptionError(f"image stem {stem!r} occurs twice in `pairs`.")
        seen.add(stem)
        try:
            matrix = pixel_confusion(truth, predicted, num_classes=num_classes)
            scores = scores_from_confusion(matrix, names)
        except OptionError as error:
            raise OptionError(f"image {stem!r}: {error.message}") from error
        total += matrix
        row: dict[str, Any] = {"stem": stem}
        row.update({f"dice_{name}": scores["dice"][name] for name in names})
        row.update({f"iou_{name}": scores["iou"][name] for name in names})
        for key in ("mean_dice", "mean_dice_foreground", "mean_iou", "pixel_accuracy", "pixels"):
            row[key] = scores[key]
        rows.append(row)
    if not rows:
        raise OptionError("`pairs` holds no image to evaluate.")
    table = pd.DataFrame(rows)
    summary = scores_from_confusion(total, names)
    for key in ("mean_dice", "mean_dice_foreground", "mean_iou", "pixel_accuracy"):
        # skipna: an image whose only class is background has no foreground dice, and is left out of that mean.
        summary[f"{key}_per_image"] = float(table[key].mean(skipna=True))
    summary["images"] = len(rows)
    return table, summary
