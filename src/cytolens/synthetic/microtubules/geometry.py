"""Geometry of a simulated interphase cell and its microtubule network, and their rasterisation.

Everything here is in *reference pixels*: the coordinates of a 512 × 512 frame in which one pixel is
0.1 µm (a 6.45 µm CCD pixel behind a 63× objective, as in Shpilman et al. 2017). The imaging module scales
the result to the requested output size, so a cell rendered at 64 px is the same cell, only smaller.

The cell is star-convex around its centre: ``R(φ) = r0 · (1 + Σ_k a_k cos(kφ + p_k))`` with a few low Fourier
modes (k = 2..6) gives the smooth, lobed outline of a spread CV-1 cell. An elliptical nucleus sits off the cell
centre and the centrosome (MTOC) sits on the nucleus' side that faces the cell centre.

Microtubules are worm-like chains grown in lockstep as arrays of shape ``(n_tracks,)``: at every step of
length ``ds`` the heading turns by a Gaussian angle of variance ``ds / Lp`` (``Lp`` the persistence length)
plus, near the periphery, a steady curvature ``κ`` (paclitaxel-induced curling). A microtubule that reaches the
cortex either stops there or bends to run along the edge, as real microtubules do. A *track* can carry several
microtubules (a bundle); the renderer draws it as a brighter, slightly wider cable.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

#: Physical size of one reference pixel (µm): the 512-px frame is 51.2 µm wide.
UM_PER_REF_PX = 0.1
#: Width of the reference frame in reference pixels.
REF_FRAME = 512.0
#: Step of the lockstep growth (reference px). 0.5 µm is far below the persistence length, so the chain is
#: smooth once the points between steps are interpolated.
GROWTH_STEP = 5.0
#: Microtubules are kept this fraction of R(φ) inside the outline so that they stay under the membrane.
EDGE_MARGIN = 0.955
_MODES = np.arange(2, 7)
#: Spacing of the points a line is drawn with. With the bilinear splat and a PSF of σ ≥ 0.5 px the ripple along
#: a line is below 0.1 %, and fewer points keep the renderer fast.
POINT_SPACING_PX = 0.8
_TABLE = 2048  # angular samples of the outline lookup table (a power of two)


@dataclass(frozen=True)
class CellGeometry:
    """Outline, nucleus and centrosome of one cell, in reference pixels (x to the right, y down)."""

    center_x: float
    center_y: float
    radius: float
    mode_amplitudes: NDArray[np.float64]
    mode_phases: NDArray[np.float64]
    nucleus_x: float
    nucleus_y: float
    nucleus_a: float
    nucleus_b: float
    nucleus_angle: float
    mtoc_x: float
    mtoc_y: float

    def outline_radius(self, phi: NDArray[np.floating]) -> NDArray[np.float64]:
        """Distance from the cell centre to the membrane in direction ``phi`` (radians)."""
        phase = np.multiply.outer(phi, _MODES) + self.mode_phases
        return self.radius * (1.0 + np.cos(phase) @ self.mode_amplitudes)

    def outline_slope(self, phi: NDArray[np.floating]) -> NDArray[np.float64]:
        """dR/dφ, needed for the membrane's tangent direction."""
        phase = np.multiply.outer(phi, _MODES) + self.mode_phases
        return -self.radius * (np.sin(phase) @ (self.mode_amplitudes * _MODES))

    def nucleus_radius2(self, x: NDArray[np.floating], y: NDArray[np.floating]) -> NDArray[np.float64]:
        """Squared normalised elliptical radius of points with respect to the nucleus (< 1 inside)."""
        c, s = np.cos(self.nucleus_angle), np.sin(self.nucleus_angle)
        dx, dy = x - self.nucleus_x, y - self.nucleus_y
        u = (c * dx + s * dy) / self.nucleus_a
        v = (-s * dx + c * dy) / self.nucleus_b
        return u * u + v * v


def draw_cell_geometry(rng: np.random.Generator, *, frame_cut: bool) -> tuple[CellGeometry, float, float]:
    """Draw a cell outline, nucleus and MTOC.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    frame_cut : bool
        Shift the cell so that part of it falls outside the frame.

    Returns
    -------
    geometry : CellGeometry
        The cell, in reference pixels.
    shift_x, shift_y : float
        Displacement of the cell centre from the frame centre (reference px).
    """
    radius = rng.uniform(150.0, 195.0)
    # Low modes dominate: a spread fibroblast-like cell has a few broad lobes, not many small ones.
    amplitudes = np.abs(rng.normal(0.0, 0.12, size=_MODES.size)) * (2.0 / _MODES) ** 0.9
    phases = rng.uniform(0.0, 2.0 * np.pi, size=_MODES.size)
    probe = np.linspace(0.0, 2.0 * np.pi, 256, endpoint=False)
    profile = 1.0 + np.cos(np.multiply.outer(probe, _MODES) + phases) @ amplitudes
    if profile.min() < 0.6:  # keep the outline star-convex with no deep notches
        amplitudes *= 0.4 / (1.0 - profile.min())
        profile = 1.0 + np.cos(np.multiply.outer(probe, _MODES) + phases) @ amplitudes
    # The whole cell must fit in the frame (with a small border) unless it is meant to be cut.
    radius = min(radius, 0.46 * REF_FRAME / profile.max())

    if frame_cut:
        direction = rng.uniform(0.0, 2.0 * np.pi)
        reach = radius * np.interp(direction, probe, profile, period=2.0 * np.pi)
        # Push the membrane 15-45 % of the cell radius past the frame border.
        distance = 0.5 * REF_FRAME - reach + rng.uniform(0.15, 0.45) * radius
        shift_x, shift_y = distance * np.cos(direction), distance * np.sin(direction)
    else:
        room = max(0.0, 0.46 * REF_FRAME - radius * profile.max())
        shift_x, shift_y = rng.uniform(-room, room, size=2) * 0.7
    center_x = 0.5 * REF_FRAME + shift_x
    center_y = 0.5 * REF_FRAME + shift_y

    nucleus_a = rng.uniform(0.25, 0.33) * radius
    nucleus_b = nucleus_a * rng.uniform(0.68, 0.92)
    nucleus_angle = rng.uniform(0.0, np.pi)
    offset_angle = rng.uniform(0.0, 2.0 * np.pi)
    offset = rng.uniform(0.05, 0.25) * radius
    boundary = np.linspace(0.0, 2.0 * np.pi, 48, endpoint=False)
    c, s = np.cos(nucleus_angle), np.sin(nucleus_angle)
    ellipse_x = nucleus_a * np.cos(boundary) * c - nucleus_b * np.sin(boundary) * s
    ellipse_y = nucleus_a * np.cos(boundary) * s + nucleus_b * np.sin(boundary) * c
    for _ in range(8):  # shrink the offset until the nucleus sits well inside the cytoplasm
        nucleus_x = center_x + offset * np.cos(offset_angle)
        nucleus_y = center_y + offset * np.sin(offset_angle)
        bx, by = nucleus_x + ellipse_x - center_x, nucleus_y + ellipse_y - center_y
        reach_out = radius * (1.0 + np.cos(np.multiply.outer(np.arctan2(by, bx), _MODES) + phases) @ amplitudes)
        if np.all(np.hypot(bx, by) < 0.8 * reach_out):
            break
        offset *= 0.6

    # The MTOC lies against the nucleus, usually on the side facing the bulk of the cytoplasm.
    mtoc_angle = offset_angle + np.pi + rng.normal(0.0, 0.7)
    du, dv = np.cos(mtoc_angle - nucleus_angle), np.sin(mtoc_angle - nucleus_angle)
    # Distance from the nucleus centre to its boundary along mtoc_angle, plus a small gap.
    edge = 1.0 / np.sqrt((du / nucleus_a) ** 2 + (dv / nucleus_b) ** 2)
    reach = edge + rng.uniform(4.0, 12.0)
    mtoc_x = nucleus_x + reach * np.cos(mtoc_angle)
    mtoc_y = nucleus_y + reach * np.sin(mtoc_angle)
    geometry = CellGeometry(
        center_x, center_y, radius, amplitudes, phases, nucleus_x, nucleus_y,
        nucleus_a, nucleus_b, nucleus_angle, mtoc_x, mtoc_y,
    )
    return geometry, float(shift_x), float(shift_y)


@dataclass(frozen=True)
class NetworkParameters:
    """Per-track growth parameters of one cell's microtubule network (arrays of shape ``(n_tracks,)``)."""

    start_x: NDArray[np.float64]
    start_y: NDArray[np.float64]
    heading: NDArray[np.float64]
    length: NDArray[np.float64]
    persistence: NDArray[np.float64]
    curvature: NDArray[np.float64]
    stops_at_edge: NDArray[np.bool_]
    edge_run: NDArray[np.float64]


def grow_network(
    geometry: CellGeometry, network: NetworkParameters, rng: np.random.Generator
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Grow all tracks in lockstep as worm-like chains confined by the cell outline.

    Parameters
    ----------
    geometry : CellGeometry
        The cell.
    network : NetworkParameters
        Start, heading, contour length, persistence length, peripheral curvature and edge behaviour (stop at
        the cortex, or slide along it for at most ``edge_run`` reference px) per track.
    rng : numpy.random.Generator
        Source of the heading noise.

    Returns
    -------
    nodes : (n_steps + 1, n_tracks, 2) float64 ndarray
        Node positions (x, y) in reference pixels; only the first ``n_nodes[i]`` rows of track ``i`` are valid.
    n_nodes : (n_tracks,) int64 ndarray
        Number of valid nodes per track (at least 1).
    """
    n_tracks = network.start_x.size
    n_steps = int(np.ceil(network.length.max() / GROWTH_STEP)) if n_tracks else 0
    nodes = np.zeros((n_steps + 1, n_tracks, 2))  # zeros, not empty: unused slots are shifted below too
    nodes[0, :, 0], nodes[0, :, 1] = network.start_x - geometry.center_x, network.start_y - geometry.center_y
    n_nodes = np.ones(n_tracks, dtype=np.int64)
    steps_wanted = np.maximum(1, np.round(network.length / GROWTH_STEP)).astype(np.int64)
    edge_steps_left = np.maximum(1, np.round(network.edge_run / GROWTH_STEP)).astype(np.int64)
    noise = rng.standard_normal((n_steps, n_tracks)) * np.sqrt(GROWTH_STEP / network.persistence)
    curl_per_step = network.curvature * GROWTH_STEP
    cx, cy = geometry.center_x, geometry.center_y
    # The outline is evaluated hundreds of times per cell: a fine lookup table is exact enough and much cheaper.
    to_bin = _TABLE / (2.0 * np.pi)
    table_phi = np.arange(_TABLE) / to_bin - np.pi
    limit_table = EDGE_MARGIN * geometry.outline_radius(table_phi)
    slope = geometry.outline_slope(table_phi)
    # Direction of the membrane's tangent R'(φ)·e_r + R(φ)·e_φ, counter-clockwise.
    tangent_table = table_phi + np.arctan2(limit_table / EDGE_MARGIN, slope)

    def table_bin(phi: NDArray[np.float64]) -> NDArray[np.intp]:
        return np.rint((phi + np.pi) * to_bin).astype(np.intp) & (_TABLE - 1)

    # Only growing tracks are updated (positions relative to the cell centre): the arrays shrink as they finish.
    idx = np.arange(n_tracks)
    x, y = network.start_x - cx, network.start_y - cy
    heading = network.heading.copy()
    rel = np.hypot(x, y) / limit_table[table_bin(np.arctan2(y, x))] * EDGE_MARGIN
    for step in range(n_steps):
        # Paclitaxel-stabilised microtubules curl where they run out of room, i.e. in the thin periphery.
        peripheral = np.clip((rel - 0.45) * (1.0 / 0.35), 0.0, 1.0)
        heading += noise[step, idx] + curl_per_step[idx] * peripheral
        nx = x + GROWTH_STEP * np.cos(heading)
        ny = y + GROWTH_STEP * np.sin(heading)
        r = np.hypot(nx, ny)
        limit = limit_table[table_bin(np.arctan2(ny, nx))]
        outside = np.flatnonzero(r > limit)
        if outside.size:
            tracks = idx[outside]
            stops = network.stops_at_edge[tracks]
            slide = outside[~stops]
            # Bend along the membrane, keeping the sense of travel.
            tangent = tangent_table[table_bin(np.arctan2(ny[slide], nx[slide]))]
            tangent += np.where(np.cos(heading[slide] - tangent) < 0.0, np.pi, 0.0)
            heading[slide] = tangent
            nx[slide] = x[slide] + GROWTH_STEP * np.cos(tangent)
            ny[slide] = y[slide] + GROWTH_STEP * np.sin(tangent)
            # Clamp every outside point (sliding or stopping) just under the membrane.
            po = np.arctan2(ny[outside], nx[outside])
            lo = limit_table[table_bin(po)]
            ro = np.minimum(np.hypot(nx[outside], ny[outside]), lo)
            nx[outside] = ro * np.cos(po)
            ny[outside] = ro * np.sin(po)
            r[outside], limit[outside] = ro, lo
            # A microtubule pushed against the cortex for long enough catastrophes (dynamic ones at once).
            edge_steps_left[tracks] -= 1
            ending = tracks[stops | (edge_steps_left[tracks] <= 0)]
            steps_wanted[ending] = np.minimum(steps_wanted[ending], step + 1)
        nodes[step + 1, idx, 0] = nx
        nodes[step + 1, idx, 1] = ny
        n_nodes[idx] += 1
        rel = r / limit * EDGE_MARGIN
        x, y = nx, ny
        growing = n_nodes[idx] <= steps_wanted[idx]
        if not growing.all():
            idx, x, y, heading, rel = idx[growing], x[growing], y[growing], heading[growing], rel[growing]
            if idx.size == 0:
                break
    nodes = nodes[: step + 2] if n_steps else nodes
    nodes[..., 0] += cx
    nodes[..., 1] += cy
    return nodes, n_nodes


@functools.lru_cache(maxsize=8)
def _interpolation_matrix(size: int, low: int) -> NDArray[np.float32]:
    """(size, low) matrix of linear interpolation weights between pixel-centre aligned grids."""
    pos = np.clip((np.arange(size) + 0.5) * low / size - 0.5, 0.0, low - 1.0)
    left = np.minimum(np.floor(pos).astype(np.intp), low - 2) if low > 1 else np.zeros(size, np.intp)
    frac = pos - left
    matrix = np.zeros((size, low), dtype=np.float32)
    matrix[np.arange(size), left] = 1.0 - frac
    if low > 1:
        matrix[np.arange(size), left + 1] += frac
    return matrix


def free_tubulin_haze(geometry: CellGeometry, size: int, level: float) -> NDArray[np.float32]:
    """Diffuse cytoplasmic tubulin: thick around the nucleus, thin at the edge, excluded from the nucleus."""
    # A smooth field needs no full-resolution evaluation: compute it on a coarse grid and interpolate.
    low = min(size, max(32, size // 8))
    coords = (np.arange(low) + 0.5) * (REF_FRAME / low)
    x, y = coords[None, :], coords[:, None]
    dx, dy = x - geometry.center_x, y - geometry.center_y
    rel = np.hypot(dx, dy) / geometry.outline_radius(np.arctan2(dy, dx))
    inside = np.clip((1.0 - rel) / 0.05, 0.0, 1.0)
    thickness = 0.35 + 0.65 * np.clip(1.0 - rel**2, 0.0, 1.0)
    nucleus = np.clip((1.0 - geometry.nucleus_radius2(x, y)) / 0.25, 0.0, 1.0)
    haze = (level * inside * thickness * (1.0 - 0.6 * nucleus)).astype(np.float32)
    matrix = _interpolation_matrix(size, low)
    return matrix @ haze @ matrix.T


def render_network(
    geometry: CellGeometry, network: NetworkParameters, sizes: NDArray[np.int64],
    nodes: NDArray[np.float64], n_nodes: NDArray[np.int64], rng: np.random.Generator, size: int,
    line_density: float,
) -> NDArray[np.float32]:
    """Draw the grown tracks into a (size, size) float32 image (before the PSF).

    Every track is sampled every ``POINT_SPACING_PX`` and the points are added with bilinear weights in one
    ``bincount``. ``line_density`` is the integral across one microtubule (intensity · px per px of length)
    at size 512; a track of ``m`` microtubules is ``m`` times brighter (per-microtubule labelling varies).
    """
    scale = size / REF_FRAME
    n_tracks = sizes.size
    valid = np.arange(nodes.shape[0] - 1)[:, None] < (n_nodes - 1)[None, :]
    seg_start = nodes[:-1][valid] * scale  # (n_segments, 2), output pixels
    seg_delta = nodes[1:][valid] * scale - seg_start
    track = np.broadcast_to(np.arange(n_tracks), valid.shape)[valid]
    # Per-microtubule antibody load varies; a track's brightness is the sum over its microtubules.
    brightness = np.exp(rng.normal(0.0, 0.3, n_tracks)) * sizes
    mid_x = (seg_start[:, 0] + 0.5 * seg_delta[:, 0]) / scale
    mid_y = (seg_start[:, 1] + 0.5 * seg_delta[:, 1]) / scale
    # Microtubules over the nucleus run above the focal plane: dimmer.
    over_nucleus = np.clip((1.0 - geometry.nucleus_radius2(mid_x, mid_y)) / 0.3, 0.0, 1.0)
    length = np.hypot(seg_delta[:, 0], seg_delta[:, 1])
    n_sub = max(1, int(np.ceil(GROWTH_STEP * scale / POINT_SPACING_PX)))
    # Weight per point = line density × segment length / points, so clamped (short) segments are not brighter.
    seg_weight = brightness[track] * (1.0 - 0.45 * over_nucleus) * (line_density * scale) * length / n_sub
    unit = seg_delta / np.maximum(length, 1e-9)[:, None]

    # A bundle of m microtubules is drawn as up to 3 parallel copies, so thick cables are also a bit wider.
    copies = np.minimum(sizes, 3)[track]
    spread = 0.45 * np.sqrt(np.maximum(sizes - 1, 0))[track] * max(scale, 0.25)
    which = np.concatenate([np.flatnonzero(copies > copy) for copy in range(3)])
    rank = np.repeat(np.arange(3), [np.count_nonzero(copies > copy) for copy in range(3)])
    offset = (rank - (copies[which] - 1) / 2.0) * spread[which]
    # Pixel centres are at integer + 0.5; the +1 moves into a frame padded by one pixel on every side.
    start_x = seg_start[which, 0] - unit[which, 1] * offset + 0.5
    start_y = seg_start[which, 1] + unit[which, 0] * offset + 0.5
    t = ((np.arange(n_sub) + 0.5) / n_sub).astype(np.float32)
    px = (start_x.astype(np.float32)[:, None] + seg_delta[which, 0].astype(np.float32)[:, None] * t).ravel()
    py = (start_y.astype(np.float32)[:, None] + seg_delta[which, 1].astype(np.float32)[:, None] * t).ravel()
    weight = np.repeat((seg_weight[which] / copies[which]).astype(np.float32), n_sub)
    return _bilinear_splat(px, py, weight, size)


def _bilinear_splat(
    px: NDArray[np.float32], py: NDArray[np.float32], weight: NDArray[np.float32], size: int
) -> NDArray[np.float32]:
    """Add point weights bilinearly into a (size, size) image; coordinates are in a 1-px padded frame."""
    width = size + 2
    # Clipping sends every point outside the frame into the padding ring, which is cut off at the end.
    np.clip(px, 0.0, size + 1.0, out=px)
    np.clip(py, 0.0, size + 1.0, out=py)
    x0 = np.minimum(px.astype(np.intp), size)  # truncation is floor for non-negative values
    y0 = np.minimum(py.astype(np.intp), size)
    fx = px - x0.astype(np.float32)
    fy = py - y0.astype(np.float32)
    # One bincount over the four corners, written into preallocated rows: allocating full-size temporaries
    # costs as much as the arithmetic here.
    index = np.empty((4, px.size), dtype=np.intp)
    np.multiply(y0, width, out=index[0])
    index[0] += x0
    np.add(index[0], 1, out=index[1])
    np.add(index[0], width, out=index[2])
    np.add(index[0], width + 1, out=index[3])
    corner = np.empty((4, px.size), dtype=np.float64)
    np.multiply(weight, fy, out=corner[2])
    np.subtract(weight, corner[2], out=corner[0])
    np.multiply(corner[0], fx, out=corner[1])
    corner[0] -= corner[1]
    np.multiply(corner[2], fx, out=corner[3])
    corner[2] -= corner[3]
    image = np.bincount(index.ravel(), corner.ravel(), minlength=width * width)
    return image.reshape(width, width)[1:-1, 1:-1].astype(np.float32)
