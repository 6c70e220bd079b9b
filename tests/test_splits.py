"""Tests for cytolens.data.splits: determinism, exact hold-out sizes, groups never split, stratification."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cytolens.core.errors import OptionError
from cytolens.data.splits import grouped_stratified_kfold, holdout_per_class, iter_folds

COPIES = 4  # an original image and its 90/180/270° rotations


def rotated_dataset(images_per_class: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Labels and group ids of a dataset where every original image comes with 3 rotated copies."""
    labels: list[str] = []
    groups: list[str] = []
    for name, count in images_per_class.items():
        for image in range(count):
            labels += [name] * COPIES
            groups += [f"{name}/img{image:03d}"] * COPIES
    return np.array(labels), np.array(groups)


def assert_groups_whole(groups: np.ndarray, assignment: np.ndarray) -> None:
    per_group = pd.Series(assignment).groupby(pd.Series(groups)).nunique()
    assert (per_group == 1).all(), per_group[per_group > 1]


# ------------------------------------------------------------------------------------------------ holdout


@pytest.mark.parametrize("container", [list, np.array, pd.Series])
def test_holdout_exact_count_with_singletons(container):
    labels = ["0"] * 30 + ["0.1"] * 25 + ["1"] * 40
    is_test = holdout_per_class(container(labels), 10, seed=3)
    assert is_test.dtype == bool and is_test.shape == (95,)
    assert pd.Series(np.array(labels)[is_test]).value_counts().to_dict() == {"0": 10, "0.1": 10, "1": 10}


def test_holdout_is_deterministic_and_seeded():
    labels = np.repeat(["a", "b"], 50)
    first = holdout_per_class(labels, 10, seed=0)
    np.testing.assert_array_equal(first, holdout_per_class(labels, 10, seed=0))
    assert not np.array_equal(first, holdout_per_class(labels, 10, seed=1))


def test_holdout_counts_groups_or_samples():
    labels, groups = rotated_dataset({"a": 20, "b": 15})
    by_groups = holdout_per_class(labels, 5, groups=groups, count="groups")
    assert pd.Series(labels[by_groups]).value_counts().to_dict() == {"a": 20, "b": 20}
    by_samples = holdout_per_class(labels, 10, groups=groups)
    # 10 samples in groups of 4: three groups, the last one overshooting to 12.
    assert pd.Series(labels[by_samples]).value_counts().to_dict() == {"a": 12, "b": 12}
    assert_groups_whole(groups, by_groups)
    assert_groups_whole(groups, by_samples)


def test_holdout_does_not_depend_on_row_order():
    labels, groups = rotated_dataset({"a": 12, "b": 12})
    order = np.random.default_rng(0).permutation(len(labels))
    is_test = holdout_per_class(labels, 3, groups=groups, count="groups", seed=5)
    shuffled = holdout_per_class(labels[order], 3, groups=groups[order], count="groups", seed=5)
    np.testing.assert_array_equal(is_test[order], shuffled)


def test_holdout_errors():
    labels = np.array(["a"] * 11 + ["b"] * 10)
    with pytest.raises(OptionError, match=r"class 'b' has 10 samples.*at least 11"):
        holdout_per_class(labels, 10)
    with pytest.raises(OptionError, match=r"class 'a' has 2 groups.*at least 3"):
        holdout_per_class(labels, 2, groups=[0] * 5 + [1] * 6 + list(range(2, 12)), count="groups")
    with pytest.raises(OptionError, match=r"takes all 1 group\(s\) of class 'a'"):
        holdout_per_class(labels, 3, groups=[0] * 11 + list(range(1, 11)))
    with pytest.raises(OptionError, match=r"group 'g' has samples of several classes \(a, b\)"):
        holdout_per_class(["a", "a", "b", "b"], 1, groups=["g", "h", "g", "k"])
    with pytest.raises(OptionError, match="`n_per_class`"):
        holdout_per_class(labels, 0)
    with pytest.raises(OptionError, match="`groups`"):
        holdout_per_class(labels, 1, groups=[1, 2])
    with pytest.raises(OptionError, match="Did you mean 'groups'"):
        holdout_per_class(labels, 1, count="group")


# ------------------------------------------------------------------------------------------------ k-fold


def test_kfold_deterministic_seeded_and_grouped():
    labels, groups = rotated_dataset({"0": 30, "0.1": 30, "1": 30})
    folds = grouped_stratified_kfold(labels, groups, n_splits=5, seed=0)
    assert folds.shape == labels.shape and set(folds.tolist()) == set(range(5))
    np.testing.assert_array_equal(folds, grouped_stratified_kfold(labels, groups, n_splits=5, seed=0))
    assert not np.array_equal(folds, grouped_stratified_kfold(labels, groups, n_splits=5, seed=1))
    assert_groups_whole(groups, folds)


def test_kfold_is_stratified_on_balanced_data():
    labels, groups = rotated_dataset({"0": 40, "0.1": 40, "1": 40})
    folds = grouped_stratified_kfold(pd.Series(labels), pd.Series(groups), n_splits=4, seed=2)
    table = pd.crosstab(folds, labels, normalize="index")
    # Each fold holds 10 images of each class (exactly a third) ± one group.
    assert np.allclose(table.to_numpy(), 1 / 3, atol=0.05)


def test_kfold_errors():
    labels, groups = rotated_dataset({"a": 10, "b": 3})
    with pytest.raises(OptionError, match=r"`n_splits`=4 is more than the 3 groups of class 'b'"):
        grouped_stratified_kfold(labels, groups, n_splits=4)
    with pytest.raises(OptionError, match="`n_splits`"):
        grouped_stratified_kfold(labels, groups, n_splits=1)
    with pytest.raises(OptionError, match="`groups`"):
        grouped_stratified_kfold(labels, groups[:-1], n_splits=2)


def test_iter_folds_partitions_and_skips_test_samples():
    fold_ids = np.array([0, 1, 2, -1, 0, 1, 2, -1, 2])
    seen = []
    for fold, train, val in iter_folds(fold_ids):
        assert set(train).isdisjoint(val)
        assert set(train) | set(val) == set(np.flatnonzero(fold_ids >= 0))
        np.testing.assert_array_equal(val, np.flatnonzero(fold_ids == fold))
        seen.append(fold)
    assert seen == [0, 1, 2]
    with pytest.raises(OptionError, match="`fold_ids`"):
        list(iter_folds(["a", "b"]))


# ------------------------------------------------------------------------------------ property-based


@st.composite
def grouped_datasets(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Random classes with 3..12 originals each, every original with 1..4 copies sharing its group id."""
    n_classes = draw(st.integers(2, 4))
    labels: list[str] = []
    groups: list[int] = []
    next_group = 0
    for name in ("ctrl", "low", "high", "other")[:n_classes]:
        for copies in draw(st.lists(st.integers(1, COPIES), min_size=3, max_size=12)):
            labels += [name] * copies
            groups += [next_group] * copies
            next_group += 1
    order = draw(st.permutations(range(len(labels))))
    return np.array(labels)[list(order)], np.array(groups)[list(order)]


@settings(max_examples=40, deadline=None)
@given(data=grouped_datasets(), seed=st.integers(0, 2**31 - 1), n_splits=st.integers(2, 3))
def test_groups_never_straddle_splits(data, seed, n_splits):
    labels, groups = data
    is_test = holdout_per_class(labels, 2, groups=groups, seed=seed)
    assert_groups_whole(groups, is_test)
    counts = pd.Series(labels[is_test]).value_counts()
    assert set(counts.index) == set(labels) and (counts >= 2).all() and (counts <= 2 + COPIES - 1).all()

    folds = grouped_stratified_kfold(labels, groups, n_splits=n_splits, seed=seed)
    assert_groups_whole(groups, folds)
    assert set(folds.tolist()) == set(range(n_splits))
    for _, train, val in iter_folds(folds):
        assert set(groups[train]).isdisjoint(groups[val])
