"""The report a biologist reads: a summary against the papers first, then each capability's section with readable
tables, figures captioned in words and the run's provenance; built from real tiny runs of each capability."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_runs import tiny_demo  # noqa: F401 (a fixture)

from cytolens.core.errors import CytolensError
from cytolens.report.page import Headline, ReportFigure, ReportSection, Summary, render_page
from cytolens.report.tables import format_interval, table_html
from cytolens.run_report import collect_sections, write_run_report


class _Page(HTMLParser):
    """The page's section ids in order, table headers, image captions and provenance terms."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.headers: list[str] = []
        self.captions: list[str] = []
        self.terms: list[str] = []
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "section":
            self.sections.append(dict(attrs).get("id") or "")
        if tag in ("thead", "figcaption", "dt"):
            self._open = tag
        if tag == "th" and self._open == "thead":
            self.headers.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("thead", "figcaption", "dt"):
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open == "thead" and self.headers:
            self.headers[-1] += data
        elif self._open == "figcaption":
            self.captions.append(data)
        elif self._open == "dt":
            self.terms.append(data)


def parse(page: str) -> _Page:
    parsed = _Page()
    parsed.feed(page)
    return parsed


def test_intervals_and_tables_read_as_numbers_people_use() -> None:
    assert format_interval(0.57, 0.512, 0.626) == "57.0 % (51.2–62.6)"
    assert format_interval(0.9102, None, None, scale=1, digits=3, unit="") == "0.910"
    assert format_interval(float("nan"), 0.1, 0.2) == "—"
    frame = pd.DataFrame({"ci95_low": [0.25], "per_compound_mean_accuracy": [np.nan], "n": [12345]})
    html = table_html(frame, columns={"ci95_low": "95 % interval, low"}, caption="A table.")
    assert "95 % interval, low" in html and "per compound mean accuracy" in html and "ci95_low" not in html
    assert "12,345" in html and "—" in html and 'class="table-box"' in html
    assert frame.columns.tolist() == ["ci95_low", "per_compound_mean_accuracy", "n"]  # input not modified


def test_summary_comes_first_and_says_so_without_a_paper_number() -> None:
    sections = [ReportSection("a", "Capability A", Summary([Headline("accuracy", "50.0 % (40.0–60.0)", "66.0 %")],
                                                           "16.0 points below the paper.")),
                ReportSection("b", "Capability B", Summary([Headline("dice", "0.800")], "No paper number."),
                              figures=[ReportFigure(b"\x89PNG fake", "A figure <in> words")])]
    page = render_page(sections, title="t")
    assert parse(page).sections == ["summary", "a", "b"]
    assert "16.0 points below the paper." in page and "A figure &lt;in&gt; words" in page
    assert render_page([], title="t").count("No results found") == 1


def test_demo_report_summary_tables_captions_and_provenance(tiny_demo: Path, tmp_path: Path) -> None:
    page_path, sections = write_run_report(tiny_demo, out=tmp_path / "report.html", title="demo")
    assert [s.key for s in sections] == ["classify", "segment", "profile"]
    page = page_path.read_text(encoding="utf-8")
    parsed = parse(page)
    assert parsed.sections == ["summary", "classify", "segment", "profile"]
    summary = page[page.index('id="summary"'):page.index('id="classify"')]
    # Each capability's headline with its paper value and a sentence computed from the numbers.
    assert "3 classes: test accuracy, best CNN" in summary and "66.0 %" in summary  # the paper's CNN+T+S
    assert re.search(r"\d+\.\d points (above|below) the paper", summary)
    assert "validation mean dice" in summary and "0.910" in summary  # the paper's U-Net
    assert "NSC, per-compound mean" in summary and "random-weights control" in summary
    # Readable column names: no raw CSV names anywhere in a header, intervals beside their values.
    raw = {"ci95_low", "ci95_high", "per_compound_mean_accuracy", "accuracy_over_treatments", "n_test",
           "n_treatments"}
    assert not raw & {h.strip() for h in parsed.headers} and "ci95_low" not in page
    assert re.search(r"\d+\.\d % \(\d+\.\d–\d+\.\d\)", page)
    assert "1-NN accuracy over treatments (95 % interval)" in parsed.headers
    # Captions are sentences, not file slugs.
    assert parsed.captions and all(" " in c and "__" not in c and not c.endswith(".png") for c in parsed.captions)
    assert page.count("data:image/png;base64,") == len(parsed.captions)
    # Provenance of each run: config, deviations, seed, versions, machine, precision, devices, time per step.
    for term in ("config", "deviations from the paper", "seed", "versions", "machine", "precision", "devices",
                 "time per step"):
        assert parsed.terms.count(term) == 3, term
    assert "midl2019-quick" in page and "cytogan-quick" in page and "torch " in page
    assert re.search(r"\d+\.\d+ s per step", page) and "not recorded" not in page


def test_paper_columns_appear_only_when_the_run_has_them(tiny_demo: Path, tmp_path: Path) -> None:
    run = tmp_path / "classify"
    shutil.copytree(tiny_demo / "classify", run)
    table = pd.read_csv(run / "table_iv.csv", dtype={"task": str})
    table.drop(columns=[c for c in table.columns if c.startswith("paper ")]).to_csv(run / "table_iv.csv", index=False)
    [section] = collect_sections(run)
    page = render_page([section], title="own classes")
    assert "paper:" not in page and "nothing to compare with" in section.summary.sentence
    assert all(h.paper is None for h in section.summary.headlines)


def test_each_capability_reports_its_own_folder_only(tiny_demo: Path, tmp_path: Path) -> None:
    assert [s.key for s in collect_sections(tiny_demo / "segment")] == ["segment"]
    assert [s.key for s in collect_sections(tiny_demo / "profile")] == ["profile"]
    assert [s.key for s in collect_sections(tiny_demo / "profile" / "evaluation")] == ["profile"]
    assert [s.key for s in collect_sections(tiny_demo / "profile" / "gan")] == ["profile"]
    # A segment run holding a classify table copied in by hand is still a segment run (its run.json says so).
    run = tmp_path / "segment"
    shutil.copytree(tiny_demo / "segment", run)
    shutil.copy(tiny_demo / "classify" / "table_iv.csv", run / "table_iv.csv")
    assert [s.key for s in collect_sections(run)] == ["segment"]


def test_report_command_writes_the_page_and_names_a_bad_folder(tiny_demo: Path, tmp_path: Path, cli) -> None:
    result = cli("report", tiny_demo / "classify", "--out", tmp_path / "page.html")
    assert (tmp_path / "page.html").read_text().startswith("<!DOCTYPE html>")
    assert "(classify)" in result.err
    for folder, problem in ((tmp_path / "missing", "no such folder"), (tmp_path, "nothing to report")):
        error = cli("report", folder, code=2).error
        assert str(folder) in error and problem in error
    with pytest.raises(CytolensError, match="nothing to report"):
        write_run_report(tiny_demo / "data")


def test_unfinished_evaluation_is_said_not_hidden(tiny_demo: Path, tmp_path: Path) -> None:
    run = tmp_path / "segment"
    shutil.copytree(tiny_demo / "segment", run, ignore=shutil.ignore_patterns("evaluation", "predictions"))
    [section] = collect_sections(run)
    assert "segment evaluate" in section.summary.sentence and not section.results
    info = json.loads((run / "run.json").read_text())
    assert section.provenance[0].config == info["config_name"]


def test_undefined_per_class_scores_show_as_missing(tiny_demo: Path, tmp_path: Path) -> None:
    run = tmp_path / "segment"
    shutil.copytree(tiny_demo / "segment", run)
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    metrics["precision"]["nucleus"] = None  # a class the model never predicted
    (run / "evaluation" / "metrics.json").write_text(json.dumps(metrics))
    [section] = collect_sections(run)
    assert "<td>—</td>" in section.results[1]
