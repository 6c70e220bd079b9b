"""The public entry point: :func:`reproduce` a paper, and :func:`check_paper_data` for a ``--data`` folder."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cytolens.core.console import console
from cytolens.core.errors import LayoutError, check_choice
from cytolens.reproduce.papers import PAPERS, SCALES, Plan, plan_steps
from cytolens.reproduce.steps import StepLedger, StepOutcome, run_steps

__all__ = ["PAPERS", "SCALES", "ReproduceResult", "check_paper_data", "reproduce"]

#: The layout each paper's real dataset has on disk, in words for the error of a folder that lacks it.
DATA_LAYOUTS = {
    "shpilman2017": "class folders 0/, 0.1/ and 1/ of single-cell images (optionally under train/ and test/)",
    "midl2019": "brightfield/ (or images/) with labels/, or with dapi/ and cellstain/ to derive the labels from",
    "cytogan": "BBBC021's layout: BBBC021_v1_image.csv, BBBC021_v1_moa.csv and the plate folders",
}


@dataclass
class ReproduceResult:
    """What :func:`reproduce` did and wrote.

    Attributes
    ----------
    paper, scale : str
        What was reproduced.
    out : Path
        The run folder.
    report : Path
        ``out/report.html``.
    tables : list of Path
        The paper's tables, ours beside its numbers (Markdown).
    steps : list of StepOutcome
        Each step and whether it ran, was skipped as finished, or was not needed.
    """

    paper: str
    scale: str
    out: Path
    report: Path
    tables: list[Path] = field(default_factory=list)
    steps: list[StepOutcome] = field(default_factory=list)


def check_paper_data(paper: str, data: str | Path) -> Path:
    """Check that ``data`` has the on-disk layout of ``paper``'s dataset, before any step starts.

    Returns
    -------
    Path
        ``data``.

    Raises
    ------
    LayoutError
        One line naming the folder: missing, a file, or without the paper's layout (which it names).
    """
    from cytolens.data.bbbc021 import is_bbbc021
    from cytolens.data.label_pairs import IMAGE_FOLDERS, LABEL_FOLDER, has_fluorescence

    data = Path(data)
    if not data.is_dir():
        raise LayoutError("dataset folder not found" if not data.exists() else "is a file; give the dataset folder",
                          path=data)
    if paper == "cytogan":
        usable = is_bbbc021(data)
    elif paper == "midl2019":
        images = any((data / name).is_dir() for name in IMAGE_FOLDERS)
        usable = images and ((data / LABEL_FOLDER).is_dir() or has_fluorescence(data))
    else:
        usable = all((data / name).is_dir() or (data / "train" / name).is_dir() for name in ("0", "0.1", "1"))
    if not usable:
        raise LayoutError(f"not a {paper} dataset: expected {DATA_LAYOUTS[paper]}", path=data)
    return data


def reproduce(
    paper: str,
    *,
    out: str | Path,
    scale: str = "quick",
    data: str | Path | None = None,
    seed: int = 0,
    simulation: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ReproduceResult:
    """Run ``paper``'s whole protocol into the run folder ``out``: data, every model the paper compares,
    evaluation and ``out/report.html``.

    A rerun with the same arguments skips the steps that finished (their outputs still there) and resumes an
    interrupted one through its command's own resume. One progress line per step goes to stderr.

    Parameters
    ----------
    paper : {"shpilman2017", "midl2019", "cytogan"}
        Shpilman et al. 2017 (classify), MIDL 2019 (segment) or CytoGAN 2017 (profile).
    out : str or Path
        The run folder: new, empty, or one an earlier call with the same arguments wrote.
    scale : {"quick", "cpu", "full"}, default "quick"
        ``quick``: the demo's configs, minutes per model on 2 CPU cores; ``cpu``: the ``-cpu`` configs, about an
        hour or two per model; ``full``: the papers' configs and data sizes, for a GPU.
    data : str or Path, optional
        The real dataset in its real layout (see :func:`check_paper_data`); skips the simulation. MIDL 2019's
        labels are derived into ``data/labels/`` when it has only ``dapi/`` and ``cellstain/``.
    seed : int, default 0
        Simulation and training seed.
    simulation : mapping, optional
        Simulator settings replacing the scale's (``per_class``, ``size``; ``fields``, ``field_shape``;
        ``scale``); tests make tiny data with them.
    overrides : mapping, optional
        Config keys replacing every training config's values (tests shrink the runs with them).

    Returns
    -------
    ReproduceResult

    Raises
    ------
    OptionError
        For an unknown paper or scale.
    LayoutError
        If ``data`` lacks the paper's layout, or ``out`` is a file or a non-empty folder of something else.
    CytolensError
        If ``out`` holds a reproduction with other arguments.
    """
    check_choice("paper", paper, PAPERS)
    check_choice("scale", scale, SCALES)
    data_path = check_paper_data(paper, data) if data is not None else None
    plan = Plan(paper=paper, scale=scale, out=Path(out), data=data_path, seed=seed,
                simulation=dict(simulation or {}), overrides=dict(overrides or {}))
    identity = {
        "paper": paper, "scale": scale, "seed": seed,
        "data": str(data_path.resolve()) if data_path is not None else None,
        # Repr, not JSON: tuples (a field shape) must compare equal after the round trip.
        "simulation": repr(sorted(plan.simulation.items())), "overrides": repr(sorted(plan.overrides.items())),
    }
    steps, tables = plan_steps(plan)  # configs are validated here, before the folder is touched
    ledger = StepLedger.open(plan.out, identity)
    outcomes = run_steps(steps, ledger)
    report = plan.out / "report.html"
    console.print(f"{paper} ({scale} scale) reproduced in {plan.out}; open {report}", markup=False)
    return ReproduceResult(paper=paper, scale=scale, out=plan.out, report=report, tables=tables, steps=outcomes)
