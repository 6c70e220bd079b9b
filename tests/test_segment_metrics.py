"""Segmentation scores against values computed by hand on 4×4 images; dataset averaging; validation."""

from __future__ import annotations

import numpy as np
import pytest

from cytolens.core.errors import OptionError
from cytolens.segment.labels import CLASS_NAMES
from cytolens.segment.metrics import evaluate_images, pixel_confusion, scores_from_confusion
from cytolens.evaluation.stats import confusion_matrix

TRUTH = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]], dtype=np.uint8)
PREDICTED = np.array([[0, 0, 1, 2], [0, 1, 1, 1], [2, 2, 2, 0], [2, 2, 2, 2]], dtype=np.uint8)
# Rows = truth: background 3 right, 1 called nucleus; nucleus 3 right, 1 called cytoplasm;
# cytoplasm 7 right, 1 called background.
EXPECTED_CONFUSION = np.array([[3, 1, 0], [0, 3, 1], [1, 0, 7]])


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64])
@pytest.mark.parametrize("shape", [(4, 4), (16,), (2, 2, 4)])
def test_pixel_confusion_by_hand_any_shape_and_dtype(dtype: type, shape: tuple[int, ...]) -> None:
    truth, predicted = TRUTH.astype(dtype).reshape(shape), PREDICTED.astype(dtype).reshape(shape)
    matrix = pixel_confusion(truth, predicted, num_classes=3)
    assert matrix.dtype == np.int64
    np.testing.assert_array_equal(matrix, EXPECTED_CONFUSION)
    np.testing.assert_array_equal(matrix, confusion_matrix(TRUTH.ravel(), PREDICTED.ravel(), n_classes=3))
    np.testing.assert_array_equal(truth.reshape(4, 4), TRUTH)  # inputs not modified


def test_scores_by_hand() -> None:
    scores = scores_from_confusion(EXPECTED_CONFUSION, CLASS_NAMES)
    assert scores["dice"] == pytest.approx({"background": 6 / 8, "nucleus": 6 / 8, "cytoplasm": 14 / 16})
    assert scores["iou"] == pytest.approx({"background": 3 / 5, "nucleus": 3 / 5, "cytoplasm": 7 / 9})
    assert scores["precision"] == pytest.approx({"background": 3 / 4, "nucleus": 3 / 4, "cytoplasm": 7 / 8})
    assert scores["recall"] == pytest.approx({"background": 3 / 4, "nucleus": 3 / 4, "cytoplasm": 7 / 8})
    assert scores["mean_dice"] == pytest.approx((0.75 + 0.75 + 0.875) / 3)
    assert scores["mean_dice_foreground"] == pytest.approx((0.75 + 0.875) / 2)
    assert scores["mean_iou"] == pytest.approx((0.6 + 0.6 + 7 / 9) / 3)
    assert scores["mean_iou_foreground"] == pytest.approx((0.6 + 7 / 9) / 2)
    assert scores["pixel_accuracy"] == pytest.approx(13 / 16)
    assert scores["pixels"] == 16 and scores["absent_classes"] == []


def test_absent_class_is_nan_and_left_out_of_the_means() -> None:
    matrix = np.zeros((4, 4), dtype=np.int64)
    matrix[:3, :3] = EXPECTED_CONFUSION
    scores = scores_from_confusion(matrix, [*CLASS_NAMES, "mitosis"])
    assert np.isnan(scores["dice"]["mitosis"]) and np.isnan(scores["iou"]["mitosis"])
    assert np.isnan(scores["precision"]["mitosis"]) and np.isnan(scores["recall"]["mitosis"])
    assert scores["absent_classes"] == ["mitosis"]
    assert scores["mean_dice"] == pytest.approx((0.75 + 0.75 + 0.875) / 3)
    assert scores["mean_dice_foreground"] == pytest.approx((0.75 + 0.875) / 2)


def test_class_missed_entirely_scores_zero_not_nan() -> None:
    truth = np.array([[0, 1], [1, 1]])
    predicted = np.zeros((2, 2), dtype=int)
    scores = scores_from_confusion(pixel_confusion(truth, predicted, num_classes=2), ["background", "nucleus"])
    assert scores["dice"]["nucleus"] == 0.0 and scores["recall"]["nucleus"] == 0.0
    assert np.isnan(scores["precision"]["nucleus"])  # nothing predicted as nucleus: precision undefined
    assert scores["dice"]["background"] == pytest.approx(2 / 5)
    assert scores["mean_dice"] == pytest.approx(0.2)


def test_summed_confusion_and_per_image_mean_differ() -> None:
    names = ["background", "nucleus"]
    all_nucleus = np.ones((2, 2), dtype=np.uint8)
    one_nucleus_pixel = np.zeros((4, 4), dtype=np.uint8)
    one_nucleus_pixel[1, 1] = 1
    pairs = [("a", all_nucleus, all_nucleus.copy()), ("b", one_nucleus_pixel, np.zeros((4, 4), np.uint8))]
    table, summary = evaluate_images(iter(pairs), class_names=names)

    assert list(table["stem"]) == ["a", "b"]
    # Image a: background absent from both, so its mean dice is the nucleus' 1. Image b: nucleus missed.
    assert table["mean_dice"].tolist() == pytest.approx([1.0, (30 / 31 + 0.0) / 2])
    assert np.isnan(table.loc[0, "dice_background"]) and table.loc[1, "dice_nucleus"] == 0.0
    assert summary["mean_dice_per_image"] == pytest.approx((1.0 + 15 / 31) / 2)
    # Summed: background 15 of 15 true (16 predicted), nucleus 4 of 5 true (4 predicted).
    np.testing.assert_array_equal(summary["confusion"], [[15, 0], [1, 4]])
    assert summary["mean_dice"] == pytest.approx((30 / 31 + 8 / 9) / 2)
    assert abs(summary["mean_dice"] - summary["mean_dice_per_image"]) > 0.1
    assert summary["pixel_accuracy"] == pytest.approx(19 / 20)
    assert summary["images"] == 2
    assert set(table.columns) >= {"iou_nucleus", "mean_dice_foreground", "pixel_accuracy", "pixels"}


@pytest.mark.parametrize(
    ("truth", "predicted", "num_classes", "message"),
    [
        (np.zeros((4, 4), int), np.zeros((4, 5), int), 3, "same shape"),
        (np.zeros((4, 4), int), np.full((4, 4), 3), 3, "`predicted` must hold class indices in 0..2"),
        (np.full((4, 4), -1), np.zeros((4, 4), int), 3, "`truth` must hold class indices"),
        (np.zeros((4, 4)), np.zeros((4, 4), int), 3, "`truth` must hold integer"),
        (np.zeros((4, 4), bool), np.zeros((4, 4), int), 3, "`truth` must hold integer"),
        (np.zeros((4, 4), int), np.zeros((4, 4), int), 0, "`num_classes` must be an integer >= 1"),
    ],
)
def test_pixel_confusion_rejects(truth: np.ndarray, predicted: np.ndarray, num_classes: int, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        pixel_confusion(truth, predicted, num_classes=num_classes)


def test_scores_and_evaluation_reject_bad_input() -> None:
    with pytest.raises(OptionError, match="square"):
        scores_from_confusion(np.zeros((2, 3), int), ["a", "b"])
    with pytest.raises(OptionError, match="3 classes, got 2 names"):
        scores_from_confusion(EXPECTED_CONFUSION, ["a", "b"])
    with pytest.raises(OptionError, match="non-negative integer"):
        scores_from_confusion(-EXPECTED_CONFUSION, CLASS_NAMES)
    with pytest.raises(OptionError, match="no pixel"):
        scores_from_confusion(np.zeros((3, 3), int), CLASS_NAMES)
    with pytest.raises(OptionError, match="no image"):
        evaluate_images([], class_names=CLASS_NAMES)
    with pytest.raises(OptionError, match="'x' occurs twice"):
        evaluate_images([("x", TRUTH, PREDICTED), ("x", TRUTH, PREDICTED)], class_names=CLASS_NAMES)
    with pytest.raises(OptionError, match="image 'bad': `truth` and `predicted` must have the same shape"):
        evaluate_images([("bad", TRUTH, PREDICTED[:2])], class_names=CLASS_NAMES)
