"""The self-contained HTML report of a run folder: one page, every figure embedded, nothing fetched.

:func:`write_report` looks for the outputs each capability leaves in a folder (the demo's, or a single
capability's run) and renders the sections it finds:

* **classify** -- ``table_iv.csv`` and the accuracy, confusion and learning-curve figures;
* **segment** -- ``evaluation/table1.csv``, ``evaluation/metrics.json`` and the ``*_overlay.png`` images under
  ``predictions/``;
* **profile** -- ``evaluation/table1.csv`` and ``moa_accuracy.csv`` (or the two in the folder itself) and the PNG
  figures of ``figures/``;
* **experts** -- an ``experts_section.html`` fragment written by ``cytolens experts score``.

A section's tables come from the CSV files the capability wrote, so the page always shows the same numbers as
the files beside it. Images are embedded as data URIs: the page can be mailed or archived on its own.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cytolens.core.atomic import write_text_atomic
from cytolens.engine.run_folder import RUN_FILE, run_kind

#: At most this many images per gallery, so a report on a large run stays small.
MAX_IMAGES_PER_GALLERY = 12


@dataclass
class Section:
    """One part of the report: a title, HTML paragraphs and tables, and images with captions."""

    key: str
    title: str
    blocks: list[str] = field(default_factory=list)
    images: list[tuple[Path, str]] = field(default_factory=list)


def _table_html(path: Path) -> str:
    table = pd.read_csv(path)
    return table.to_html(index=False, border=0, classes="table", na_rep="—", float_format=lambda v: f"{v:.4g}")


def _image_html(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _pngs(folder: Path, pattern: str = "*.png") -> list[Path]:
    return sorted(folder.rglob(pattern))[:MAX_IMAGES_PER_GALLERY] if folder.is_dir() else []


def _classify_section(folder: Path) -> Section | None:
    if not (folder / "table_iv.csv").is_file():
        return None
    section = Section("classify", "Classification (Shpilman et al. 2017)")
    section.blocks.append("<p>Test accuracy (%) per task and method, with the paper's numbers beside ours.</p>")
    section.blocks.append(_table_html(folder / "table_iv.csv"))
    figures = folder / "figures"
    section.images += [(path, path.stem.replace("_", " ")) for path in _pngs(figures, "accuracy*.png")]
    # The task with every class is the paper's headline; pairwise figures stay in the run folder.
    section.images += [(path, f"confusion matrix: {path.stem}") for path in _pngs(figures / "confusion", "3_classes*")]
    section.images += [(path, f"learning curves: {path.stem}")
                       for path in _pngs(figures / "learning_curves", "3_classes*")][:2]
    return section


def _segment_section(folder: Path) -> Section | None:
    evaluation = folder / "evaluation"
    # A profile evaluation also has a table1.csv; its moa_accuracy.csv tells the two apart.
    if not (evaluation / "table1.csv").is_file() or (evaluation / "moa_accuracy.csv").is_file():
        return None
    section = Section("segment", "Label-free segmentation (MIDL 2019)")
    metrics_path = evaluation / "metrics.json"
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        dice = ", ".join(f"{name} {value:.3f}" for name, value in metrics["dice"].items())
        section.blocks.append(
            f"<p>{metrics['images']} images scored ({html.escape(str(metrics['mode']))}): dice {dice}; "
            f"mean dice {metrics['mean_dice']:.3f}; pixel accuracy {metrics['pixel_accuracy']:.3f}.</p>"
            f"<p class='note'>{html.escape(str(metrics['definition']))}</p>"
        )
    section.blocks.append("<p>Table 1 of the paper beside ours.</p>")
    section.blocks.append(_table_html(evaluation / "table1.csv"))
    section.images += [
        (path, f"{path.stem.removesuffix('_overlay')}: predicted nuclei and cytoplasm over the bright-field image")
        for path in _pngs(folder / "predictions", "*_overlay.png")
    ]
    return section


def _profile_section(folder: Path) -> Section | None:
    # A demo's profile folder keeps its evaluation in evaluation/; `cytolens report` may also get that folder.
    found = [path for path in (folder / "evaluation", folder)
             if (path / "table1.csv").is_file() and (path / "moa_accuracy.csv").is_file()]
    if not found:
        return None
    evaluation = found[0]
    section = Section("profile", "Morphological profiling (CytoGAN 2017)")
    done = folder / "gan" / "done.json"
    if done.is_file():  # the demo's layout: say how long its GAN trained, so the table is read for what it is
        run = json.loads(done.read_text(encoding="utf-8"))
        section.blocks.append(
            f"<p>The GAN ({html.escape(str(run['gan']))}) trained {run['steps']:,} of {run['steps_planned']:,} "
            f"planned steps ({run['epochs']} epochs of {run['cells']:,} cells, stopped by "
            f"{html.escape(str(run['stopped']))}). A GAN trained for minutes need not beat the random-weights "
            "control; the README reports hour-long runs.</p>"
        )
    section.blocks.append("<p>Mechanism-of-action accuracy (%), with the paper's numbers beside ours.</p>")
    section.blocks.append(_table_html(evaluation / "table1.csv"))
    section.blocks.append(
        "<p>Every profile and protocol: 1-NN cosine accuracy over treatments with its 95 % interval, and CytoGAN's "
        "per-compound mean.</p>"
    )
    section.blocks.append(_table_html(evaluation / "moa_accuracy.csv"))
    section.images += [(path, path.stem.replace("_", " ")) for path in _pngs(folder / "figures")]
    return section


def _experts_section(folder: Path) -> Section | None:
    fragment = folder / "experts_section.html"
    if not fragment.is_file():
        return None
    section = Section("experts", "Human experts versus the CNN")
    section.blocks.append(fragment.read_text(encoding="utf-8"))
    return section


_FINDERS = (_classify_section, _segment_section, _profile_section, _experts_section)
# Where each capability's outputs sit in a demo folder; a capability's own run folder is searched too.
_SUBFOLDERS = {"classify": "classify", "segment": "segment", "profile": "profile", "experts": "experts"}
# The section each kind of run folder (cytolens.engine.run_folder) shows.
_RUN_SECTIONS = {"classify": "classify", "segment": "segment", "profile-gan": "profile"}

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
h1 {{ font-size: 1.6em; }} h2 {{ border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }}
table {{ border-collapse: collapse; font-size: .85em; margin: 1em 0; }}
th, td {{ border: 1px solid #ddd; padding: .25em .5em; text-align: right; }}
th {{ background: #f4f4f4; }} td:first-child, th:first-child {{ text-align: left; }}
figure {{ display: inline-block; margin: .5em; vertical-align: top; max-width: 48%; }}
figure img {{ max-width: 100%; border: 1px solid #ddd; }} figcaption {{ font-size: .8em; color: #555; }}
.note {{ font-size: .85em; color: #555; }} nav a {{ margin-right: 1em; }}
</style></head><body>
<h1>{title}</h1>
<nav>{nav}</nav>
{sections}
<p class="note">Written by cytolens {version}. Every number on this page is read from the files in this folder.</p>
</body></html>
"""


def _section_of_run(folder: Path) -> str | None:
    """The section a run folder belongs to, from the kind its ``run.json`` records (None: not a run folder)."""
    if not (folder / RUN_FILE).is_file():
        return None
    return _RUN_SECTIONS.get(run_kind(folder), "")


def collect_sections(folder: str | Path) -> list[Section]:
    """Find the sections a run folder (or a demo folder with one subfolder per capability) can show.

    A run folder shows only its own kind's section (its ``run.json`` says which); other folders (the demo's,
    an evaluation's) are searched for each capability's outputs.
    """
    folder = Path(folder)
    sections: list[Section] = []
    for finder in _FINDERS:
        key = finder.__name__.strip("_").removesuffix("_section")
        for candidate in (folder / _SUBFOLDERS[key], folder):
            if _section_of_run(candidate) not in (None, key):
                continue
            section = finder(candidate)
            if section is not None:
                sections.append(section)
                break
    return sections


def render_report(folder: str | Path, *, title: str | None = None) -> str:
    """Return the HTML page for ``folder`` (see the module docstring for what it shows)."""
    from cytolens import __version__

    folder = Path(folder)
    sections = collect_sections(folder)
    title = title or f"cytolens report: {folder.resolve().name}"
    parts = []
    for section in sections:
        images = "".join(_image_html(path, caption) for path, caption in section.images)
        parts.append(f'<section id="{section.key}"><h2>{html.escape(section.title)}</h2>'
                     + "".join(section.blocks) + images + "</section>")
    if not parts:
        parts.append("<p>No results found in this folder yet.</p>")
    nav = "".join(f'<a href="#{section.key}">{html.escape(section.title)}</a>' for section in sections)
    return _PAGE.format(title=html.escape(title), nav=nav, sections="\n".join(parts), version=__version__)


def write_report(folder: str | Path, *, out: str | Path | None = None, title: str | None = None) -> Path:
    """Write the self-contained HTML report of ``folder`` to ``out`` (default ``folder/report.html``).

    Parameters
    ----------
    folder : str or Path
        A run folder of one capability, or a demo folder with ``classify/``, ``segment/``, ``profile/``,
        ``experts/`` subfolders.
    out : str or Path, optional
        Where to write the page.
    title : str, optional
        The page title; default names the folder.

    Returns
    -------
    Path
        The page written (atomically).
    """
    folder = Path(folder)
    destination = Path(out) if out is not None else folder / "report.html"
    return write_text_atomic(destination, render_report(folder, title=title))
