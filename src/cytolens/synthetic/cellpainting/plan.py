"""The experimental design of the simulated BBBC021: compounds, MOAs, weeks, plates, wells and batch effects.

BBBC021 (Ljosa et al. 2012; Caie et al. 2010) imaged MCF-7 breast cancer cells after 24 h with 113 compounds at
8 concentrations; 38 compounds at 103 concentrations (plus DMSO) have a mechanism-of-action (MOA) annotation in
``BBBC021_v1_moa.csv``, one of 12 MOAs. The experiment ran over 10 "weeks" of 96-well plates (55 plates, 60
imaged wells each, 4 sites per well); every compound lives in one week, each treatment has three replicate wells on
different plates of its week, every plate holds DMSO wells (negative control) and taxol (positive control).
In this simulation the positive-control wells hold taxol at :data:`POSITIVE_CONTROL_DOSE`, a dose outside taxol's
annotated series, so that every annotated treatment lives in one week.

:data:`COMPOUNDS` keeps BBBC021's compound names and MOA assignments. The concentrations (µM) follow BBBC021's
half-log dilution steps; the per-compound lists are a reconstruction (103 treatments in all, of which the
Cholesterol-lowering and Kinase-inhibitor compounds, which live in one week each, hold 11, as in the real table).
Two compounds without an MOA annotation stand for the 75 unannotated compounds of the real screen.

A :class:`Scale` says how much of this design is simulated; :func:`plan_experiment` lays the wells out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from cytolens.core.errors import check_choice

CONTROL = "DMSO"
POSITIVE_CONTROL = "taxol"
#: The positive-control wells on every plate hold taxol at a saturating dose outside its annotated series, so
#: they carry no MOA annotation and every annotated treatment stays in one week (as NSCB's definition needs).
POSITIVE_CONTROL_DOSE = 10.0

#: compound -> (MOA, concentrations in µM).
COMPOUNDS: dict[str, tuple[str, tuple[float, ...]]] = {
    "cytochalasin B": ("Actin disruptors", (10.0, 30.0)),
    "cytochalasin D": ("Actin disruptors", (0.3,)),
    "latrunculin B": ("Actin disruptors", (1.0, 3.0)),
    "AZ-A": ("Aurora kinase inhibitors", (0.1, 0.3, 1.0, 3.0)),
    "AZ258": ("Aurora kinase inhibitors", (0.1, 0.3, 1.0)),
    "AZ841": ("Aurora kinase inhibitors", (0.1, 0.3, 1.0)),
    "mevinolin/lovastatin": ("Cholesterol-lowering", (1.5, 5.0, 15.0)),
    "simvastatin": ("Cholesterol-lowering", (2.0, 6.0, 20.0)),
    "chlorambucil": ("DNA damage", (10.0,)),
    "cisplatin": ("DNA damage", (10.0,)),
    "etoposide": ("DNA damage", (1.0, 3.0, 10.0)),
    "mitomycin C": ("DNA damage", (0.3, 1.0, 3.0)),
    "camptothecin": ("DNA replication", (0.003, 0.01, 0.03)),
    "floxuridine": ("DNA replication", (10.0, 30.0)),
    "methotrexate": ("DNA replication", (10.0,)),
    "mitoxantrone": ("DNA replication", (0.003, 0.01, 0.03)),
    "AZ-C": ("Eg5 inhibitors", (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)),
    "AZ138": ("Eg5 inhibitors", (0.03, 0.1, 0.3, 1.0, 3.0)),
    "AZ-J": ("Epithelial", (1.0, 3.0, 10.0)),
    "AZ-U": ("Epithelial", (1.0, 3.0, 10.0)),
    "PP-2": ("Epithelial", (3.0, 10.0)),
    "alsterpaullone": ("Kinase inhibitors", (1.0, 3.0)),
    "bryostatin": ("Kinase inhibitors", (0.3,)),
    "PD-169316": ("Kinase inhibitors", (3.0, 10.0)),
    "colchicine": ("Microtubule destabilizers", (0.03,)),
    "demecolcine": ("Microtubule destabilizers", (0.3, 1.0, 3.0, 10.0, 30.0)),
    "nocodazole": ("Microtubule destabilizers", (0.3, 1.0)),
    "vincristine": ("Microtubule destabilizers", (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)),
    "docetaxel": ("Microtubule stabilizers", (0.03, 0.1, 0.3)),
    "epothilone B": ("Microtubule stabilizers", (0.1, 0.3, 1.0)),
    "taxol": ("Microtubule stabilizers", (0.3, 1.0, 3.0)),
    "ALLN": ("Protein degradation", (3.0, 100.0)),
    "lactacystin": ("Protein degradation", (10.0,)),
    "MG-132": ("Protein degradation", (0.4, 1.5, 5.0)),
    "proteasome inhibitor I": ("Protein degradation", (0.1, 3.0)),
    "anisomycin": ("Protein synthesis", (0.3, 1.0)),
    "cyclohexamide": ("Protein synthesis", (5.0, 15.0, 50.0)),
    "emetine": ("Protein synthesis", (0.1, 0.3, 1.0)),
}

#: Compounds imaged but absent from the MOA table (the real screen has 75 such compounds). Their phenotypes are
#: those of the named MOA (hydroxyurea blocks DNA synthesis) or none ("" = DMSO-like).
UNANNOTATED: dict[str, tuple[str, tuple[float, ...]]] = {
    "hydroxyurea": ("DNA replication", (100.0,)),
    "brefeldin A": ("", (1.0,)),
}

#: The 60 imaged wells of a BBBC021 plate: rows B-G, columns 02-11.
WELLS: tuple[str, ...] = tuple(f"{row}{col:02d}" for row in "BCDEFG" for col in range(2, 12))
#: DMSO wells sit at fixed positions spread over the plate (edge and centre), the first ``dmso_wells`` of these.
DMSO_WELLS: tuple[str, ...] = ("B02", "G11", "D06", "E07", "C10", "F03")


@dataclass(frozen=True)
class Scale:
    """How much of BBBC021's design a simulated dataset holds.

    Attributes
    ----------
    name : str
        ``tiny``, ``demo``, ``small`` or ``full``.
    compounds : tuple of str
        Annotated compounds simulated (taxol is always one of them).
    max_concentrations : int
        At most this many concentrations per compound (the highest ones).
    unannotated : tuple of str
        Compounds without an MOA annotation, one concentration each.
    plates_per_week : tuple of int
        Number of plates in each week (at least ``replicates`` each).
    replicates : int
        Wells per treatment, each on a different plate of the compound's week.
    dmso_wells : int
        DMSO wells on every plate.
    sites : int
        Fields imaged per well.
    height, width : int
        Field size in pixels (BBBC021: 1024 × 1280).
    """

    name: str
    compounds: tuple[str, ...]
    max_concentrations: int
    unannotated: tuple[str, ...]
    plates_per_week: tuple[int, ...]
    replicates: int
    dmso_wells: int
    sites: int
    height: int
    width: int

    @property
    def weeks(self) -> int:
        return len(self.plates_per_week)


_TINY_COMPOUNDS = (
    "taxol", "docetaxel", "nocodazole", "vincristine", "etoposide", "cisplatin", "AZ258", "AZ841",
    "cytochalasin B", "latrunculin B",
)

SCALES: dict[str, Scale] = {
    "tiny": Scale("tiny", _TINY_COMPOUNDS, 2, ("hydroxyurea",), (2, 2), 2, 2, 1, 256, 256),
    # All 38 compounds and 12 MOAs at their strongest concentration, 6 weeks: ~110 fields, for `cytolens demo`.
    "demo": Scale("demo", tuple(COMPOUNDS), 1, (), (2,) * 6, 2, 2, 1, 384, 480),
    "small": Scale("small", tuple(COMPOUNDS), 3, tuple(UNANNOTATED), (3,) * 10, 3, 4, 2, 384, 480),
    "full": Scale("full", tuple(COMPOUNDS), 8, tuple(UNANNOTATED), (5, 6) * 5, 3, 6, 4, 1024, 1280),
}


def get_scale(name: str) -> Scale:
    """The :class:`Scale` called ``name`` (``tiny``, ``demo``, ``small`` or ``full``)."""
    return SCALES[check_choice("scale", name, tuple(SCALES))]


def planned_fields(scale: str, seed: int = 0) -> int:
    """How many fields (wells × sites) the simulator writes for ``scale`` and ``seed``: a progress bar's total."""
    design = get_scale(scale)
    return len(plan_experiment(design, np.random.default_rng(np.random.SeedSequence([seed, 0])))) * design.sites


def treatments(scale: Scale) -> pd.DataFrame:
    """The treatments of a scale: ``compound``, ``concentration``, ``moa`` (``""`` for unannotated compounds).

    Annotated compounds keep their highest ``max_concentrations`` concentrations, the strongest phenotypes.
    """
    rows = []
    for name in scale.compounds:
        moa, doses = COMPOUNDS[name]
        for dose in doses[-scale.max_concentrations:]:
            rows.append({"compound": name, "concentration": dose, "moa": moa, "annotated": True})
    for name in scale.unannotated:
        moa, doses = UNANNOTATED[name]
        rows.append({"compound": name, "concentration": doses[-1], "moa": moa, "annotated": False})
    return pd.DataFrame(rows)


def assign_weeks(scale: Scale) -> dict[str, int]:
    """Put every compound in one week (0-based), as in BBBC021.

    Compounds of one MOA go to different weeks where possible (so that a nearest neighbour from another week
    can share the MOA), except the Cholesterol-lowering and Kinase-inhibitor compounds, which BBBC021 imaged in
    one week each (the reason NSCB drops these two MOAs). Weeks are filled evenly, in a fixed order.
    """
    table = treatments(scale)
    load = np.zeros(scale.weeks, dtype=int)
    weeks: dict[str, int] = {}
    same_week = {"Cholesterol-lowering", "Kinase inhibitors"}
    by_moa: dict[str, list[str]] = {}
    for compound, moa in table.drop_duplicates("compound")[["compound", "moa"]].itertuples(index=False):
        by_moa.setdefault(moa or f"unannotated:{compound}", []).append(compound)
    # Large MOAs first: they have the fewest choices left when weeks fill up.
    for moa, members in sorted(by_moa.items(), key=lambda item: (-len(item[1]), item[0])):
        if moa in same_week:
            week = int(np.argmin(load))
            for compound in members:
                weeks[compound] = week
            load[week] += len(members)
            continue
        used: set[int] = set()
        for compound in members:
            free = [w for w in range(scale.weeks) if w not in used] or list(range(scale.weeks))
            week = min(free, key=lambda w: (load[w], w))
            weeks[compound] = week
            used.add(week)
            load[week] += 1
    return weeks


def plate_names(scale: Scale, rng: np.random.Generator) -> list[tuple[int, str]]:
    """``(week, plate)`` for every plate, e.g. ``(0, "Week1_22123")``: BBBC021's plate folders are named so."""
    barcodes = rng.choice(np.arange(22000, 42000), size=sum(scale.plates_per_week), replace=False)
    plates, k = [], 0
    for week, count in enumerate(scale.plates_per_week):
        for _ in range(count):
            plates.append((week, f"Week{week + 1}_{int(barcodes[k])}"))
            k += 1
    return plates


def plan_experiment(scale: Scale, rng: np.random.Generator) -> pd.DataFrame:
    """Lay out every imaged well of the simulated screen.

    Returns
    -------
    pandas.DataFrame
        One row per well: ``week`` (0-based), ``batch`` (``"Week1"`` …), ``plate``, ``well``, ``replicate``,
        ``compound``, ``concentration``, ``moa`` (``"DMSO"`` for DMSO, ``""`` when unannotated), ``annotated``.
        DMSO wells are on every plate, one taxol positive-control well (:data:`POSITIVE_CONTROL_DOSE`, not in
        the MOA table) on every plate, and every treatment (taxol's annotated series too) in ``replicates`` wells
        on different plates of its compound's week.

    Raises
    ------
    ValueError
        If a plate would need more than BBBC021's 60 wells.
    """
    table = treatments(scale)
    weeks = assign_weeks(scale)
    plates = plate_names(scale, rng)
    by_week: dict[int, list[str]] = {}
    for week, plate in plates:
        by_week.setdefault(week, []).append(plate)
    contents: dict[str, list[dict]] = {plate: [] for _, plate in plates}
    for week, plate in plates:
        for _ in range(scale.dmso_wells):
            contents[plate].append({"compound": CONTROL, "concentration": 0.0, "moa": CONTROL, "annotated": True,
                                    "replicate": 0})
        contents[plate].append({"compound": POSITIVE_CONTROL, "concentration": POSITIVE_CONTROL_DOSE,
                                "moa": COMPOUNDS[POSITIVE_CONTROL][0], "annotated": False, "replicate": 0})
    for row in table.to_dict("records"):
        week_plates = by_week[weeks[row["compound"]]]
        # Rotate the starting plate so that replicates spread evenly over a week's plates.
        start = int(rng.integers(len(week_plates)))
        for replicate in range(scale.replicates):
            plate = week_plates[(start + replicate) % len(week_plates)]
            contents[plate].append({**row, "replicate": replicate + 1})
    rows = []
    for week, plate in plates:
        wells = contents[plate]
        if len(wells) > len(WELLS):
            raise ValueError(f"plate {plate} needs {len(wells)} wells; a BBBC021 plate images {len(WELLS)}")
        free = [w for w in WELLS if w not in DMSO_WELLS[: scale.dmso_wells]]
        order = rng.permutation(len(free))
        dmso = iter(DMSO_WELLS[: scale.dmso_wells])
        others = iter(free[i] for i in order)
        # Replicate numbers of controls count their wells on the plate (1, 2, ...), as BBBC021's table does.
        control_count: dict[str, int] = {}
        for content in wells:
            well = next(dmso) if content["compound"] == CONTROL else next(others)
            replicate = content["replicate"]
            if replicate == 0:
                control_count[content["compound"]] = control_count.get(content["compound"], 0) + 1
                replicate = control_count[content["compound"]]
            rows.append({"week": week, "batch": f"Week{week + 1}", "plate": plate, "well": well,
                         "replicate": replicate, "compound": content["compound"],
                         "concentration": float(content["concentration"]), "moa": content["moa"],
                         "annotated": bool(content["annotated"])})
    wells_table = pd.DataFrame(rows)
    return wells_table.sort_values(["week", "plate", "well"], kind="stable").reset_index(drop=True)


@dataclass(frozen=True)
class WeekBatch:
    """Batch effects shared by the plates of one week (culture, staining and microscope set-up)."""

    density: float  # multiplies the number of cells per field
    cell_scale: float  # multiplies cell and nucleus radii (culture conditions)
    gains: tuple[float, float, float]  # multiplies DNA, tubulin, actin intensity
    background: tuple[float, float, float]  # ADU of background per channel
    vignetting: float  # quadratic fall-off of the illumination towards the corners
    gradient: float  # linear illumination ramp ...
    gradient_angle: float  # ... in this direction
    centre_shift: tuple[float, float]  # optical axis off the field centre (fraction of the field)
    psf_sigma: float  # blur of the optics (px)


def draw_week_batch(rng: np.random.Generator) -> WeekBatch:
    """Draw one week's batch effects."""
    return WeekBatch(
        density=float(rng.uniform(0.75, 1.3)),
        cell_scale=float(np.exp(rng.normal(0.0, 0.04))),
        gains=tuple(float(g) for g in np.exp(rng.normal(0.0, 0.18, 3))),  # type: ignore[arg-type]
        background=tuple(float(b) for b in rng.uniform(120.0, 420.0, 3)),  # type: ignore[arg-type]
        vignetting=float(rng.uniform(0.1, 0.45)),
        gradient=float(rng.uniform(0.0, 0.25)),
        gradient_angle=float(rng.uniform(0.0, 2 * np.pi)),
        centre_shift=(float(rng.uniform(-0.15, 0.15)), float(rng.uniform(-0.15, 0.15))),
        psf_sigma=float(rng.uniform(0.8, 1.3)),
    )


def moa_table(scale: Scale) -> pd.DataFrame:
    """``BBBC021_v1_moa.csv`` of a scale: ``compound, concentration, moa`` for annotated treatments and DMSO."""
    table = treatments(scale)
    table = table[table["annotated"]][["compound", "concentration", "moa"]]
    control = pd.DataFrame([{"compound": CONTROL, "concentration": 0.0, "moa": CONTROL}])
    return pd.concat([table, control], ignore_index=True)
