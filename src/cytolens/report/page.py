"""The report page: a summary first, then one section per capability, every figure embedded.

A capability builds its :class:`ReportSection` from its own run (``cytolens.<capability>.report_section``);
this module knows nothing about any capability. The page is one self-contained HTML file: figures are data URIs,
the style sheet is inline, and nothing is fetched, so it can be mailed or archived on its own. Its body is at
most 1200 px wide; tables scroll inside their own box and images shrink to fit, so nothing is wider than a
1280-px window.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cytolens.core.atomic import write_text_atomic
from cytolens.report.provenance import Provenance, provenance_html

__all__ = ["ReportFigure", "Headline", "ReportSection", "Summary", "figure_html", "render_page", "write_report"]


@dataclass(frozen=True)
class Headline:
    """One headline number of the summary, ours beside the paper's.

    Attributes
    ----------
    label : str
        What is measured, in words (``"3-class test accuracy, CNN+T+S"``).
    ours : str
        Our value, formatted, with its interval (``"57.0 % (51.2–62.6)"``).
    paper : str or None
        The paper's value, formatted; None where the run is not the paper's task.
    """

    label: str
    ours: str
    paper: str | None = None


@dataclass(frozen=True)
class Summary:
    """A capability's line in the summary: its headline numbers and one honest sentence on the difference."""

    headlines: list[Headline]
    sentence: str


@dataclass(frozen=True)
class ReportFigure:
    """An image for the page: PNG bytes (or a PNG file) and a caption in words."""

    png: bytes | Path
    caption: str

    def data(self) -> bytes:
        return self.png.read_bytes() if isinstance(self.png, Path) else self.png


@dataclass
class ReportSection:
    """One capability's part of the report, in the order a reader needs it.

    Attributes
    ----------
    key : str
        The anchor (``classify``); unique on a page.
    title : str
        The heading.
    summary : Summary or None
        The capability's line in the summary at the top (None: nothing to summarise yet).
    method : list of str
        HTML blocks saying what was done on what data.
    examples : list of ReportFigure
        A few example images of the data.
    results : list of str
        HTML blocks: the paper's tables with ours (see :func:`cytolens.report.tables.table_html`).
    figures : list of ReportFigure
        Figures of the results, with captions in words.
    provenance : list of Provenance
        Where the results came from (one per run the section draws on).
    """

    key: str
    title: str
    summary: Summary | None = None
    method: list[str] = field(default_factory=list)
    examples: list[ReportFigure] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    figures: list[ReportFigure] = field(default_factory=list)
    provenance: list[Provenance] = field(default_factory=list)


def figure_html(figure: ReportFigure) -> str:
    """A ``<figure>`` with the image embedded as a data URI and its caption."""
    data = base64.b64encode(figure.data()).decode("ascii")
    caption = html.escape(figure.caption)
    return (f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
            f"<figcaption>{caption}</figcaption></figure>")


_STYLE = """
*, *::before, *::after { box-sizing: border-box; }
body { font-family: system-ui, sans-serif; line-height: 1.45; max-width: 1200px; margin: 1.5em auto;
       padding: 0 1em; color: #222; overflow-wrap: anywhere; }
h1 { font-size: 1.6em; margin-bottom: .2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2.2em; }
h3 { margin-top: 1.6em; font-size: 1.1em; }
nav a { margin-right: 1em; }
.table-box { overflow-x: auto; max-width: 100%; margin: .8em 0; }
table { border-collapse: collapse; font-size: .88em; }
/* A table a fragment brings without a box of its own scrolls by itself. */
section > table, .fragment table { display: block; overflow-x: auto; max-width: 100%; }
.table-caption { font-size: .92em; color: #444; margin: 1em 0 .2em; }
th, td { border: 1px solid #ddd; padding: .3em .55em; text-align: right; vertical-align: top; }
.table-box th, .table-box td { white-space: nowrap; }
.table-box .text { white-space: normal; min-width: 14em; text-align: left; }
thead th { background: #f4f4f4; text-align: center; }
tbody th { text-align: left; font-weight: normal; background: #fafafa; }
table.summary { width: 100%; }
.summary td, .summary th { text-align: left; white-space: normal; }
.summary td.number { text-align: right; white-space: nowrap; }
/* capability, measure, this run, paper, sentence */
.summary thead th:nth-child(1) { width: 15%; }
.summary thead th:nth-child(2) { width: 25%; }
.summary thead th:nth-child(5) { width: 36%; }
figure { display: inline-block; vertical-align: top; margin: .5em 1em .8em 0; max-width: 100%; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #ddd; }
figure.half { max-width: calc(50% - 1em); }
figcaption { font-size: .85em; color: #444; max-width: 60em; }
.note { font-size: .88em; color: #555; }
code { font-size: .9em; word-break: break-all; }
dl.provenance { display: grid; grid-template-columns: max-content minmax(0, 1fr); gap: .2em 1em;
                font-size: .9em; }
dl.provenance dt { font-weight: 600; }
dl.provenance dd { margin: 0; }
dl.provenance ul { margin: 0; padding-left: 1.2em; }
"""


def _summary_html(sections: Sequence[ReportSection]) -> str:
    rows = []
    for section in sections:
        summary = section.summary
        if summary is None:
            continue
        headlines = summary.headlines or [Headline("—", "—")]
        for position, headline in enumerate(headlines):
            first = position == 0
            span = f' rowspan="{len(headlines)}"' if len(headlines) > 1 else ""
            cells = (f'<th scope="row"{span}><a href="#{html.escape(section.key)}">{html.escape(section.title)}'
                     "</a></th>" if first else "")
            cells += (f"<td>{html.escape(headline.label)}</td><td class=\"number\">{html.escape(headline.ours)}</td>"
                      f"<td class=\"number\">{html.escape(headline.paper or '—')}</td>")
            if first:
                cells += f'<td class="sentence"{span}>{html.escape(summary.sentence)}</td>'
            rows.append(f"<tr>{cells}</tr>")
    if not rows:
        return ""
    return ('<section id="summary"><h2>Summary</h2><div class="table-box"><table class="summary"><thead><tr>'
            "<th>capability</th><th>measure</th><th>this run</th><th>paper</th><th>what the difference means</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div></section>")


def _gallery(figures: Sequence[ReportFigure], *, half: bool) -> str:
    if not figures:
        return ""
    html_figures = [figure_html(f) for f in figures]
    if half and len(figures) > 1:  # small figures two by two; a single one keeps its natural width
        html_figures = [h.replace("<figure>", '<figure class="half">', 1) for h in html_figures]
    return "".join(html_figures)


def _section_html(section: ReportSection) -> str:
    parts = [f'<section id="{html.escape(section.key)}"><h2>{html.escape(section.title)}</h2>']
    if section.method or section.examples:
        parts.append("<h3>What was done, on what data</h3>")
        parts += section.method
        parts.append(_gallery(section.examples, half=True))
    if section.results:
        parts.append("<h3>Results</h3>")
        parts += section.results
    if section.figures:
        parts.append("<h3>Figures</h3>")
        parts.append(_gallery(section.figures, half=True))
    for provenance in section.provenance:
        parts.append("<h3>Provenance</h3>")
        parts.append(provenance_html(provenance))
    parts.append("</section>")
    return "\n".join(parts)


def render_page(sections: Sequence[ReportSection], *, title: str, note: str | None = None) -> str:
    """The HTML page: title, summary, one section per capability.

    Parameters
    ----------
    sections : sequence of ReportSection
        In the order they appear; an empty sequence gives a page saying there are no results yet.
    title : str
        The page's title and heading.
    note : str, optional
        A sentence under the title (where the results came from).

    Returns
    -------
    str
    """
    from cytolens import __version__

    nav = "".join(f'<a href="#{html.escape(s.key)}">{html.escape(s.title)}</a>' for s in sections)
    body = [_summary_html(sections)] + [_section_html(s) for s in sections]
    if not sections:
        body.append("<p>No results found in this folder yet.</p>")
    lead = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1>{lead}<nav>{nav}</nav>\n" + "\n".join(b for b in body if b)
        + f'\n<p class="note">Written by cytolens {html.escape(__version__)}. Every number on this page is read '
        "from the files of the run it names.</p>\n</body></html>\n"
    )


def write_report(sections: Sequence[ReportSection], out: str | Path, *, title: str, note: str | None = None) -> Path:
    """Write :func:`render_page` to ``out`` atomically and return its path."""
    return write_text_atomic(Path(out), render_page(sections, title=title, note=note))
