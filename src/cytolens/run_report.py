"""``cytolens report``: the report of a run folder, each capability's section supplied by that capability.

:mod:`cytolens.report` holds only building blocks; this module asks each capability for its section. A run
folder (one with ``run.json``) shows the section of the kind it records, never one guessed from the files it
happens to hold; other folders (the demo's, a profile evaluation, an experts' scoring folder) are offered to
every capability, looking in the capability's subfolder first (the demo's layout) and then in the folder itself.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cytolens.core.errors import CytolensError
from cytolens.engine.run_folder import RUN_FILE, run_kind
from cytolens.report.page import ReportSection, write_report

__all__ = ["collect_sections", "write_run_report"]

SectionFinder = Callable[[Path], "ReportSection | None"]

#: The run kinds each capability reports (the ``kind`` of ``run.json``).
_KINDS = {"classify": ("classify",), "segment": ("segment",), "profile": ("profile-gan",), "experts": ()}


def _finders() -> dict[str, SectionFinder]:
    # Imported here: each capability pulls in torch and its models, which a page of one capability never needs.
    from cytolens.classify.report_section import section_for_folder as classify
    from cytolens.experts.report import section_for_folder as experts
    from cytolens.profile.report_section import section_for_folder as profile
    from cytolens.segment.report_section import section_for_folder as segment

    return {"classify": classify, "segment": segment, "profile": profile, "experts": experts}


def _capability_of_run(folder: Path) -> str | None:
    """The capability a run folder belongs to ('' for a kind no capability reports; None: not a run folder)."""
    if not (folder / RUN_FILE).is_file():
        return None
    kind = run_kind(folder)
    return next((name for name, kinds in _KINDS.items() if kind in kinds), "")


def collect_sections(folder: str | Path) -> list[ReportSection]:
    """The report sections of ``folder``: a run folder's own, or every capability's found in a demo folder.

    Parameters
    ----------
    folder : str or Path
        A run folder of one capability, a profile evaluation or experts' scoring folder, or a demo folder with
        ``classify/``, ``segment/``, ``profile/`` and ``experts/`` subfolders.

    Returns
    -------
    list of ReportSection
        In the order classify, segment, profile, experts; empty when nothing is reportable.
    """
    folder = Path(folder)
    sections: list[ReportSection] = []
    for key, find in _finders().items():
        for candidate in (folder / key, folder):
            owner = _capability_of_run(candidate)
            if owner not in (None, key):
                continue
            section = find(candidate)
            if section is not None:
                sections.append(section)
                break
    return sections


def write_run_report(folder: str | Path, *, out: str | Path | None = None, title: str | None = None,
                     note: str | None = None, allow_empty: bool = False) -> tuple[Path, list[ReportSection]]:
    """Write the self-contained ``report.html`` of ``folder``.

    Parameters
    ----------
    folder : str or Path
        See :func:`collect_sections`.
    out : str or Path, optional
        The page (default ``folder/report.html``).
    title : str, optional
        Default names the folder.
    note : str, optional
        A sentence under the title.
    allow_empty : bool, default False
        Write a page saying there are no results yet instead of raising (the demo run without capabilities).

    Returns
    -------
    (Path, list of ReportSection)
        The page written (atomically) and the sections it shows.

    Raises
    ------
    CytolensError
        If ``folder`` does not exist, or holds nothing to report (unless ``allow_empty``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CytolensError("no such folder" if not folder.exists() else "not a folder", path=folder)
    sections = collect_sections(folder)
    if not sections and not allow_empty:
        raise CytolensError(
            "nothing to report: not a classify, segment or profile run folder, a profile evaluation, an experts' "
            "scoring folder or a demo folder (has its command finished?)", path=folder)
    destination = Path(out) if out is not None else folder / "report.html"
    page = write_report(sections, destination, title=title or f"cytolens report: {folder.resolve().name}",
                        note=note)
    return page, sections
