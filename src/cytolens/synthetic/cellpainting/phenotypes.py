"""What each mechanism of action does to an MCF-7 cell, how strongly at a given dose, and in which cells.

A cell's look is described by a :class:`Phenotype`: multipliers and amounts of cell size and shape, nuclear size,
shape and DNA content, mitotic arrest, the tubulin network and the actin cytoskeleton. An untreated (DMSO) cell has
the neutral values. Each MOA moves some of them (:data:`MOA_EFFECTS`, the change at full strength), following the
biology of BBBC021's 12 MOAs:

* Microtubule destabilizers (nocodazole, vincristine, ...): the microtubule network dissolves into diffuse tubulin,
  cells round up and arrest in prometaphase with scattered condensed chromosomes.
* Microtubule stabilizers (taxol, ...): microtubules gather into thick, curling bundles; mitotic arrest with
  multipolar spindles; micronuclei after aberrant mitoses.
* Aurora kinase inhibitors: cytokinesis fails, cells become large and polyploid with several or lobed nuclei.
* Eg5 inhibitors: monopolar spindles: round cells with a ring ("rosette") of chromosomes around one aster.
* DNA damage: enlarged, irregular nuclei and micronuclei in large flattened cells; fewer cells.
* DNA replication: S-phase arrest: larger, brighter nuclei with granular replication foci; fewer cells.
* Actin disruptors: stress fibres and cortex collapse into bright actin aggregates; arborised, shrunken cells;
  binucleate cells (cytokinesis needs actin).
* Protein degradation (proteasome inhibitors): an aggresome, a bright perinuclear body at the centrosome; cells
  shrink and round.
* Protein synthesis: smaller cells with less tubulin and actin; fewer cells.
* Kinase inhibitors: elongated, spread cells with protrusions and more cortical actin.
* Epithelial (Src and other inhibitors that tighten junctions): compact, polygonal cells in tight colonies with
  strong junctional actin and fewer stress fibres.
* Cholesterol-lowering (statins, Rho prenylation lost): stress fibres fade, cells become spindly.

Strength grows with concentration along a Hill curve around each compound's EC50, and varies between cells: a
cell responds with a probability that grows with strength, and responders differ in how much (many treated cells
look normal).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

#: Mitotic figure each MOA's arrested cells show; untreated mitoses are bipolar metaphases.
MITOSIS_KIND: dict[str, str] = {
    "Eg5 inhibitors": "monopolar",
    "Microtubule destabilizers": "scattered",
    "Microtubule stabilizers": "multipolar",
}


@dataclass(frozen=True)
class Phenotype:
    """The state of one cell (neutral values = an untreated cell)."""

    cell_scale: float = 1.0  # multiplies the cell radius
    elongation: float = 0.0  # added to the cell's length/width ratio
    lobes: float = 0.0  # added to the amplitude of the outline's lobes (protrusions)
    nucleus_scale: float = 1.0  # multiplies the nucleus radius
    nucleus_irregularity: float = 0.0  # lobes of the nuclear outline
    dna_level: float = 1.0  # multiplies the DNA stain intensity (DNA content)
    dna_grain: float = 0.0  # granular chromatin (replication foci)
    multinucleate: float = 0.0  # probability of 2-4 nuclei
    micronuclei: float = 0.0  # expected number of micronuclei
    mitotic: float = 0.0  # extra probability of mitotic arrest
    filaments: float = 1.0  # strength of the microtubule network
    tubulin_diffuse: float = 1.0  # free (unpolymerised) tubulin in the cytoplasm
    bundling: float = 0.0  # 0..1, microtubules gathered into thick curling bundles
    aggresome: float = 0.0  # brightness of a perinuclear aggresome
    tubulin_level: float = 1.0  # multiplies all tubulin
    stress_fibres: float = 1.0  # expected stress fibres, relative to an untreated cell
    cortex: float = 1.0  # cortical and junctional actin
    actin_aggregates: float = 0.0  # expected number of bright actin foci
    actin_level: float = 1.0  # multiplies all actin
    density: float = 1.0  # field level: multiplies the number of cells (toxicity)
    compactness: float = 0.0  # field level: 0..1, cells packed into tight colonies

    def shifted(self, effect: dict[str, float], strength: float) -> Phenotype:
        """This phenotype moved by ``strength`` × ``effect`` (a dict of changes at full strength)."""
        if strength == 0 or not effect:
            return self
        values = {name: getattr(self, name) + strength * change for name, change in effect.items()}
        return _clip(replace(self, **values))


PHENOTYPE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Phenotype))

#: Change of each :class:`Phenotype` value at full strength, per MOA.
MOA_EFFECTS: dict[str, dict[str, float]] = {
    "Actin disruptors": {"stress_fibres": -0.95, "cortex": -0.7, "actin_aggregates": 9.0, "lobes": 0.35,
                         "cell_scale": -0.15, "multinucleate": 0.35, "actin_level": 0.2, "density": -0.1},
    "Aurora kinase inhibitors": {"cell_scale": 0.45, "nucleus_scale": 0.45, "multinucleate": 0.75, "dna_level": 0.3,
                                 "nucleus_irregularity": 0.25, "mitotic": 0.04, "density": -0.35},
    "Cholesterol-lowering": {"stress_fibres": -0.65, "elongation": 0.7, "lobes": 0.25, "cell_scale": -0.1,
                             "actin_level": -0.2, "density": -0.1},
    "DNA damage": {"nucleus_scale": 0.4, "nucleus_irregularity": 0.45, "micronuclei": 1.6, "cell_scale": 0.3,
                   "dna_level": 0.15, "stress_fibres": 0.4, "density": -0.35},
    "DNA replication": {"nucleus_scale": 0.25, "dna_level": 0.4, "dna_grain": 0.7, "cell_scale": 0.12,
                        "density": -0.3},
    "Eg5 inhibitors": {"mitotic": 0.75, "density": -0.1},
    "Epithelial": {"cell_scale": -0.15, "cortex": 0.9, "stress_fibres": -0.4, "lobes": -0.15, "elongation": -0.2,
                   "compactness": 0.8},
    "Kinase inhibitors": {"elongation": 0.9, "lobes": 0.3, "cell_scale": 0.15, "cortex": 0.45, "filaments": 0.2},
    "Microtubule destabilizers": {"filaments": -0.95, "tubulin_diffuse": 0.9, "cell_scale": -0.25, "lobes": -0.2,
                                  "elongation": -0.3, "mitotic": 0.5, "density": -0.1},
    "Microtubule stabilizers": {"bundling": 0.95, "filaments": 0.3, "tubulin_diffuse": -0.45, "mitotic": 0.45,
                                "micronuclei": 1.0},
    "Protein degradation": {"aggresome": 1.0, "cell_scale": -0.15, "lobes": -0.1, "nucleus_scale": -0.1,
                            "filaments": -0.3, "density": -0.2},
    "Protein synthesis": {"cell_scale": -0.2, "tubulin_level": -0.4, "actin_level": -0.35, "nucleus_scale": -0.1,
                          "filaments": -0.3, "dna_level": -0.1, "density": -0.25},
}

_BOUNDS: dict[str, tuple[float, float]] = {
    "cell_scale": (0.5, 2.0), "nucleus_scale": (0.5, 2.0), "dna_level": (0.3, 3.0), "multinucleate": (0.0, 1.0),
    "mitotic": (0.0, 1.0), "bundling": (0.0, 1.0), "compactness": (0.0, 1.0), "density": (0.2, 2.0),
    "tubulin_level": (0.2, 3.0), "actin_level": (0.2, 3.0), "elongation": (-0.5, 2.0), "lobes": (-0.3, 0.8),
}


def _clip(phenotype: Phenotype) -> Phenotype:
    values = {}
    for name in PHENOTYPE_FIELDS:
        low, high = _BOUNDS.get(name, (0.0, np.inf))
        values[name] = min(max(float(getattr(phenotype, name)), low), high)
    return Phenotype(**values)


@dataclass(frozen=True)
class CompoundResponse:
    """How one compound acts: its MOA's effect with the compound's own deviations, and its potency."""

    moa: str
    effect: dict[str, float]
    ec50: float  # µM
    hill: float

    def strength(self, concentration: float) -> float:
        """Population strength in [0, 1] at ``concentration`` (µM): a Hill curve, 0 without compound."""
        if concentration <= 0 or not self.effect:
            return 0.0
        ratio = (concentration / self.ec50) ** self.hill
        return float(ratio / (1.0 + ratio))


def draw_compound_response(rng: np.random.Generator, moa: str, concentrations: tuple[float, ...]) -> CompoundResponse:
    """A compound of ``moa`` (``""`` or ``"DMSO"``: no effect) tested at ``concentrations``.

    Each change of the MOA's effect is scaled by a compound-specific factor (log-normal, σ 0.15) and two further
    values move a little (off-target effects), so compounds of one MOA are alike but not identical. The EC50
    sits near the geometric middle of the tested range, so that the lowest dose is weak and the highest strong.
    """
    base = MOA_EFFECTS.get(moa, {})
    effect = {name: change * float(np.exp(rng.normal(0.0, 0.15))) for name, change in base.items()}
    if base:
        for name in rng.choice([n for n in PHENOTYPE_FIELDS if n not in ("density", "compactness")], 2, replace=False):
            scale = 1.0 if name not in ("actin_aggregates", "micronuclei") else 2.0
            effect[str(name)] = effect.get(str(name), 0.0) + float(rng.normal(0.0, 0.08)) * scale
    doses = np.asarray(concentrations, dtype=float)
    middle = float(np.exp(np.mean(np.log(doses)))) if doses.size else 1.0
    # Single-dose compounds were chosen at an active dose: put the EC50 below it.
    shift = rng.uniform(-0.9, -0.4) if doses.size == 1 else rng.uniform(-0.4, 0.1)
    return CompoundResponse(moa=moa, effect=effect, ec50=middle * 10.0**shift, hill=float(rng.uniform(1.0, 1.6)))


def cell_strengths(rng: np.random.Generator, strength: float, n: int) -> np.ndarray:
    """Per-cell response strengths for a population at ``strength``: many cells stay at 0 (non-responders).

    A cell responds with probability ``0.1 + 0.8 × strength`` (none without compound); a responder's strength is
    ``strength`` times a log-normal factor (σ 0.35), clipped to [0, 1].
    """
    if strength <= 0:
        return np.zeros(n)
    responds = rng.random(n) < 0.1 + 0.8 * strength
    magnitude = np.clip(strength * np.exp(rng.normal(0.0, 0.35, n)), 0.0, 1.0)
    return np.where(responds, magnitude, 0.0)
