"""Grouped, stratified hold-out and K-fold splits that never leak.

A *group* is a set of samples that must stay on one side of every split: an original image and its rotated
or sharpened copies, all cells cropped from one field, all wells of one compound. Splits are deterministic
for a given seed, so a run folder's ``manifest.parquet`` can be rebuilt from the labels, groups and seed.

Typical use::

    test = holdout_per_class(labels, 100, groups=groups, seed=0)         # the paper's 100 per class
    folds = np.full(len(labels), -1)
    folds[~test] = grouped_stratified_kfold(labels[~test], groups[~test], n_splits=10, seed=0)
    for fold, train_index, val_index in iter_folds(folds):               # test samples (-1) never appear
        ...
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import numpy.typing as npt

from cytolens.core.errors import OptionError, check_choice
from cytolens.core.validation import check_int

__all__ = ["grouped_stratified_kfold", "holdout_per_class", "iter_folds"]

# Lists, ndarrays and pandas Series: anything numpy.asarray turns into a 1-D array.
ArrayLike1D = npt.ArrayLike


def _as_1d(values: ArrayLike1D, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise OptionError(f"`{name}` must be one-dimensional, got shape {array.shape}")
    if array.size == 0:
        raise OptionError(f"`{name}` must not be empty")
    return array


def _encode(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(uniques, codes)`` with ``uniques[codes] == values``.

    Sorted uniques make the result independent of row order; values numpy cannot sort (e.g. a mix of
    strings and ints) fall back to order of first appearance, which is still deterministic.
    """
    try:
        return np.unique(values, return_inverse=True)
    except TypeError:
        import pandas as pd

        codes, uniques = pd.factorize(values, sort=False, use_na_sentinel=False)
        return np.asarray(uniques, dtype=object), codes.astype(np.intp)


def _display(value: object) -> str:
    """``repr`` of a label or group id without numpy's type wrapper (``'a'``, not ``np.str_('a')``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _check_lengths(labels: np.ndarray, groups: np.ndarray) -> None:
    if len(groups) != len(labels):
        raise OptionError(f"`groups` must have one entry per label ({len(labels)}), got {len(groups)}")


def holdout_per_class(
    labels: ArrayLike1D,
    n_per_class: int,
    *,
    groups: ArrayLike1D | None = None,
    count: Literal["samples", "groups"] = "samples",
    seed: int = 0,
) -> np.ndarray:
    """Choose a test set of ``n_per_class`` samples of every class, keeping groups whole.

    Parameters
    ----------
    labels : (n_samples,) array-like of str
        Class of every sample (list, ndarray or pandas Series).
    n_per_class : int
        Size of the test set of each class (Shpilman et al. 2017 held out 100 cells per class).
    groups : (n_samples,) array-like of str or int, optional
        Group of every sample; a group is held out entirely or not at all. Default: every sample is its
        own group.
    count : {"samples", "groups"}, optional
        What ``n_per_class`` counts. With ``"samples"`` (default), randomly ordered groups of a class are
        taken until the held-out samples reach ``n_per_class``; the last group may overshoot, so a class
        holds out between ``n_per_class`` and ``n_per_class + largest group − 1`` samples (exactly
        ``n_per_class`` with singleton groups). With ``"groups"``, exactly ``n_per_class`` groups are taken
        per class, e.g. 100 original images together with all their rotated copies.
    seed : int, optional
        Seed of the random choice; the same inputs and seed always give the same split.

    Returns
    -------
    is_test : (n_samples,) ndarray of bool
        True for held-out test samples.

    Raises
    ------
    OptionError
        If a group holds samples of different classes, or a class has fewer than ``n_per_class + 1``
        samples (or groups) so that nothing would be left to train on.
    """
    labels = _as_1d(labels, "labels")
    n_per_class = check_int("n_per_class", n_per_class, low=1)
    check_choice("count", count, ("samples", "groups"))
    if groups is None:
        group_codes = np.arange(len(labels))
        group_names: np.ndarray = group_codes
    else:
        groups = _as_1d(groups, "groups")
        _check_lengths(labels, groups)
        group_names, group_codes = _encode(groups)
    class_names, class_codes = _encode(labels)

    # Holding out whole groups is only well defined when a group has one class.
    pairs = np.unique(np.stack([group_codes, class_codes], axis=1), axis=0)
    mixed_groups = np.flatnonzero(np.bincount(pairs[:, 0], minlength=len(group_names)) > 1)
    if len(mixed_groups):
        group = mixed_groups[0]
        mixed = sorted({str(c) for c in class_names[pairs[pairs[:, 0] == group, 1]]})
        raise OptionError(
            f"group {_display(group_names[group])} has samples of several classes ({', '.join(mixed)}); "
            "a held-out group must have one class"
        )
    group_class = np.empty(len(group_names), dtype=np.intp)
    group_class[pairs[:, 0]] = pairs[:, 1]
    group_sizes = np.bincount(group_codes, minlength=len(group_names))

    rng = np.random.default_rng(seed)
    held_out_groups = np.zeros(len(group_names), dtype=bool)
    for class_index, class_name in enumerate(class_names):
        class_groups = np.flatnonzero(group_class == class_index)
        available = len(class_groups) if count == "groups" else int(group_sizes[class_groups].sum())
        unit = "groups" if count == "groups" else "samples"
        if available < n_per_class + 1:
            raise OptionError(
                f"class {_display(class_name)} has {available} {unit}; holding out `n_per_class`={n_per_class} "
                f"needs at least {n_per_class + 1}"
            )
        # Shuffle a sorted list so that the choice depends only on the seed, not on the row order.
        order = rng.permutation(class_groups)
        if count == "groups":
            chosen = order[:n_per_class]
        else:
            reached = np.cumsum(group_sizes[order])
            chosen = order[: int(np.searchsorted(reached, n_per_class)) + 1]
        if len(chosen) == len(class_groups):
            raise OptionError(
                f"holding out `n_per_class`={n_per_class} samples takes all {len(class_groups)} group(s) "
                f"of class {_display(class_name)}; none would be left for training"
            )
        held_out_groups[chosen] = True
    return held_out_groups[group_codes]


def grouped_stratified_kfold(
    labels: ArrayLike1D,
    groups: ArrayLike1D,
    *,
    n_splits: int,
    seed: int = 0,
) -> np.ndarray:
    """Assign every sample to one of ``n_splits`` folds, stratified by class and grouped.

    All samples of a group (e.g. an image and its 90°/180°/270° rotated copies) land in the same fold, and
    each fold's class proportions follow the whole dataset's as closely as the groups allow
    (:class:`sklearn.model_selection.StratifiedGroupKFold` with shuffling).

    Parameters
    ----------
    labels : (n_samples,) array-like of str
        Class of every sample.
    groups : (n_samples,) array-like of str or int
        Group of every sample.
    n_splits : int
        Number of folds, at least 2 (Shpilman et al. 2017 used 10).
    seed : int, optional
        Seed of the shuffling; the same inputs and seed always give the same folds.

    Returns
    -------
    fold_ids : (n_samples,) ndarray of int
        Fold (0..n_splits − 1) in which each sample is a validation sample.

    Raises
    ------
    OptionError
        If ``n_splits`` is below 2 or above the number of groups of the smallest class.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    labels = _as_1d(labels, "labels")
    groups = _as_1d(groups, "groups")
    _check_lengths(labels, groups)
    n_splits = check_int("n_splits", n_splits, low=2)
    class_names, class_codes = _encode(labels)
    _, group_codes = _encode(groups)

    groups_per_class = [len(np.unique(group_codes[class_codes == c])) for c in range(len(class_names))]
    smallest = int(np.argmin(groups_per_class))
    if n_splits > groups_per_class[smallest]:
        raise OptionError(
            f"`n_splits`={n_splits} is more than the {groups_per_class[smallest]} groups of class "
            f"{_display(class_names[smallest])}; every fold needs a sample of every class"
        )

    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    fold_ids = np.full(len(labels), -1, dtype=np.int64)
    for fold, (_, val_index) in enumerate(splitter.split(np.zeros(len(labels)), class_codes, group_codes)):
        fold_ids[val_index] = fold
    empty = sorted(set(range(n_splits)) - set(np.unique(fold_ids).tolist()))
    if empty:
        # StratifiedGroupKFold can leave a fold empty when a few groups are very large.
        raise OptionError(f"`n_splits`={n_splits} leaves fold(s) {empty} empty with these groups")
    return fold_ids


def iter_folds(fold_ids: ArrayLike1D) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(fold, train_index, val_index)`` for every fold of a fold assignment.

    Parameters
    ----------
    fold_ids : (n_samples,) array-like of int
        Fold of every sample, as returned by :func:`grouped_stratified_kfold`. Negative values mark
        samples outside cross-validation (e.g. the held-out test set): they are in no train or
        validation index.

    Yields
    ------
    fold : int
        The fold number, in increasing order.
    train_index, val_index : ndarray of int
        Positions of the training samples (all other folds) and of the validation samples (this fold).
    """
    fold_ids = _as_1d(fold_ids, "fold_ids")
    if fold_ids.dtype.kind not in "iu":
        raise OptionError(f"`fold_ids` must be integers, got dtype {fold_ids.dtype}")
    in_cv = fold_ids >= 0
    for fold in np.unique(fold_ids[in_cv]):
        val = fold_ids == fold
        yield int(fold), np.flatnonzero(in_cv & ~val), np.flatnonzero(val)
