"""Geometry of a field of adherent HeLa-like cells: where the cells, nuclei and nucleoli are, before imaging.

Everything here is in output pixels; physical sizes enter through ``pixel_size_um`` so that a small test field
at the same pixel size simply holds fewer cells, and a field at a coarser pixel size holds the same cells drawn
smaller.

Model
-----
* **Placement.** Cell seeds come from a clustered (Thomas) point process, because adherent cells grow in
  colonies: cluster centres are uniform over the field (plus a margin, so cells are cut by the frame), each
  holds a Poisson number of seeds with a Gaussian spread, and a share of seeds is uniform (isolated cells). A
  soft hard-core (seeds at least ``0.75 (r_i + r_j)`` apart) keeps room for each nucleus.
* **Territories.** Each cell has a lobed, elongated outline ``R_i(φ) = r_i (1 + Σ_k a_k cos(kφ + p_k))`` around
  its seed. A pixel belongs to the cell with the smallest normalised distance ``ρ_i = |x - c_i|_E / R_i(φ)``
  (a multiplicatively weighted, anisotropic Voronoi tessellation) if that ``ρ`` is below 1. Neighbours in a
  colony therefore share smooth borders while free edges follow each cell's own outline, and the union of a
  colony is a smooth irregular shape.
* **Thickness.** Spread cells are thin lamellae at the edge and a few µm tall near the nucleus: the relative
  height is ``lamella + (1 - lamella)(1 - ρ²)`` with a shallow dip where two cells meet (the cell-cell junction
  shows in bright-field as a faint line). Rounded (mitotic) cells are small, round and tall domes.
* **Nucleus.** An oval (10–15 µm) off the cell centre, shrunk if needed so that it stays at least about a
  micrometre inside its own cell; 1–3 nucleoli. A mitotic cell instead holds a condensed chromatin bar.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

#: Samples of each cell's outline lookup table (a power of two, so wrapping is a bit mask).
_OUTLINE_SAMPLES = 256
_MODES = np.arange(2, 8)
_FAR = np.float32(1e3)
#: Relative height of the thin lamella at the cell edge (so whole-cell stain is dim but present there).
LAMELLA_HEIGHT = 0.18
#: Rounded mitotic cells stand this many times taller than the tallest part of a spread cell.
MITOTIC_HEIGHT = 2.2


@dataclass(frozen=True)
class CellFieldParameters:
    """Physical parameters of one field's cells (the hidden parameters the geometry depends on)."""

    pixel_size_um: float
    confluence: float  # target share of the frame covered by cells, before neighbours compete for space
    cell_radius_um: float  # median radius of a spread cell
    cluster_size: float  # mean seeds per colony
    cluster_spread_um: float  # standard deviation of a colony's seeds around its centre
    isolated_fraction: float  # share of seeds placed uniformly (single cells)
    mitotic_fraction: float


@dataclass(frozen=True)
class CellField:
    """The true geometry of a field.

    Attributes
    ----------
    labels : (H, W) uint8 ndarray
        0 background, 1 nucleus, 2 cytoplasm.
    instances : (H, W) uint16 ndarray
        0 background, ``k`` for pixels of cell ``k`` (1-based, index into the per-cell arrays plus one).
    height : (H, W) float32 ndarray
        Relative cell height (about 0.2 at an edge, 1 near the nucleus, up to ``MITOTIC_HEIGHT``), 0 outside.
    nucleoli : (H, W) bool ndarray
        Nucleolus pixels (inside nuclei).
    mitotic : (n_cells,) bool ndarray
        Which cells are rounded mitotic cells.
    radius_px : (n_cells,) float64 ndarray
        Each cell's base radius in pixels.
    """

    labels: NDArray[np.uint8]
    instances: NDArray[np.uint16]
    height: NDArray[np.float32]
    nucleoli: NDArray[np.bool_]
    mitotic: NDArray[np.bool_]
    radius_px: NDArray[np.float64]


def _place_seeds(
    rng: np.random.Generator, params: CellFieldParameters, height: int, width: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Clustered seeds with a soft hard-core; returns centres ``(n, 2)`` (row, col) and radii ``(n,)`` in px."""
    px = params.pixel_size_um
    r_median = params.cell_radius_um / px
    margin = 1.5 * r_median
    area = (height + 2 * margin) * (width + 2 * margin)
    # Voronoi competition and the hard-core eat into the covered area; 1.25 seeds per target cell compensates.
    n_target = max(1, int(round(1.25 * params.confluence * area / (np.pi * r_median**2))))
    n_parents = max(1, int(round(3 * n_target / params.cluster_size)))
    low, high = np.array([-margin, -margin]), np.array([height + margin, width + margin])
    parents = rng.uniform(low, high, (n_parents, 2))
    counts = rng.poisson(params.cluster_size, n_parents)
    spread = params.cluster_spread_um / px
    clustered = np.repeat(parents, counts, axis=0) + rng.normal(0.0, spread, (int(counts.sum()), 2))
    n_isolated = int(round(params.isolated_fraction * clustered.shape[0] / max(1e-9, 1 - params.isolated_fraction)))
    candidates = np.concatenate([clustered, rng.uniform(low, high, (n_isolated, 2))])
    candidates = candidates[rng.permutation(candidates.shape[0])]
    radii = r_median * np.exp(rng.normal(0.0, 0.18, candidates.shape[0]))
    keep = np.zeros(candidates.shape[0], dtype=bool)
    accepted: list[int] = []
    for i in range(candidates.shape[0]):
        if len(accepted) >= n_target:
            break
        if accepted:
            idx = np.asarray(accepted)
            gap = np.hypot(*(candidates[idx] - candidates[i]).T) - 0.75 * (radii[idx] + radii[i])
            if gap.min() < 0:
                continue
        accepted.append(i)
        keep[i] = True
    return candidates[keep], radii[keep]


def _outline_table(rng: np.random.Generator, amplitude: float) -> NDArray[np.float32]:
    """``1 + Σ a_k cos(kφ + p_k)`` sampled at ``_OUTLINE_SAMPLES`` angles in [-π, π)."""
    phi = np.linspace(-np.pi, np.pi, _OUTLINE_SAMPLES, endpoint=False)
    a = amplitude * rng.uniform(0.0, 1.0, _MODES.size) / _MODES**1.1
    p = rng.uniform(0.0, 2 * np.pi, _MODES.size)
    table = 1.0 + np.sum(a[:, None] * np.cos(_MODES[:, None] * phi[None, :] + p[:, None]), axis=0)
    return np.maximum(table, 0.55).astype(np.float32)


def _box(cy: float, cx: float, half_y: float, half_x: float, height: int, width: int) -> tuple[slice, slice] | None:
    y0, y1 = max(0, int(cy - half_y)), min(height, int(cy + half_y) + 2)
    x0, x1 = max(0, int(cx - half_x)), min(width, int(cx + half_x) + 2)
    if y0 >= y1 or x0 >= x1:
        return None
    return slice(y0, y1), slice(x0, x1)


def _frame_coordinates(
    box: tuple[slice, slice], cy: float, cx: float, angle: float, elongation: float
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Pixel offsets from ``(cy, cx)`` in a frame rotated by ``angle`` and squeezed by ``elongation`` along u."""
    dy = (np.arange(box[0].start, box[0].stop, dtype=np.float32) - np.float32(cy))[:, None]
    dx = (np.arange(box[1].start, box[1].stop, dtype=np.float32) - np.float32(cx))[None, :]
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u = (dx * c + dy * s) / np.float32(elongation)
    v = dy * c - dx * s
    return u, v


def draw_cell_field(
    rng: np.random.Generator, params: CellFieldParameters, *, height: int, width: int
) -> CellField:
    """Draw the true geometry of a field of cells.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    params : CellFieldParameters
        Pixel size, confluence, cell size and clustering.
    height, width : int
        Frame size in pixels.

    Returns
    -------
    CellField
        Label, instance, height and nucleolus images of shape ``(height, width)`` and per-cell attributes.
    """
    px = params.pixel_size_um
    centres, radii = _place_seeds(rng, params, height, width)
    n = centres.shape[0]
    mitotic = rng.random(n) < params.mitotic_fraction
    radii = np.where(mitotic, radii * 0.6, radii)
    elongation = np.where(mitotic, 1.0, rng.uniform(1.0, 1.6, n))
    angle = rng.uniform(0.0, np.pi, n)
    lobes = np.where(mitotic, 0.0, rng.uniform(0.2, 0.45, n))

    # Far from every cell ρ stays at a large finite value (not inf, so that differences stay defined).
    best = np.full((height, width), _FAR, dtype=np.float32)  # smallest ρ over cells
    second = np.full((height, width), _FAR, dtype=np.float32)  # runner-up: its gap to `best` marks junctions
    instances = np.zeros((height, width), dtype=np.uint16)
    tables = []
    for i in range(n):
        table = _outline_table(rng, float(lobes[i]))
        tables.append(table)
        reach = radii[i] * float(table.max())
        a, b = reach * elongation[i], reach
        ca, sa = np.cos(angle[i]), np.sin(angle[i])
        box = _box(centres[i, 0], centres[i, 1], np.hypot(a * sa, b * ca), np.hypot(a * ca, b * sa), height, width)
        if box is None:
            continue
        u, v = _frame_coordinates(box, centres[i, 0], centres[i, 1], angle[i], elongation[i])
        index = ((np.arctan2(v, u) + np.float32(np.pi)) * np.float32(_OUTLINE_SAMPLES / (2 * np.pi))).astype(np.int32)
        rho = np.hypot(u, v) / (np.float32(radii[i]) * table[index & (_OUTLINE_SAMPLES - 1)])
        b1, b2, ins = best[box], second[box], instances[box]
        wins = rho < b1
        np.copyto(b2, np.where(wins, b1, np.minimum(b2, rho)))
        np.copyto(b1, rho, where=wins)
        ins[wins & (rho < 1.0)] = i + 1
    cell = instances > 0

    # Height profile of each cell; the junction dip is where the runner-up cell is nearly as close as the owner.
    # (In place: every full-frame temporary costs fresh pages.)
    rho = np.minimum(best, np.float32(1.0))
    gap = np.subtract(second, best, out=second)  # small near a junction between two cells
    junction = gap * np.float32(0.15 / 0.12)
    np.clip(junction, 0.0, np.float32(0.15), out=junction)
    junction += np.float32(0.85)
    height_map = np.multiply(rho, rho)
    np.subtract(np.float32(1.0), height_map, out=height_map)
    height_map *= np.float32(1 - LAMELLA_HEIGHT)
    height_map += np.float32(LAMELLA_HEIGHT)
    height_map *= junction
    height_map[~cell] = 0.0
    if mitotic.any():  # rounded cells are tall domes; they are few, so only their pixels are recomputed
        where = np.concatenate([[False], mitotic])[instances]
        r = rho[where]
        height_map[where] = MITOTIC_HEIGHT * (np.sqrt(np.maximum(1 - r * r, 0.0)) + np.float32(0.15))

    labels = np.where(cell, np.uint8(2), np.uint8(0))
    nucleoli = np.zeros((height, width), dtype=bool)
    # Interior of each cell: about a micrometre (and at least a pixel) from any edge, measured in ρ units.
    margin_px = max(1.0 / px, 1.5)
    for i in range(n):
        _draw_nucleus(rng, i, centres[i], radii[i], angle[i], bool(mitotic[i]), margin_px, px,
                      best, gap, instances, labels, nucleoli)
    return CellField(labels, instances, height_map.astype(np.float32), nucleoli, mitotic, radii)


def _draw_nucleus(
    rng: np.random.Generator, i: int, centre: NDArray[np.float64], radius: float, cell_angle: float,
    mitotic: bool, margin_px: float, px: float, best: NDArray[np.float32], gap: NDArray[np.float32],
    instances: NDArray[np.uint16], labels: NDArray[np.uint8], nucleoli: NDArray[np.bool_],
) -> None:
    """Draw cell ``i``'s nucleus (and nucleoli) into ``labels`` and ``nucleoli`` in place."""
    height, width = labels.shape
    if mitotic:  # condensed chromosomes: a metaphase plate seen from above
        semi_a, semi_b = rng.uniform(4.0, 5.5) / px, rng.uniform(1.5, 2.2) / px
        offset, n_angle = np.zeros(2), rng.uniform(0.0, np.pi)
    else:
        semi_a = np.clip(0.45 * radius * np.exp(rng.normal(0.0, 0.1)), 5.0 / px, 7.5 / px)
        semi_b = semi_a * rng.uniform(0.65, 0.9)
        # HeLa nuclei sit off-centre, a little towards one end of the cell.
        heading = rng.uniform(0.0, 2 * np.pi)
        offset = rng.uniform(0.0, 0.22) * radius * np.array([np.sin(heading), np.cos(heading)])
        n_angle = cell_angle + rng.normal(0.0, 0.35)
    cy, cx = centre + offset
    box = _box(cy, cx, semi_a + 1, semi_a + 1, height, width)
    if box is None:
        return
    u, v = _frame_coordinates(box, cy, cx, n_angle, 1.0)
    ellipse = (u / np.float32(semi_a)) ** 2 + (v / np.float32(semi_b)) ** 2
    delta = np.float32(margin_px / radius)
    interior = (instances[box] == i + 1) & (best[box] < 1 - delta) & (gap[box] > 2 * delta)
    scale = 1.0
    for _ in range(5):  # shrink a nucleus that would poke out of its cell (crowded colonies squeeze nuclei)
        nucleus = ellipse < scale * scale
        if not np.any(nucleus & ~interior):
            break
        scale *= 0.85
    nucleus &= interior
    labels[box][nucleus] = 1
    if mitotic or not nucleus.any():
        return
    for _ in range(int(rng.integers(1, 4))):
        r_nl = rng.uniform(0.7, 1.4) / px
        t, s = rng.uniform(0.0, 2 * np.pi), np.sqrt(rng.uniform(0.0, 0.3))
        du, dv = s * semi_a * scale * np.cos(t), s * semi_b * scale * np.sin(t)
        nucleoli[box] |= nucleus & ((u - np.float32(du)) ** 2 + (v - np.float32(dv)) ** 2 < np.float32(r_nl * r_nl))
