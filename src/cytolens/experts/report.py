"""Write the experts' tables (CSV and markdown) and the HTML section of the report.

``cytolens experts score`` calls :func:`write_expert_report`; :func:`render_experts_section` returns the
section as an HTML fragment that a global report can include (:func:`section_for_folder`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from cytolens.core.atomic import write_text_atomic
from cytolens.core.errors import CytolensError
from cytolens.data.tasks import SHPILMAN2017_CLASSES
from cytolens.experts.scoring import (
    NO_MAJORITY,
    PAPER_TABLE_I,
    Comparison,
    TaskScores,
    method_order,
    answer_column,
    compare_with_predictions,
    read_predictions,
    score_answers,
)
from cytolens.experts.store import ExpertStore
from cytolens.report.page import Headline, ReportSection, Summary
from cytolens.report.tables import format_interval, format_percent


@dataclass
class ExpertReport:
    """What ``experts score`` computed: the tasks' scores, Table IV (if predictions were given) and notes."""

    db: str
    images_root: str | None
    scores: list[TaskScores]
    comparisons: list[Comparison]
    predictions: str | None = None
    notes: list[str] = field(default_factory=list)


def _pct(value: float) -> float:
    return round(100 * value, 2) if not math.isnan(value) else float("nan")


def table_i(scores: list[TaskScores]) -> pd.DataFrame:
    """Table I: per task the experts' average, best expert's and vote's accuracy (%), and the paper's if it applies.

    The paper's columns are there only when the test set's classes are the paper's (``0``, ``0.1``, ``1``).
    """
    rows = []
    # The paper's numbers only for a test set of the paper's classes; other datasets get no paper columns.
    papers = any(set(result.test_classes) == set(SHPILMAN2017_CLASSES) for result in scores)
    for result in scores:
        row = {
            "task": result.task,
            "images": len(result.per_image),
            "experts": len(result.experts),
            "average": _pct(result.average),
            "best expert": _pct(result.best.accuracy),
            "best expert name": result.best.expert,
            "voting": _pct(result.vote_accuracy),
            "no majority": result.ties,
        }
        if papers:
            paper = PAPER_TABLE_I.get(result.task, (np.nan, np.nan, np.nan))
            row.update({"paper average": paper[0], "paper best expert": paper[1], "paper voting": paper[2]})
        rows.append(row)
    return pd.DataFrame(rows)


def experts_table(scores: list[TaskScores]) -> pd.DataFrame:
    """Every expert's accuracy per task with a 95% Wilson interval."""
    rows = []
    for result in scores:
        for expert in result.experts:
            low, high = expert.ci95
            rows.append(
                {
                    "task": result.task,
                    "expert": expert.expert,
                    "answered": expert.answered,
                    "correct": expert.correct,
                    "accuracy": _pct(expert.accuracy),
                    "95% CI": f"{100 * low:.1f}–{100 * high:.1f}",
                    "complete": expert.complete,
                }
            )
    return pd.DataFrame(rows)


def table_iv(comparisons: list[Comparison]) -> pd.DataFrame:
    """Table IV: accuracy (%) of the best expert, the vote and each method on the same images."""
    names = (m for c in comparisons for m in c.accuracies if m not in ("best expert", "vote"))
    methods = method_order(list(dict.fromkeys(names)))
    rows = []
    for comparison in comparisons:
        row: dict[str, object] = {
            "task": comparison.task,
            "images": comparison.n,
            "best expert name": comparison.best_expert,
            "best expert": _pct(comparison.accuracies["best expert"]),
            "voting": _pct(comparison.accuracies["vote"]),
        }
        for method in methods:
            row[method] = _pct(comparison.accuracies.get(method, float("nan")))
        rows.append(row)
    return pd.DataFrame(rows)


def tests_table(comparisons: list[Comparison]) -> pd.DataFrame:
    """Each method against the best expert and the vote: paired t-test and McNemar's exact test."""
    return pd.DataFrame([test for comparison in comparisons for test in comparison.tests])


def _cell(column: str, value: object) -> str:
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return ""
        if column.endswith(" p"):
            return f"{value:.3g}"
        return f"{value:.2f}"
    return str(value)


def markdown(table: pd.DataFrame, *, index: bool = False) -> str:
    """A pipe table of a DataFrame (floats with 2 decimals, p-values with 3 significant digits)."""
    frame = table.reset_index(names="") if index else table
    columns = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_cell(c, v) for c, v in zip(columns, row, strict=True)) + " |")
    return "\n".join(lines)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text.replace(" vs ", "_vs_")).strip("_") or "x"


def _html_table(table: pd.DataFrame, *, index: bool = False) -> Markup:
    frame = table.reset_index(names="") if index else table
    columns = [str(c) for c in frame.columns]
    env = Environment(autoescape=True)
    template = env.from_string(
        "<table><thead><tr>{% for c in columns %}<th>{{ c }}</th>{% endfor %}</tr></thead><tbody>"
        "{% for row in rows %}<tr>{% for v in row %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</tbody></table>"
    )
    rows = [[_cell(c, v) for c, v in zip(columns, row, strict=True)] for row in frame.itertuples(index=False)]
    return Markup(template.render(columns=columns, rows=rows))


def _environment() -> Environment:
    return Environment(loader=PackageLoader("cytolens.experts", "templates"), autoescape=select_autoescape(default=True))


def render_experts_section(report: ExpertReport) -> str:
    """The experts' section of an HTML report: Tables I–IV, the per-expert table, tests and notes.

    Parameters
    ----------
    report : ExpertReport
        From :func:`write_expert_report` (or built by :func:`build_expert_report`).

    Returns
    -------
    str
        An HTML fragment (one ``<div class="cytolens-experts">`` with ``<h3>`` headings; the page around it
        gives the section its ``<h2>``) with no external assets, safe to embed: every value from the database is
        escaped. :func:`section_for_folder` puts the ``experts_section.html`` file it is written to in the report.
    """
    confusions = [
        {"task": r.task, "table": _html_table(r.vote_confusion(), index=True), "ties": r.ties} for r in report.scores
    ]
    return _environment().get_template("section.html").render(
        report=report,
        table_i=_html_table(table_i(report.scores)),
        experts=_html_table(experts_table(report.scores)),
        confusions=confusions,
        table_iv=_html_table(table_iv(report.comparisons)) if report.comparisons else None,
        tests=_html_table(tests_table(report.comparisons)) if report.comparisons else None,
        skipped=[(r.task, e) for r in report.scores for e in r.skipped],
        no_majority=NO_MAJORITY,
    )


def build_expert_report(
    db: str | Path,
    *,
    predictions: str | Path | None = None,
    include_unfinished: bool = False,
) -> ExpertReport:
    """Score a study's database (and compare with a classification run's predictions, if given).

    Raises
    ------
    CytolensError
        If the database is missing or has no answers that can be scored, or the predictions file is not one.
    """
    store = ExpertStore(db)
    table = read_predictions(predictions) if predictions is not None else None
    answers = store.answers()
    if answers.empty:
        raise CytolensError("the scoring database has no answers yet", path=store.path)
    scores = score_answers(answers, store.images(), include_unfinished=include_unfinished)
    notes = []
    scored = {r.task for r in scores}
    for task in dict.fromkeys(answers["task"]):
        if task not in scored:
            notes.append(
                f"task {task!r}: no expert has answered every image yet "
                "(score with --include-unfinished to use partial answers)"
            )
    if not scores:
        raise CytolensError(
            "no expert has finished a task yet; use --include-unfinished to score partial answers", path=store.path
        )
    comparisons = compare_with_predictions(scores, table) if table is not None else []
    if table is not None:
        missing = [r.task for r in scores if r.task not in {c.task for c in comparisons}]
        notes.extend(f"task {t!r}: no comparable predictions in {table.attrs['source']}" for t in missing)
    for result in scores:
        notes.extend(result.notes)
    return ExpertReport(
        db=str(store.path),
        images_root=store.meta("images_root"),
        scores=scores,
        comparisons=comparisons,
        predictions=None if table is None else str(table.attrs["source"]),
        notes=notes,
    )


def write_expert_report(
    db: str | Path,
    out: str | Path,
    *,
    predictions: str | Path | None = None,
    include_unfinished: bool = False,
) -> ExpertReport:
    """Score a study and write every table to ``out``.

    Writes ``table_i.csv``/``.md``, ``experts.csv``, ``confusion/vote__<task>.csv`` and
    ``confusion/<expert>__<task>.csv`` (rows = guess, columns = true class, as in the paper),
    ``tables_ii_iii.md``, ``answers.csv`` (every answer with its times), ``scores.json``, with predictions
    ``table_iv_experts.csv``/``.md`` and ``table_iv_experts_tests.csv``/``.md``, and ``experts_section.html``
    with a self-contained ``report.html`` around it. Use a folder of its own, e.g. ``RUN/experts`` (where
    ``cytolens report RUN`` finds the section).

    Raises
    ------
    CytolensError
        If ``out`` is a classification run folder (its own tables and report would be overwritten).
    """
    out = Path(out)
    if (out / "config.yaml").is_file() and (out / "manifest.parquet").is_file():
        raise CytolensError(
            f"is a run folder; write the experts' tables to a folder of their own, e.g. {out / 'experts'}", path=out
        )
    report = build_expert_report(db, predictions=predictions, include_unfinished=include_unfinished)
    table = table_i(report.scores)
    write_text_atomic(out / "table_i.csv", table.to_csv(index=False))
    write_text_atomic(out / "table_i.md", markdown(table) + "\n")
    write_text_atomic(out / "experts.csv", experts_table(report.scores).to_csv(index=False))
    sections = []
    for result in report.scores:
        vote = result.vote_confusion()
        write_text_atomic(out / "confusion" / f"vote__{_slug(result.task)}.csv", vote.to_csv())
        for expert in result.experts:
            matrix = result.expert_confusion(expert.expert)
            write_text_atomic(out / "confusion" / f"{_slug(expert.expert)}__{_slug(result.task)}.csv", matrix.to_csv())
        title = f"### {result.task} (majority vote of {len(result.experts)} experts)"
        sections.append(f"{title}\n\n{markdown(vote, index=True)}\n")
    write_text_atomic(out / "tables_ii_iii.md", "\n".join(sections))
    write_text_atomic(out / "answers.csv", ExpertStore(db).answers().drop(columns=["choices"]).to_csv(index=False))
    if report.comparisons:
        write_text_atomic(out / "table_iv_experts.csv", table_iv(report.comparisons).to_csv(index=False))
        write_text_atomic(out / "table_iv_experts.md", markdown(table_iv(report.comparisons)) + "\n")
        write_text_atomic(out / "table_iv_experts_tests.csv", tests_table(report.comparisons).to_csv(index=False))
        write_text_atomic(out / "table_iv_experts_tests.md", markdown(tests_table(report.comparisons)) + "\n")
    write_text_atomic(out / "scores.json", json.dumps(_summary(report), indent=2, default=_json_default) + "\n")
    section = render_experts_section(report)
    write_text_atomic(out / "experts_section.html", section)
    write_text_atomic(out / "report.html", _environment().get_template("report.html").render(section=Markup(section)))
    return report


def _summary(report: ExpertReport) -> dict[str, object]:
    tasks = {}
    for result in report.scores:
        tasks[result.task] = {
            "classes": list(result.classes),
            "images": len(result.per_image),
            "experts": {
                e.expert: {
                    "answered": e.answered, "correct": e.correct, "accuracy": e.accuracy, "ci95": list(e.ci95),
                    "complete": e.complete,
                }
                for e in result.experts
            },
            "skipped": result.skipped,
            "average": result.average,
            "best_expert": result.best.expert,
            "best_accuracy": result.best.accuracy,
            "vote_accuracy": result.vote_accuracy,
            "vote_correct": result.vote_correct,
            "no_majority": result.ties,
            "vote_confusion": result.vote_confusion().to_dict(orient="index"),
            "per_image_votes": result.per_image[["key", "class", "vote"]].to_dict(orient="records"),
            "answer_columns": [answer_column(e.expert) for e in result.experts],
        }
    return {
        "db": report.db,
        "images_root": report.images_root,
        "predictions": report.predictions,
        "tasks": tasks,
        "table_iv": [
            {"task": c.task, "images": c.n, "best_expert": c.best_expert, "accuracies": c.accuracies, "tests": c.tests}
            for c in report.comparisons
        ],
        "notes": report.notes,
    }


def _json_default(value: object) -> object:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def section_for_folder(folder: Path) -> ReportSection | None:
    """The experts' section of the report, from a folder ``cytolens experts score`` wrote (None: not one).

    The scored tables are the ``experts_section.html`` fragment; the summary compares the best expert and the
    vote on the first task (the one with every class) with the paper's Table I, read from ``scores.json``.
    """
    fragment = folder / "experts_section.html"
    if not fragment.is_file():
        return None
    section = ReportSection("experts", "Human experts versus the CNN")
    section.results.append(f'<div class="fragment">{fragment.read_text(encoding="utf-8")}</div>')
    scores_path = folder / "scores.json"
    tasks = json.loads(scores_path.read_text(encoding="utf-8")).get("tasks", {}) if scores_path.is_file() else {}
    if tasks:
        name, task = next(iter(tasks.items()))
        best = task["experts"][task["best_expert"]]
        paper = PAPER_TABLE_I.get(name)
        headlines = [
            Headline(f"{name}: best expert ({task['best_expert']})", format_interval(best["accuracy"], *best["ci95"]),
                     format_percent(paper[1], scale=1) if paper else None),
            Headline(f"{name}: experts' vote", format_percent(task["vote_accuracy"]),
                     format_percent(paper[2], scale=1) if paper else None),
        ]
        if paper:
            difference = 100 * best["accuracy"] - paper[1]
            sentence = (f"The best of {len(task['experts'])} experts is {abs(difference):.1f} points "
                        f"{'above' if difference > 0 else 'below'} the paper's best expert, on {task['images']} "
                        "images; the best expert is picked on the test set itself, as in the paper, which flatters "
                        "the experts.")
        else:
            sentence = (f"{len(task['experts'])} experts scored {task['images']} images; the paper has no number "
                        "for this task.")
        section.summary = Summary(headlines, sentence)
    return section
