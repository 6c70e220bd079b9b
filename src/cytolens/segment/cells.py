"""Cells from a nucleus / cytoplasm label image: nuclei seed a watershed that splits the cell mask into cells.

Beyond the paper (MIDL 2019 predicts classes of pixels, not cells): touching cells share one cytoplasm region
in a background / nucleus / cytoplasm image, but each normally has one nucleus. :func:`split_cells` uses the
nuclei as seeds, :func:`cell_table` measures each cell for profiling, and :func:`score_instances` scores cells
against true ones (the simulator writes them).

Splitting (:func:`split_cells`)
-------------------------------
1. **Seeds** are the 8-connected nucleus regions of at least ``min_nucleus_area`` pixels; smaller ones are
   debris or noise and are absorbed by the surrounding cell. Nuclei touching the image border are kept
   whatever their size (``keep_border_nuclei``): the frame cut them, and without them the cut cell's cytoplasm
   would be given to its neighbour. Touching nuclei form one seed (they are not split).
2. The **cell mask** is nucleus ∪ cytoplasm; its 8-connected components are handled independently, because
   the watershed floods only through mask pixels.
3. A marker-controlled **watershed** on the Euclidean distance to the nearest seed gives each mask pixel to the
   nucleus it is closest to along paths inside the cell mask (a geodesic Voronoi partition). Between two
   similar touching cells the border falls half-way between the nuclei. This landscape is used rather than the
   inverted distance transform of the mask because confluent cells form mask regions without necks, where the
   latter has no ridge to follow (it also measured no better on simulated fields).
4. **Anucleate components** (no seed) are fragments of cells whose nucleus is out of the frame, or debris:
   kept as cells of their own if at least ``min_cell_area`` pixels, otherwise dropped (set to 0).
5. Cells are numbered 1..N in raster order of their first pixel (top-left first); the result depends only on
   the input.

Column convention (:func:`cell_table`)
--------------------------------------
Columns follow CellProfiler / pycytominer: ``Metadata_*`` for identifiers and flags, otherwise
``Compartment_Category_Feature`` with compartments ``Cells`` (the whole cell), ``Nuclei`` and ``Cytoplasm``
(cell minus nucleus), so ``pycytominer`` recognises the features (``infer_cp_features``) without renaming.
Positions are CellProfiler's ``Location_Center_X`` (column) and ``Location_Center_Y`` (row), in pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment
from skimage.measure import label as label_components
from skimage.segmentation import watershed

from cytolens.core.errors import OptionError
from cytolens.segment.labels import BACKGROUND, CYTOPLASM, NUCLEUS
from cytolens.core.validation import check_int

#: 8-connectivity in 2-D, used for nuclei, cell-mask components and the watershed alike, so that a pixel
#: joined to its component only diagonally is still reached by the flood.
_CONNECTIVITY = 2


def _check_integer_image(name: str, image: Any, *, ndim: int | None = 2) -> NDArray[np.integer]:
    array = np.asarray(image)
    if ndim is not None and array.ndim != ndim:
        raise OptionError(f"`{name}` must be a {ndim}-D (H, W) image, got shape {array.shape}.")
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise OptionError(f"`{name}` must hold integers, got dtype {array.dtype}.")
    if array.size and array.min() < 0:
        raise OptionError(f"`{name}` must not hold negative values, got minimum {int(array.min())}.")
    return array


def _check_class_labels(labels: Any) -> NDArray[np.integer]:
    array = _check_integer_image("labels", labels)
    if array.size and array.max() > CYTOPLASM:
        raise OptionError(
            f"`labels` must hold {BACKGROUND} (background), {NUCLEUS} (nucleus) or {CYTOPLASM} (cytoplasm), "
            f"got maximum {int(array.max())}."
        )
    return array


def _border_ids(image: NDArray[np.integer]) -> NDArray[np.integer]:
    """Ids (0 included if present) of the objects with a pixel on the image's outer rows or columns."""
    edges = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    return np.unique(edges)


def _raster_order(instances: NDArray[np.integer]) -> NDArray[np.int32]:
    """Renumber objects 1..N in order of their first pixel, so ids do not depend on how they were found."""
    flat = instances.ravel()
    ids, first = np.unique(flat, return_index=True)
    first, ids = first[ids > 0], ids[ids > 0]
    lookup = np.zeros(int(flat.max()) + 1 if flat.size else 1, dtype=np.int32)
    lookup[ids[np.argsort(first, kind="stable")]] = np.arange(1, ids.size + 1, dtype=np.int32)
    return lookup[instances]


def split_cells(
    labels: Any,
    *,
    min_nucleus_area: int = 30,
    min_cell_area: int = 100,
    compactness: float = 0.0,
    keep_border_nuclei: bool = True,
) -> NDArray[np.int32]:
    """Split the cell mask of a background / nucleus / cytoplasm image into cells, one per nucleus.

    See the module docstring for the method.

    Parameters
    ----------
    labels : (H, W) ndarray of int
        0 background, 1 nucleus, 2 cytoplasm (e.g. a prediction of :mod:`cytolens.segment`). Not modified.
    min_nucleus_area : int, default 30
        Nuclei smaller than this (pixels) are not seeds; their pixels join the surrounding cell.
    min_cell_area : int, default 100
        Cell-mask components without a seed are kept as cells if at least this large (pixels), else dropped.
    compactness : float, default 0.0
        Passed to :func:`skimage.segmentation.watershed`; larger values give more regular cells.
    keep_border_nuclei : bool, default True
        Keep nuclei touching the image border as seeds whatever their size (the frame cut their area).

    Returns
    -------
    (H, W) ndarray of int32
        Cell ids 1..N in raster order of each cell's first pixel; 0 is background and dropped fragments.

    Raises
    ------
    OptionError
        If ``labels`` is not a 2-D integer image with values 0..2, or an area or ``compactness`` is negative.
    """
    labels = _check_class_labels(labels)
    min_nucleus_area = check_int("min_nucleus_area", min_nucleus_area, low=0)
    min_cell_area = check_int("min_cell_area", min_cell_area, low=0)
    if isinstance(compactness, bool) or not isinstance(compactness, (int, float, np.number)) or not (
        np.isfinite(compactness) and compactness >= 0
    ):
        raise OptionError(f"`compactness` must be a non-negative number, got {compactness!r}.")
    if labels.size == 0:
        return np.zeros(labels.shape, dtype=np.int32)

    nuclei = label_components(labels == NUCLEUS, connectivity=_CONNECTIVITY)
    nucleus_sizes = np.bincount(nuclei.ravel())
    is_seed = nucleus_sizes >= min_nucleus_area
    if keep_border_nuclei:
        is_seed[_border_ids(nuclei)] = True
    is_seed[0] = False
    markers = np.where(is_seed[nuclei], nuclei, 0).astype(np.int64)

    cell_mask = labels != BACKGROUND
    components = label_components(cell_mask, connectivity=_CONNECTIVITY)
    component_sizes = np.bincount(components.ravel())
    seeded = np.zeros(component_sizes.size, dtype=bool)
    seeded[np.unique(components[markers > 0])] = True
    anucleate = ~seeded & (component_sizes >= min_cell_area)
    anucleate[0] = False
    # A kept anucleate component is its own marker, so the watershed leaves it whole; ids after the nuclei'.
    fragment_ids = np.zeros(component_sizes.size, dtype=np.int64)
    fragment_ids[anucleate] = int(nuclei.max()) + 1 + np.arange(int(anucleate.sum()))
    markers = np.where(markers > 0, markers, fragment_ids[components])
    flooded = cell_mask & (seeded | anucleate)[components]

    distance_to_seed = ndi.distance_transform_edt(markers == 0)
    cells = watershed(
        distance_to_seed, markers, mask=flooded, connectivity=_CONNECTIVITY, compactness=float(compactness)
    )
    return _raster_order(cells)


def _per_object_sums(index: NDArray[np.intp], count: int, weights: NDArray[Any] | None = None) -> NDArray[np.float64]:
    return np.bincount(index, weights=weights, minlength=count)[:count].astype(np.float64)


def cell_table(
    instances: Any,
    labels: Any,
    *,
    pixel_size_um: float | None = None,
    image_id: str | None = None,
) -> pd.DataFrame:
    """One row of measurements per cell, with CellProfiler / pycytominer column names.

    Parameters
    ----------
    instances : (H, W) ndarray of int
        Cell ids, 0 background (e.g. from :func:`split_cells`); ids need not be consecutive. Not modified.
    labels : (H, W) ndarray of int
        0 background, 1 nucleus, 2 cytoplasm, same shape as ``instances``. Not modified.
    pixel_size_um : float, optional
        Pixel size in µm; when given, areas are also reported in µm² (``*_Area_um2`` columns).
    image_id : str, optional
        Written to ``Metadata_image`` (None when not given), so tables of many images can be concatenated.

    Returns
    -------
    pandas.DataFrame
        One row per cell, by increasing id, with columns:

        ===========================================  ============================================================
        ``Metadata_image``                           ``image_id``
        ``Metadata_cell_id``                         the cell's id in ``instances`` (int)
        ``Metadata_touches_border``                  the cell has a pixel on the image border (bool)
        ``Cells_AreaShape_Area``                     pixels of the cell (all of its pixels, whatever their class)
        ``Nuclei_AreaShape_Area``                    its nucleus pixels (class 1)
        ``Cytoplasm_AreaShape_Area``                 its cytoplasm pixels (class 2)
        ``Cells_AreaShape_NucleusCytoplasmRatio``    nucleus area / cytoplasm area; NaN without cytoplasm
        ``Cells_Location_Center_Y`` / ``_X``         centroid row / column of the cell (pixels)
        ``Nuclei_Location_Center_Y`` / ``_X``        centroid row / column of its nucleus; NaN without nucleus
        ``*_AreaShape_Area_um2``                     the three areas in µm², only with ``pixel_size_um``
        ===========================================  ============================================================

        A cell of :func:`split_cells` has area = nucleus area + cytoplasm area; cells from elsewhere may also
        cover background pixels, which count in ``Cells_AreaShape_Area`` only.

    Raises
    ------
    OptionError
        If the images are not 2-D integer images of the same shape, ``labels`` holds values other than 0..2,
        or ``pixel_size_um`` is not positive.
    """
    instances = _check_integer_image("instances", instances)
    labels = _check_class_labels(labels)
    if instances.shape != labels.shape:
        raise OptionError(
            f"`instances` and `labels` must have the same shape, got {instances.shape} and {labels.shape}."
        )
    if pixel_size_um is not None and (
        isinstance(pixel_size_um, bool) or not np.isfinite(pixel_size_um) or pixel_size_um <= 0
    ):
        raise OptionError(f"`pixel_size_um` must be a positive number, got {pixel_size_um!r}.")

    ids, index = np.unique(instances.ravel(), return_inverse=True)
    count = ids.size
    rows, cols = np.indices(instances.shape)
    rows, cols = rows.ravel().astype(np.float64), cols.ravel().astype(np.float64)
    nucleus = (labels == NUCLEUS).ravel().astype(np.float64)
    area = _per_object_sums(index, count)
    nucleus_area = _per_object_sums(index, count, nucleus)
    cytoplasm_area = _per_object_sums(index, count, (labels == CYTOPLASM).ravel().astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        center_y = _per_object_sums(index, count, rows) / area
        center_x = _per_object_sums(index, count, cols) / area
        nucleus_y = _per_object_sums(index, count, rows * nucleus) / nucleus_area
        nucleus_x = _per_object_sums(index, count, cols * nucleus) / nucleus_area
        ratio = nucleus_area / cytoplasm_area
    ratio[cytoplasm_area == 0] = np.nan

    keep = ids > 0
    touches = np.isin(ids, _border_ids(instances)) if instances.size else np.zeros(count, dtype=bool)
    table = pd.DataFrame(
        {
            "Metadata_image": pd.Series([image_id] * int(keep.sum()), dtype=object),
            "Metadata_cell_id": ids[keep].astype(np.int64),
            "Metadata_touches_border": touches[keep],
            "Cells_AreaShape_Area": area[keep].astype(np.int64),
            "Nuclei_AreaShape_Area": nucleus_area[keep].astype(np.int64),
            "Cytoplasm_AreaShape_Area": cytoplasm_area[keep].astype(np.int64),
            "Cells_AreaShape_NucleusCytoplasmRatio": ratio[keep],
            "Cells_Location_Center_Y": center_y[keep],
            "Cells_Location_Center_X": center_x[keep],
            "Nuclei_Location_Center_Y": nucleus_y[keep],
            "Nuclei_Location_Center_X": nucleus_x[keep],
        }
    )
    if pixel_size_um is not None:
        pixel_area = float(pixel_size_um) ** 2
        for compartment in ("Cells", "Nuclei", "Cytoplasm"):
            table[f"{compartment}_AreaShape_Area_um2"] = table[f"{compartment}_AreaShape_Area"] * pixel_area
    return table


def score_instances(predicted_instances: Any, true_instances: Any, *, iou_threshold: float = 0.5) -> dict[str, Any]:
    """Match predicted cells to true cells by IoU and count hits, misses and false cells.

    Pairs with IoU ≥ ``iou_threshold`` are matched one-to-one by the Hungarian method
    (:func:`scipy.optimize.linear_sum_assignment`), maximising first the number of matches and then their
    total IoU (as StarDist's ``matching``). For ``iou_threshold`` ≥ 0.5 an object has at most one candidate,
    so the matching is unique.

    Parameters
    ----------
    predicted_instances, true_instances : ndarray of int, same shape
        Object ids, 0 background; ids need not be consecutive. Not modified.
    iou_threshold : float, default 0.5
        Minimum IoU of a match, in (0, 1].

    Returns
    -------
    dict
        ``n_predicted``, ``n_true``, ``matched`` (true positives), ``false_positives``, ``false_negatives``:
        int; ``precision`` = matched / n_predicted, ``recall`` = matched / n_true, ``f1`` = 2·matched /
        (n_predicted + n_true), ``mean_matched_iou``: float, NaN where the denominator is 0 (no object, no
        match); ``iou_threshold``: float.

    Raises
    ------
    OptionError
        If the shapes differ, a dtype is not integer, an id is negative, or ``iou_threshold`` is not in (0, 1].
    """
    predicted = _check_integer_image("predicted_instances", predicted_instances, ndim=None)
    truth = _check_integer_image("true_instances", true_instances, ndim=None)
    if predicted.shape != truth.shape:
        raise OptionError(
            f"`predicted_instances` and `true_instances` must have the same shape, got {predicted.shape} and "
            f"{truth.shape}."
        )
    if isinstance(iou_threshold, bool) or not 0 < float(iou_threshold) <= 1:
        raise OptionError(f"`iou_threshold` must be in (0, 1], got {iou_threshold!r}.")

    predicted_ids, predicted_index = np.unique(predicted.ravel(), return_inverse=True)
    true_ids, true_index = np.unique(truth.ravel(), return_inverse=True)
    predicted_areas = np.bincount(predicted_index, minlength=predicted_ids.size)
    true_areas = np.bincount(true_index, minlength=true_ids.size)
    n_predicted = int(np.count_nonzero(predicted_ids))
    n_true = int(np.count_nonzero(true_ids))

    # Intersections of overlapping pairs only (sparse): a dense n × n table would not fit for many cells.
    overlap = (predicted.ravel() > 0) & (truth.ravel() > 0)
    codes, intersections = np.unique(
        predicted_index[overlap].astype(np.int64) * true_ids.size + true_index[overlap], return_counts=True
    )
    pairs = np.stack([codes // true_ids.size, codes % true_ids.size])
    unions = predicted_areas[pairs[0]] + true_areas[pairs[1]] - intersections
    ious = intersections / unions
    candidate = ious >= iou_threshold
    pairs, ious = pairs[:, candidate], ious[candidate]

    matched_ious = np.empty(0)
    if ious.size:
        rows, row_index = np.unique(pairs[0], return_inverse=True)
        cols, col_index = np.unique(pairs[1], return_inverse=True)
        gain = np.zeros((rows.size, cols.size))
        # 1 per match plus a tie-break on IoU too small to trade a match for (its total stays below 1).
        gain[row_index, col_index] = 1.0 + ious / (2.0 * min(rows.size, cols.size))
        chosen_rows, chosen_cols = linear_sum_assignment(gain, maximize=True)
        chosen = gain[chosen_rows, chosen_cols] > 0
        iou_table = np.zeros_like(gain)
        iou_table[row_index, col_index] = ious
        matched_ious = iou_table[chosen_rows[chosen], chosen_cols[chosen]]

    matched = int(matched_ious.size)

    def ratio(numerator: float, denominator: float) -> float:
        return float(numerator / denominator) if denominator > 0 else float("nan")

    return {
        "n_predicted": n_predicted,
        "n_true": n_true,
        "matched": matched,
        "false_positives": n_predicted - matched,
        "false_negatives": n_true - matched,
        "precision": ratio(matched, n_predicted),
        "recall": ratio(matched, n_true),
        "f1": ratio(2 * matched, n_predicted + n_true),
        "mean_matched_iou": float(matched_ious.mean()) if matched else float("nan"),
        "iou_threshold": float(iou_threshold),
    }
