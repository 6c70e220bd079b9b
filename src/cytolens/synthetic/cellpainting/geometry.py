"""Drawing primitives of the BBBC021-layout simulator: cells' outlines and territories, filled ellipses, point
splats, microtubules grown as worm-like chains, and stress fibres (used by
:mod:`cytolens.synthetic.cellpainting.cells`).

All coordinates are in pixels, ``(y, x)``; a cell's outline is ``R(φ) = r · table(φ)`` in a frame rotated by its
angle and stretched by its elongation, and ``ρ`` is a point's distance from the centre in units of ``R(φ)``
(1 on the outline).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from cytolens.synthetic.brightfield.cells import _OUTLINE_SAMPLES

if TYPE_CHECKING:
    from cytolens.synthetic.cellpainting.phenotypes import Phenotype

_FAR = np.float32(1e3)


class Cells:
    """Struct of arrays for the cells of a field (geometry and phenotype)."""

    def __init__(self, n: int) -> None:
        self.cy, self.cx, self.radius = np.zeros(n), np.zeros(n), np.zeros(n)
        self.elongation, self.angle = np.ones(n), np.zeros(n)
        self.tables = np.ones((n, _OUTLINE_SAMPLES), dtype=np.float32)
        self.kind = np.zeros(n, dtype=int)
        self.strength = np.zeros(n)
        self.phenotypes: list[Phenotype] = []

    def rho(self, index: NDArray[np.intp], y: NDArray[np.float64], x: NDArray[np.float64]) -> NDArray[np.float64]:
        """Normalised distance of points ``(y, x)`` from the centre of cells ``index`` (1 on the outline)."""
        dy, dx = y - self.cy[index], x - self.cx[index]
        c, s = np.cos(self.angle[index]), np.sin(self.angle[index])
        u = (dx * c + dy * s) / self.elongation[index]
        v = dy * c - dx * s
        k = ((np.arctan2(v, u) + np.pi) * (_OUTLINE_SAMPLES / (2 * np.pi))).astype(np.int64) & (_OUTLINE_SAMPLES - 1)
        return np.hypot(u, v) / (self.radius[index] * self.tables[index, k])


def place(rng: np.random.Generator, radii: NDArray[np.float64], n_target: int, height: int, width: int,
          compactness: float) -> tuple[NDArray[np.float64], NDArray[np.intp]]:
    """Clustered seeds with a soft hard-core; returns centres (k, 2) and which candidates were kept."""
    r_mean = float(np.median(radii))
    margin = 1.2 * r_mean
    low, high = np.array([-margin, -margin]), np.array([height + margin, width + margin])
    n = radii.size
    cluster_size = 5.0 + 5.0 * compactness
    isolated = int(round(n * 0.2 * (1 - compactness)))
    parents = rng.uniform(low, high, (max(1, int(np.ceil((n - isolated) / cluster_size))), 2))
    owner = rng.integers(0, parents.shape[0], n - isolated)
    spread = r_mean * (2.0 - 1.0 * compactness)
    points = np.concatenate([parents[owner] + rng.normal(0.0, spread, (n - isolated, 2)),
                             rng.uniform(low, high, (isolated, 2))])
    order = rng.permutation(n)
    points, hard_core = points[order], 0.8 - 0.08 * compactness
    kept: list[int] = []
    for i in range(n):
        if len(kept) >= n_target:
            break
        if kept:
            idx = np.asarray(kept)
            gap = np.hypot(*(points[idx] - points[i]).T) - hard_core * (radii[order[idx]] + radii[order[i]])
            if gap.min() < 0:
                continue
        kept.append(i)
    kept_arr = np.asarray(kept, dtype=np.intp)
    return points[kept_arr], order[kept_arr]


def rho_box(cells: Cells, i: int, y0: int, y1: int, x0: int, x1: int) -> NDArray[np.float32]:
    """``ρ`` of cell ``i`` over the box ``[y0, y1) × [x0, x1)`` in float32 (the bulk of a field's geometry)."""
    f32 = np.float32
    dy = np.arange(y0, y1, dtype=f32)[:, None] - f32(cells.cy[i])
    dx = np.arange(x0, x1, dtype=f32)[None, :] - f32(cells.cx[i])
    c, s = f32(np.cos(cells.angle[i])), f32(np.sin(cells.angle[i]))
    u = (dx * c + dy * s) / f32(cells.elongation[i])
    v = dy * c - dx * s
    k = ((np.arctan2(v, u) + f32(np.pi)) * f32(_OUTLINE_SAMPLES / (2 * np.pi))).astype(np.int32)
    k &= _OUTLINE_SAMPLES - 1
    return np.hypot(u, v) / (f32(cells.radius[i]) * cells.tables[i][k])


def territories(cells: Cells, height: int, width: int) -> tuple[NDArray[np.uint16], NDArray[np.float32],
                                                                  NDArray[np.float32]]:
    """Instance image, the owner's ρ and the gap to the runner-up's ρ (small at junctions)."""
    best = np.full((height, width), _FAR, dtype=np.float32)
    second = np.full((height, width), _FAR, dtype=np.float32)
    instances = np.zeros((height, width), dtype=np.uint16)
    for i in range(cells.cy.size):
        reach = cells.radius[i] * float(cells.tables[i].max()) * cells.elongation[i] + 2
        y0, y1 = max(0, int(cells.cy[i] - reach)), min(height, int(cells.cy[i] + reach) + 2)
        x0, x1 = max(0, int(cells.cx[i] - reach)), min(width, int(cells.cx[i] + reach) + 2)
        if y0 >= y1 or x0 >= x1:
            continue
        rho = rho_box(cells, i, y0, y1, x0, x1)
        b1, b2, ins = best[y0:y1, x0:x1], second[y0:y1, x0:x1], instances[y0:y1, x0:x1]
        wins = rho < b1
        np.copyto(b2, np.where(wins, b1, np.minimum(b2, rho)))
        np.copyto(b1, rho, where=wins)
        ins[wins & (rho < 1.0)] = i + 1
    return instances, best, second - best


def ellipses(target: NDArray[np.float32], owner: NDArray[np.uint16] | None, instances: NDArray[np.uint16],
             items: list[tuple], grain: NDArray[np.float32]) -> None:
    """Add filled ellipses ``(cell, cy, cx, a, b, angle, irregularity, level, grain, table)`` to ``target`` in place
    (``table``: an outline lookup table that makes the ellipse irregular, or None).

    Pixels stay inside their cell's territory; ``owner`` (if given) records which cell's DNA each pixel holds.
    """
    height, width = target.shape
    for cell, cy, cx, a, b, angle, irregularity, level, grain_amp, table in items:
        reach = a * (1 + irregularity) + 1.5
        y0, y1 = max(0, int(cy - reach)), min(height, int(cy + reach) + 2)
        x0, x1 = max(0, int(cx - reach)), min(width, int(cx + reach) + 2)
        if y0 >= y1 or x0 >= x1:
            continue
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
        c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
        u, v = (dx * c + dy * s) / np.float32(a), (dy * c - dx * s) / np.float32(b)
        r = np.hypot(u, v)
        if table is not None:
            k = ((np.arctan2(v, u) + np.pi) * (_OUTLINE_SAMPLES / (2 * np.pi))).astype(np.int32)
            k &= _OUTLINE_SAMPLES - 1
            r = r / table[k]
        inside = (r < 1) & (instances[y0:y1, x0:x1] == cell + 1)
        if not inside.any():
            continue
        value = np.float32(level) * (0.8 + 0.2 * np.sqrt(np.clip(1 - r * r, 0, 1)))
        value *= 1 + np.float32(grain_amp) * grain[y0:y1, x0:x1]
        target[y0:y1, x0:x1] += np.where(inside, np.maximum(value, 0), 0)
        if owner is not None:
            owner[y0:y1, x0:x1][inside] = cell + 1


def splat(points: list[NDArray[np.float64]], height: int, width: int) -> NDArray[np.float32]:
    """Sum points ``(y, x, weight)`` (arrays of shape (3, n)) into an image (nearest pixel)."""
    if not points:
        return np.zeros((height, width), dtype=np.float32)
    y, x, w = np.concatenate(points, axis=1)
    yi, xi = np.rint(y).astype(np.int64), np.rint(x).astype(np.int64)
    keep = (yi >= 0) & (yi < height) & (xi >= 0) & (xi < width)
    flat = yi[keep] * width + xi[keep]
    return np.bincount(flat, weights=w[keep], minlength=height * width).reshape(height, width).astype(np.float32)


def grow_tracks(rng: np.random.Generator, cells: Cells, instances: NDArray[np.uint16], cell: NDArray[np.intp],
                start: NDArray[np.float64], heading: NDArray[np.float64], weight: NDArray[np.float64],
                curl: NDArray[np.float64], follow: NDArray[np.bool_], max_steps: NDArray[np.int64],
                persistence: float = 45.0) -> NDArray[np.float64]:
    """Grow microtubules in lockstep (2 px per step, drawn every pixel) and return their points ``(3, n)``: y, x,
    weight. ``max_steps`` is each track's maximum length in pixels.

    A track stops at the cortex (``ρ`` ≥ 0.93 or a neighbour's territory) unless it ``follow``-s the edge, in which
    case it turns; ``curl`` bends it steadily (rad/px), as bundled, taxol-stabilised microtubules do.
    """
    height, width = instances.shape
    pos, heading = start.copy(), heading.copy()
    alive = np.ones(cell.size, dtype=bool)
    out = []
    step_length = 2.0  # px; each step also draws its midpoint, so points stay 1 px apart
    sigma = np.sqrt(step_length / persistence)
    for step in range(int(max_steps.max(initial=0) / step_length) + 1):
        alive &= step * step_length < max_steps  # max_steps is a length in px
        if not alive.any():
            break
        idx = np.flatnonzero(alive)
        heading[idx] += step_length * curl[idx] + rng.normal(0.0, sigma, idx.size)
        nxt = pos[idx] + step_length * np.stack([np.sin(heading[idx]), np.cos(heading[idx])], axis=1)
        yi, xi = np.rint(nxt[:, 0]).astype(np.int64), np.rint(nxt[:, 1]).astype(np.int64)
        inside = (yi >= 0) & (yi < height) & (xi >= 0) & (xi < width)
        own = np.ones(idx.size, dtype=bool)
        own[inside] = instances[yi[inside], xi[inside]] == cell[idx[inside]] + 1
        ok = own & (cells.rho(cell[idx], nxt[:, 0], nxt[:, 1]) < 0.93)
        blocked = idx[~ok]
        turning = blocked[follow[blocked]]
        heading[turning] += np.where(curl[turning] >= 0, 0.45, -0.45)
        alive[blocked[~follow[blocked]]] = False
        moved = idx[ok]
        middle = 0.5 * (pos[moved] + nxt[ok])
        pos[moved] = nxt[ok]
        out.append(np.stack([middle[:, 0], middle[:, 1], weight[moved]]))
        out.append(np.stack([pos[moved, 0], pos[moved, 1], weight[moved]]))
    return np.concatenate(out, axis=1) if out else np.zeros((3, 0))


def fibre_points(cells: Cells, cell: NDArray[np.intp], angle: NDArray[np.float64], offset: NDArray[np.float64],
                 level: NDArray[np.float64], spacing: float = 0.8) -> NDArray[np.float64]:
    """Points ``(3, n)`` of straight stress fibres through cells' centres (shifted by ``offset`` across), kept
    where they run inside the cell (``ρ`` < 0.88)."""
    reach = 1.4 * cells.radius[cell] * cells.elongation[cell]
    t = np.arange(-float(reach.max(initial=0.0)), float(reach.max(initial=0.0)), spacing)[None, :]
    sin, cos = np.sin(angle)[:, None], np.cos(angle)[:, None]
    y = cells.cy[cell][:, None] + t * sin + offset[:, None] * cos
    x = cells.cx[cell][:, None] + t * cos - offset[:, None] * sin
    index = np.broadcast_to(cell[:, None], y.shape)
    keep = (np.abs(t) < reach[:, None]) & (cells.rho(index, y, x) < 0.88)
    return np.stack([y[keep], x[keep], np.broadcast_to(level[:, None], y.shape)[keep]])


def disc_points(cy: float, cx: float, radius: float, level: float) -> NDArray[np.float64]:
    """Points of a small filled disc (a blob), each carrying ``level``."""
    r = int(np.ceil(radius))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    keep = yy * yy + xx * xx <= radius * radius
    return np.stack([yy[keep] + cy, xx[keep] + cx, np.full(int(keep.sum()), level)]).astype(np.float64)
