"""One field of MCF-7 cells in three channels (DNA, β-tubulin, F-actin), before the camera.

Geometry (all in pixels at BBBC021's scale, where a spread MCF-7 cell is about 40 px across):

* **Placement.** Cells grow in colonies: seeds come from a clustered point process with a soft hard-core, as in
  :mod:`cytolens.synthetic.brightfield.cells`; treatments that tighten junctions pack colonies more densely.
* **Territories.** Each cell has a lobed, elongated outline; a pixel belongs to the cell with the smallest
  normalised distance ``ρ`` if ``ρ < 1``, so neighbours share borders (``ρ`` is also the cell's height profile).
* **DNA.** One oval nucleus (size and brightness by cell-cycle stage), or several (multinucleate cells),
  micronuclei, irregular outlines; mitotic cells show condensed chromosomes as a metaphase plate (bipolar), a ring
  around one pole (monopolar), several plates (multipolar) or scattered chromosomes.
* **Tubulin.** Diffuse tubulin, brighter where the cell is thick, plus microtubules grown as worm-like chains from
  the centrosome beside the nucleus to the cortex (or, bundled, curling along it); mitotic spindles are asters at
  the poles; an aggresome is a bright body at the centrosome.
* **Actin.** Diffuse actin, a cortex along free edges and cell-cell junctions, stress fibres along the cell's long
  axis, and bright aggregates when the cytoskeleton collapses.

Per-cell changes come from each cell's :class:`~cytolens.synthetic.cellpainting.phenotypes.Phenotype`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from cytolens.synthetic.brightfield.cells import _outline_table
from cytolens.synthetic.cellpainting.geometry import (
    Cells, disc_points, ellipses, fibre_points, grow_tracks, place, splat, territories,
)
from cytolens.synthetic.cellpainting.phenotypes import MITOSIS_KIND, CompoundResponse, Phenotype, cell_strengths

#: Median radius (px) of a spread untreated cell, and of its nucleus.
CELL_RADIUS = 22.0
NUCLEUS_RADIUS = 10.0
#: Share of the field an untreated well covers (before neighbours compete for space).
COVERAGE = 0.3
BASE_MITOTIC = 0.025
MITOSIS_KINDS = ("", "bipolar", "monopolar", "multipolar", "scattered")
#: Signal levels in ADU (before the week's gains): nucleus, diffuse tubulin, one microtubule point, diffuse actin,
#: cortex, one stress-fibre point, an aggregate, an aggresome.
DNA_LEVEL, TUB_DIFFUSE, TUB_FILAMENT, ACT_DIFFUSE, ACT_CORTEX, ACT_FIBRE, ACT_AGGREGATE, TUB_AGGRESOME = (
    2600.0, 480.0, 650.0, 260.0, 650.0, 650.0, 2600.0, 2400.0)


@dataclass
class FieldSignal:
    """A rendered field: ``signal`` (3, H, W) float32 ADU (DNA, tubulin, actin), the true cell territories
    ``instances`` and nuclei ``nuclei`` (uint16 cell ids) and one truth row per visible cell in ``cells``."""

    signal: NDArray[np.float32]
    instances: NDArray[np.uint16]
    nuclei: NDArray[np.uint16]
    cells: pd.DataFrame


def render_field(rng: np.random.Generator, *, height: int, width: int, response: CompoundResponse | None,
                 concentration: float, density: float = 1.0, cell_scale: float = 1.0) -> FieldSignal:
    """Render one field of a well treated with ``response``'s compound at ``concentration`` (None: DMSO).

    ``density`` and ``cell_scale`` carry the week's batch effects. Returns the noise-free signal; the camera,
    illumination and stain gains are applied by :mod:`cytolens.synthetic.cellpainting.simulate`.
    """
    effect = response.effect if response is not None else {}
    strength = response.strength(concentration) if response is not None else 0.0
    mitosis = MITOSIS_KIND.get(response.moa, "bipolar") if response is not None else "bipolar"
    population = Phenotype().shifted(effect, strength)
    r_mean = CELL_RADIUS * cell_scale * population.cell_scale
    margin = 1.2 * r_mean
    area = (height + 2 * margin) * (width + 2 * margin)
    n_target = int(rng.poisson(COVERAGE * density * population.density * area / (np.pi * r_mean**2)
                               * np.exp(rng.normal(0.0, 0.12))))
    n_candidates = max(4, int(2.2 * n_target))
    strengths = cell_strengths(rng, strength, n_candidates)
    phenotypes = [Phenotype().shifted(effect, float(s)) for s in strengths]
    mitotic = rng.random(n_candidates) < np.array([BASE_MITOTIC + p.mitotic for p in phenotypes])
    # Arrested cells show their MOA's mitotic figure; the few normal mitoses are bipolar.
    kinds = np.where(mitotic, np.where(strengths > 0, MITOSIS_KINDS.index(mitosis), 1), 0)
    radii = CELL_RADIUS * cell_scale * np.array([p.cell_scale for p in phenotypes]) * np.exp(
        rng.normal(0.0, 0.13, n_candidates)) * np.where(mitotic, 0.62, 1.0)
    centres, chosen = place(rng, radii, n_target, height, width, population.compactness)
    n = chosen.size
    cells = Cells(n)
    cells.cy, cells.cx, cells.radius = centres[:, 0], centres[:, 1], radii[chosen]
    cells.kind, cells.strength = kinds[chosen], strengths[chosen]
    cells.phenotypes = [phenotypes[i] for i in chosen]
    cells.angle = rng.uniform(0.0, np.pi, n)
    for i, p in enumerate(cells.phenotypes):
        round_cell = cells.kind[i] > 0
        cells.elongation[i] = 1.0 if round_cell else max(1.0, 1.0 + rng.uniform(0.0, 0.35) + p.elongation)
        lobes = 0.03 if round_cell else max(0.02, rng.uniform(0.1, 0.28) + p.lobes)
        cells.tables[i] = _outline_table(rng, lobes)
    instances, rho, gap = territories(cells, height, width)
    grain = rng.standard_normal((height, width), dtype=np.float32)
    from scipy import ndimage as ndi

    grain = ndi.gaussian_filter(grain, 1.0, truncate=3.0)
    grain *= np.float32(1.0 / max(float(grain.std()), 1e-6))

    dna_items: list[tuple] = []
    tub_blobs: list[tuple] = []
    tub_points: list[NDArray[np.float64]] = []
    act_points: list[NDArray[np.float64]] = []
    tracks: dict[str, list] = {k: [] for k in ("cell", "start", "heading", "weight", "curl", "follow", "steps")}
    fibres: list[tuple[NDArray, ...]] = []
    tub_lookup, act_lookup, cortex_lookup = (np.zeros(n + 1, dtype=np.float32) for _ in range(3))
    n_nuclei = np.ones(n, dtype=int)

    def add_tracks(i: int, origin: tuple[float, float], count: int, weight: float, curl: float, follow: float,
                   steps: int, spread: float = 0.0) -> None:
        start = np.asarray(origin) + rng.normal(0.0, spread, (count, 2)) if spread else np.tile(origin, (count, 1))
        tracks["cell"].append(np.full(count, i))
        tracks["start"].append(start)
        tracks["heading"].append(rng.uniform(0.0, 2 * np.pi, count))
        tracks["weight"].append(np.full(count, weight))
        tracks["curl"].append(np.full(count, curl) * rng.choice([-1.0, 1.0], count))
        tracks["follow"].append(rng.random(count) < follow)
        tracks["steps"].append(np.full(count, steps))

    for i, p in enumerate(cells.phenotypes):
        cy, cx, r = cells.cy[i], cells.cx[i], cells.radius[i]
        kind = MITOSIS_KINDS[cells.kind[i]]
        loading_t, loading_a = np.exp(rng.normal(0.0, 0.2, 2))
        tub_level = p.tubulin_level * loading_t
        act_level = p.actin_level * loading_a
        mitotic_boost = 1.8 if kind else 1.0
        tub_lookup[i + 1] = TUB_DIFFUSE * p.tubulin_diffuse * tub_level * mitotic_boost
        act_lookup[i + 1] = ACT_DIFFUSE * act_level * (1.3 if kind else 1.0)
        cortex_lookup[i + 1] = ACT_CORTEX * p.cortex * act_level * (1.5 if kind else 1.0)
        dna = DNA_LEVEL * p.dna_level * np.exp(rng.normal(0.0, 0.08))
        if kind:  # condensed chromosomes and a spindle
            axis = rng.uniform(0.0, np.pi)
            bright = 2.0 * dna
            if kind == "bipolar":
                dna_items.append((i, cy, cx, 0.55 * r, 0.17 * r, axis, 0.0, bright, 0.1, None))
                poles = [(cy + 0.55 * r * np.cos(axis), cx - 0.55 * r * np.sin(axis)),
                         (cy - 0.55 * r * np.cos(axis), cx + 0.55 * r * np.sin(axis))]
            elif kind == "monopolar":
                for t in np.linspace(0.0, 2 * np.pi, int(rng.integers(8, 13)), endpoint=False):
                    ring = 0.45 * r * rng.uniform(0.85, 1.15)
                    dna_items.append((i, cy + ring * np.sin(t), cx + ring * np.cos(t), 1.9, 1.5, t, 0.0, bright,
                                      0.1, None))
                poles = [(cy, cx)]
            elif kind == "multipolar":
                count = int(rng.integers(3, 5))
                angles = axis + np.linspace(0.0, 2 * np.pi, count, endpoint=False)
                for t in angles + np.pi / count:
                    dna_items.append((i, cy + 0.2 * r * np.sin(t), cx + 0.2 * r * np.cos(t), 0.3 * r, 0.13 * r,
                                      t + np.pi / 2, 0.0, bright, 0.1, None))
                poles = [(cy + 0.55 * r * np.sin(t), cx + 0.55 * r * np.cos(t)) for t in angles]
            else:  # scattered chromosomes, no spindle
                for _ in range(int(rng.integers(10, 17))):
                    t, d = rng.uniform(0.0, 2 * np.pi), 0.5 * r * np.sqrt(rng.random())
                    dna_items.append((i, cy + d * np.sin(t), cx + d * np.cos(t), 1.8, 1.3, t, 0.0, bright,
                                      0.1, None))
                poles = []
            for pole in poles:
                add_tracks(i, pole, 14, TUB_FILAMENT * tub_level, 0.0, 0.0, int(0.5 * r))
                tub_blobs.append((i, pole[0], pole[1], 2.2, 2.2, 0.0, 0.0, 2.0 * TUB_FILAMENT * tub_level, 0.0, None))
            continue
        # Interphase: nuclei (cell-cycle stage sets size and DNA content), micronuclei, MTOC, networks.
        content = rng.choice([1.0, 1.4, 1.9], p=[0.6, 0.25, 0.15])
        a = NUCLEUS_RADIUS * cell_scale * p.nucleus_scale * content**0.25 * np.exp(rng.normal(0.0, 0.08))
        a = min(a, 0.7 * r)
        many = rng.random() < p.multinucleate
        count = int(rng.choice([2, 2, 2, 3, 4])) if many else 1
        n_nuclei[i] = count
        heading = rng.uniform(0.0, 2 * np.pi)
        offset = rng.uniform(0.0, 0.15) * r
        ny, nx = cy + offset * np.sin(heading), cx + offset * np.cos(heading)
        size = a * (0.8 if count > 1 else 1.0)
        for k in range(count):
            t = heading + 2 * np.pi * k / count
            d = 0.0 if count == 1 else 0.9 * size
            table = _outline_table(rng, p.nucleus_irregularity) if p.nucleus_irregularity > 0.02 else None
            dna_items.append((i, ny + d * np.sin(t), nx + d * np.cos(t), size, size * rng.uniform(0.75, 0.95),
                              rng.uniform(0.0, np.pi), p.nucleus_irregularity, dna * content**0.5,
                              0.12 + 0.5 * p.dna_grain, table))
        for _ in range(int(rng.poisson(p.micronuclei))):
            t, d = rng.uniform(0.0, 2 * np.pi), rng.uniform(1.15, 1.6) * a
            rm = rng.uniform(1.4, 2.4)
            dna_items.append((i, ny + d * np.sin(t), nx + d * np.cos(t), rm, rm, 0.0, 0.0, 1.2 * dna, 0.1, None))
        mtoc_t = heading + np.pi + rng.normal(0.0, 0.6)
        mtoc = (ny + (a + 2.5) * np.sin(mtoc_t), nx + (a + 2.5) * np.cos(mtoc_t))
        n_tracks = int(rng.poisson(max(0.0, 42 * p.filaments * (1 - 0.6 * p.bundling))))
        steps = int(2.6 * r * cells.elongation[i])
        add_tracks(i, mtoc, n_tracks, TUB_FILAMENT * tub_level * (1 + 2.5 * p.bundling),
                   p.bundling * rng.uniform(0.03, 0.07), 0.15 + 0.8 * p.bundling, steps, spread=0.6 * r * p.bundling)
        if p.aggresome > 0.05:
            ra = 2.0 + 1.5 * p.aggresome
            tub_blobs.append((i, mtoc[0], mtoc[1], ra, ra * 0.8, 0.0, 0.0, TUB_AGGRESOME * p.aggresome * tub_level,
                              0.0, None))
        count = int(rng.poisson(4.5 * p.stress_fibres))
        if count:  # along the cell's long axis, spread across its width
            minor = r * float(np.median(cells.tables[i]))
            fibres.append((np.full(count, i), cells.angle[i] + rng.normal(0.0, 0.3) + rng.normal(0.0, 0.12, count),
                           rng.uniform(-0.65, 0.65, count) * minor, np.full(count, ACT_FIBRE * act_level)))
        for _ in range(int(rng.poisson(p.actin_aggregates))):
            t, d = rng.uniform(0.0, 2 * np.pi), 0.8 * r * np.sqrt(rng.random())
            act_points.append(disc_points(cy + d * np.sin(t), cx + d * np.cos(t), rng.uniform(1.2, 2.4),
                                           ACT_AGGREGATE * act_level))

    if fibres:
        act_points.append(fibre_points(cells, *(np.concatenate(column) for column in zip(*fibres))))
    nuclei = np.zeros((height, width), dtype=np.uint16)
    dna_image = np.zeros((height, width), dtype=np.float32)
    ellipses(dna_image, nuclei, instances, dna_items, grain)
    dna_image += np.float32(0.03 * DNA_LEVEL) * (instances > 0)  # mitochondrial DNA and out-of-focus light

    inside = np.minimum(rho, np.float32(1.0))
    thickness = np.float32(0.4) + np.float32(0.6) * (1 - inside * inside)
    tubulin = tub_lookup[instances] * thickness * (1 + np.float32(0.08) * grain)
    if tracks["cell"]:
        cat = {k: np.concatenate(v) for k, v in tracks.items()}
        tub_points.append(grow_tracks(rng, cells, instances, cat["cell"], cat["start"], cat["heading"],
                                       cat["weight"], cat["curl"], cat["follow"], cat["steps"]))
    tubulin += splat(tub_points, height, width)
    ellipses(tubulin, None, instances, tub_blobs, grain)

    edge = np.exp(-(((1 - inside) / np.float32(0.08)) ** 2))
    junction = np.exp(-((np.minimum(gap, 1) / np.float32(0.07)) ** 2))
    cortex = np.maximum(edge, junction)
    cortex *= np.clip(1 + np.float32(0.35) * grain, 0, None)  # uneven cortex: ruffles and gaps
    actin = act_lookup[instances] * thickness + cortex_lookup[instances] * cortex
    actin += splat(act_points, height, width)
    signal = np.stack([dna_image, tubulin, actin]).astype(np.float32)
    return FieldSignal(signal, instances, nuclei, _truth(cells, instances, nuclei, n_nuclei))


def _truth(cells: Cells, instances: NDArray[np.uint16], nuclei: NDArray[np.uint16],
           n_nuclei: NDArray[np.int_]) -> pd.DataFrame:
    """One row per cell with pixels in the field: centres, areas, response and state."""
    n = cells.cy.size
    height, width = instances.shape
    flat = instances.ravel().astype(np.int64)
    area = np.bincount(flat, minlength=n + 1)[1:]
    yy, xx = np.indices(instances.shape)
    sum_y = np.bincount(flat, weights=yy.ravel(), minlength=n + 1)[1:]
    sum_x = np.bincount(flat, weights=xx.ravel(), minlength=n + 1)[1:]
    nflat = nuclei.ravel().astype(np.int64)
    n_area = np.bincount(nflat, minlength=n + 1)[1:]
    n_y = np.bincount(nflat, weights=yy.ravel(), minlength=n + 1)[1:]
    n_x = np.bincount(nflat, weights=xx.ravel(), minlength=n + 1)[1:]
    from scipy import ndimage as ndi

    boxes = ndi.find_objects(instances, max_label=n)
    rows = []
    for i in range(n):
        box = boxes[i]
        if box is None or area[i] == 0:
            continue
        rows.append({
            "cell": i + 1,
            "x": sum_x[i] / area[i], "y": sum_y[i] / area[i],
            "bbox_x": (box[1].start + box[1].stop - 1) / 2, "bbox_y": (box[0].start + box[0].stop - 1) / 2,
            "nucleus_x": n_x[i] / n_area[i] if n_area[i] else np.nan,
            "nucleus_y": n_y[i] / n_area[i] if n_area[i] else np.nan,
            "cell_area": int(area[i]), "nucleus_area": int(n_area[i]),
            "touches_border": bool(box[0].start == 0 or box[1].start == 0 or box[0].stop == height
                                   or box[1].stop == width),
            "response": float(cells.strength[i]), "mitosis": MITOSIS_KINDS[cells.kind[i]],
            "nuclei": int(n_nuclei[i]) if cells.kind[i] == 0 else 0,
        })
    return pd.DataFrame(rows)
