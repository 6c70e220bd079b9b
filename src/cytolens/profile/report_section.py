"""The profiling section of the report: MOA accuracy (NSC / NSCB) of the GAN's profiles beside the random-weights
control, the classical features and the paper's Table 1; the GAN's training; provenance.

It reports a GAN run folder (``cytolens profile train``), an evaluation folder (``cytolens profile evaluate``:
``table1.csv`` and ``moa_accuracy.csv``, and ``map_summary.csv`` when mAP was computed), or a folder holding both
as ``gan/`` and ``evaluation/`` (the demo's). Every table's caption names the measure it shows.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from cytolens.core.errors import CytolensError
from cytolens.core.files import read_json_object
from cytolens.engine.run_folder import RunRecord, load_run
from cytolens.profile.gan.config import GanConfig
from cytolens.report.page import Headline, ReportFigure, ReportSection, Summary
from cytolens.report.provenance import run_provenance
from cytolens.report.tables import format_interval, format_percent, table_html

__all__ = ["report_section", "section_for_folder"]

TITLE = "Morphological profiling with a GAN (CytoGAN 2017)"
RANDOM_CONTROL = "random"
CLASSICAL = "classical"

#: Captions of the figures the demo collects in ``figures/`` (and of a GAN run's own), by file name.
CAPTIONS = {
    "gan_loss_curves.png": "The GAN's training: discriminator and generator losses, the discriminator's mean output "
                           "on real and generated cells, and seconds per step.",
    "loss_curves.png": "The GAN's training: discriminator and generator losses, the discriminator's mean output on "
                       "real and generated cells, and seconds per step.",
    "gan_real_vs_generated.png": "Real cells beside cells the trained generator drew.",
    "treatment_map.png": "Treatment profiles of the GAN's features on their first two principal components, "
                         "coloured by MOA: MOAs that form their own clusters are the ones the profiles tell apart.",
}
EXAMPLES = "Single-cell crops of the screen, one row per MOA (red DNA, green tubulin, blue actin)."

#: Readable names of ``moa_accuracy.csv``'s columns.
ACCURACY_COLUMNS = {
    "profiles": "profiles", "aggregation": "treatment profile", "protocol": "protocol",
    "accuracy": "1-NN accuracy over treatments (95 % interval)", "correct": "correct / treatments",
    "per_compound_mean_accuracy": "per-compound mean accuracy (CytoGAN's measure)", "n_compounds": "compounds",
    "n_moas": "MOAs", "n_without_neighbour": "treatments without an allowed neighbour",
    "mean_average_precision": "mean AP of same-MOA treatments among the candidates (no p-value)",
}
#: Readable names of ``map_summary.csv``'s columns.
MAP_COLUMNS = {
    "profiles": "profiles", "aggregation": "treatment profile", "measure": "measure", "profiled": "profiles ranked",
    "n_queries": "queries", "mean_map": "mean mAP", "retrieved": "retrieved (q < 0.05)",
    "fraction_retrieved": "fraction retrieved",
}
AGGREGATIONS = {"cytogan": "mean of cells (CytoGAN)", "bbbc021": "DMSO-normalised, well mean, replicate median"}


def _gan_record(path: Path) -> RunRecord[GanConfig] | None:
    try:
        return load_run(path, "profile-gan", GanConfig)
    except CytolensError:
        return None


def _evaluation_folder(folder: Path) -> Path | None:
    for candidate in (folder / "evaluation", folder):
        if (candidate / "table1.csv").is_file() and (candidate / "moa_accuracy.csv").is_file():
            return candidate
    return None


def _gan_of_evaluation(evaluation: Path) -> RunRecord[GanConfig] | None:
    """The GAN run whose discriminator made the evaluated profiles, as ``metrics.json`` records it."""
    try:
        metrics = json.loads((evaluation / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for profile in metrics.get("profiles", []):
        identity = (profile.get("info") or {}).get("identity") or {}
        if identity.get("kind") == "gan" and identity.get("run"):
            record = _gan_record(Path(identity["run"]))
            if record is not None:
                return record
    return None


def section_for_folder(folder: Path) -> ReportSection | None:
    """The profiling section of ``folder`` (see the module docstring), or None if it holds neither a GAN run
    nor an evaluation."""
    evaluation = _evaluation_folder(folder)
    gan = _gan_record(folder) or _gan_record(folder / "gan")
    if gan is None and evaluation is not None:
        gan = _gan_of_evaluation(evaluation)
    if gan is None and evaluation is None:
        return None
    return report_section(gan, evaluation=evaluation, figures=folder / "figures")


def _nsc_cell(rows: pd.DataFrame, protocol: str) -> str:
    row = rows[rows["protocol"] == protocol]
    if row.empty:
        return "—"
    first = row.iloc[0]
    return format_interval(first["accuracy_over_treatments"], first["ci95_low"], first["ci95_high"])


def _summary(accuracy: pd.DataFrame | None, table1: pd.DataFrame | None, gan: RunRecord[GanConfig] | None) -> Summary:
    if accuracy is None or table1 is None:
        return _training_summary([], gan)
    protocol = accuracy[accuracy["aggregation"] == "bbbc021"]
    cytogan = accuracy[(accuracy["aggregation"] == "cytogan") & (accuracy["protocol"] == "NSC")]
    trained = [p for p in dict.fromkeys(accuracy["profiles"])
               if accuracy.loc[accuracy["profiles"] == p, "method"].iloc[0] not in (RANDOM_CONTROL, CLASSICAL)]
    control = [p for p in dict.fromkeys(accuracy["profiles"])
               if accuracy.loc[accuracy["profiles"] == p, "method"].iloc[0] == RANDOM_CONTROL]
    headlines, parts = [], []
    for name in trained + control:
        rows = protocol[protocol["profiles"] == name]
        headlines.append(Headline(f"{name}: NSC / NSCB over treatments (BBBC021 protocol)",
                                  f"{_nsc_cell(rows, 'NSC')} / {_nsc_cell(rows, 'NSCB')}"))
    if trained:
        name = trained[0]
        method = str(accuracy.loc[accuracy["profiles"] == name, "method"].iloc[0])
        ours = cytogan.loc[cytogan["profiles"] == name, "per_compound_mean_accuracy"]
        paper = _paper_value(table1, method)
        if len(ours):
            headlines.insert(0, Headline(f"{name}: NSC, per-compound mean (the paper's measure)",
                                         format_percent(ours.iloc[0]),
                                         format_percent(paper, scale=1) if paper is not None else None))
        nsc = protocol[(protocol["protocol"] == "NSC")].set_index("profiles")["accuracy_over_treatments"]
        if control and name in nsc.index and control[0] in nsc.index:
            difference = 100 * (nsc[name] - nsc[control[0]])
            parts.append(f"The trained {name} is {abs(difference):.1f} points {'above' if difference > 0 else 'below'}"
                         f" the random-weights control on NSC" if abs(difference) >= 0.05 else
                         f"The trained {name} is no better than the random-weights control on NSC")
        if paper is not None and len(ours):
            difference = 100 * ours.iloc[0] - paper
            parts.append(f"{abs(difference):.1f} points {'above' if difference > 0 else 'below'} the paper's "
                         f"{paper:.0f} % (which is on the real BBBC021 data)")
    return _training_summary(parts, gan, headlines=headlines, evaluated=bool(trained))


def _training_summary(parts: list[str], gan: RunRecord[GanConfig] | None, *, headlines: list[Headline] | None = None,
                      evaluated: bool = False) -> Summary:
    """The summary's sentence: the comparisons in ``parts``, then how long the GAN trained."""
    if not evaluated and gan is not None:
        parts.append("The GAN has not been evaluated yet: embed the cells and run 'cytolens profile evaluate'")
    if gan is not None and gan.done is not None:
        done = gan.done
        parts.append(f"the GAN trained {int(done.get('steps', 0)):,} steps ({done.get('epochs', '?')} epochs of "
                     f"{int(done.get('cells', 0)):,} cells, config {gan.config.name})")
    sentence = "; ".join(parts) + "." if parts else "No trained GAN among these profiles."
    return Summary(headlines or [], sentence[0].upper() + sentence[1:])


def _paper_value(table1: pd.DataFrame, method: str) -> float | None:
    """The paper's NSC per-compound mean for ``method`` (LSGAN 68 %), when Table 1 carries the paper's rows."""
    first = table1.columns[0]
    rows = table1[table1[first].astype(str).str.startswith("CytoGAN, final version")]
    column = next((c for c in table1.columns[1:] if str(c).lower() == method.lower()), None)
    if rows.empty or column is None or pd.isna(rows.iloc[0][column]):
        return None
    return float(rows.iloc[0][column])


def _table1_html(table1: pd.DataFrame) -> str:
    first = table1.columns[0]
    shown = pd.DataFrame({"": table1[first].astype(str)})
    for column in table1.columns[1:]:
        shown[str(column)] = [format_percent(v, scale=1) for v in table1[column]]
    papers = shown[""].str.startswith("CytoGAN").any()
    return table_html(shown, caption="Table 1: MOA accuracy (%) of each kind of profile, each row naming its "
                      "measure (NSC per-compound mean, NSC / NSCB over treatments)"
                      + (", the paper's rows (real BBBC021) above ours." if papers else "."))


def _accuracy_html(accuracy: pd.DataFrame) -> str:
    shown = pd.DataFrame({
        "profiles": accuracy["profiles"],
        "aggregation": accuracy["aggregation"].map(lambda a: AGGREGATIONS.get(a, a)),
        "protocol": accuracy["protocol"],
        "accuracy": [format_interval(v, lo, hi) for v, lo, hi in
                     zip(accuracy["accuracy_over_treatments"], accuracy["ci95_low"], accuracy["ci95_high"],
                         strict=True)],
        "correct": [f"{c} / {n}" for c, n in zip(accuracy["correct"], accuracy["n_treatments"], strict=True)],
        "per_compound_mean_accuracy": [format_percent(v) for v in accuracy["per_compound_mean_accuracy"]],
    })
    for column in ("n_compounds", "n_moas", "n_without_neighbour", "mean_average_precision"):
        if column in accuracy.columns and accuracy[column].notna().any():
            shown[column] = accuracy[column]
    return table_html(shown, columns=ACCURACY_COLUMNS, caption=(
        "NSC / NSCB accuracy: every profile and protocol's 1-nearest-neighbour (cosine) MOA accuracy over "
        "treatments with its 95 % Wilson interval, and CytoGAN's per-compound mean accuracy. NSC: the neighbour "
        "is from another compound; NSCB: also from another batch."))


def _map_html(summary: pd.DataFrame) -> str:
    shown = summary[["profiles", "aggregation", "measure", "profiled", "n_queries", "mean_map"]].copy()
    shown["aggregation"] = shown["aggregation"].map(lambda a: AGGREGATIONS.get(a, a))
    shown["retrieved"] = [f"{r} / {n}" for r, n in zip(summary["n_retrieved"], summary["n_queries"], strict=True)]
    shown["fraction_retrieved"] = [format_percent(v) for v in summary["fraction_retrieved"]]
    null_size = int(summary["null_size"].iloc[0]) if len(summary) else 0
    return table_html(shown, columns=MAP_COLUMNS, digits=3, caption=(
        "mAP (JUMP-style retrieval, cosine, copairs): phenotypic activity ranks each treatment's replicate wells "
        "among the DMSO wells (query = treatment); phenotypic consistency ranks the treatments of other compounds "
        "with the same MOA among those of other MOAs (query = MOA; the same compound never counts). p-values "
        f"from {null_size:,} random rankings with ties counted; fraction retrieved = queries with a "
        "Benjamini–Hochberg q < 0.05. Per-query values: map.csv."))


def _figures(figures: Path | None, evaluation: Path | None, gan: RunRecord[GanConfig] | None,
             accuracy: pd.DataFrame | None) -> tuple[list[ReportFigure], list[ReportFigure]]:
    """(examples, figures): the demo's collected figures, else the GAN run's and the evaluation's own."""
    examples: list[ReportFigure] = []
    found: list[ReportFigure] = []
    if figures is not None and figures.is_dir() and any(figures.glob("*.png")):
        for path in sorted(figures.glob("*.png")):
            if path.name == "cell_crops.png":
                examples.append(ReportFigure(path, EXAMPLES))
            elif path.name.startswith("confusion_"):
                name = path.stem.removeprefix("confusion_")
                found.append(ReportFigure(path, f"MOA confusion of the {name} profiles under NSC: rows are the true "
                                          "MOA, columns the MOA of the nearest treatment of another compound."))
            else:
                found.append(ReportFigure(path, CAPTIONS.get(path.name, path.stem.replace("_", " "))))
        return examples, found
    if gan is not None and (gan.path / "figures" / "loss_curves.png").is_file():
        found.append(ReportFigure(gan.path / "figures" / "loss_curves.png", CAPTIONS["loss_curves.png"]))
    if gan is not None:
        samples = sorted((gan.path / "samples").glob("*.png"))
        if samples:
            found.append(ReportFigure(samples[-1], f"Cells the generator drew at the last saved step "
                                      f"({samples[-1].stem.removeprefix('step').lstrip('0') or '0'})."))
    if evaluation is not None and accuracy is not None:
        for name in dict.fromkeys(accuracy["profiles"]):
            path = evaluation / _slug(str(name)) / "confusion_nsc.png"
            if path.is_file():
                found.append(ReportFigure(path, f"MOA confusion of the {name} profiles under NSC: rows are the true "
                                          "MOA, columns the MOA of the nearest treatment of another compound."))
    return examples, found


def _slug(text: str) -> str:
    """The folder name ``profile evaluate`` gives a profile's label (``random D (control)`` -> ``random_D_control``)."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "profiles"


def _time_per_step(gan: RunRecord[GanConfig]) -> str | None:
    done = gan.done or {}
    if not done.get("seconds_per_step"):
        return None
    rate = f", {done['samples_per_s']} cells/s" if done.get("samples_per_s") else ""
    wait = (f", {100 * float(done['data_wait_fraction']):.0f} % of it waiting for data"
            if done.get("data_wait_fraction") is not None else "")
    return f"{done['seconds_per_step']} s per step of {done.get('batch_size', '?')} cells{rate}{wait}"


def report_section(gan: RunRecord[GanConfig] | None, *, evaluation: Path | None = None,
                   figures: Path | None = None) -> ReportSection:
    """The profiling section from a GAN run and/or an evaluation folder.

    Parameters
    ----------
    gan : RunRecord of GanConfig or None
        From ``load_run(folder, "profile-gan", GanConfig)``: its training and provenance.
    evaluation : Path, optional
        A folder written by ``cytolens profile evaluate`` (``table1.csv``, ``moa_accuracy.csv``).
    figures : Path, optional
        A folder of collected figures (the demo's ``profile/figures``); without it the GAN run's and the
        evaluation's own figures are shown.

    Returns
    -------
    ReportSection
    """
    if gan is None and evaluation is None:
        raise ValueError("`gan` and `evaluation` cannot both be None")
    section = ReportSection("profile", TITLE)
    accuracy = pd.read_csv(evaluation / "moa_accuracy.csv") if evaluation is not None else None
    table1 = pd.read_csv(evaluation / "table1.csv") if evaluation is not None else None
    method = []
    if gan is not None:
        config, done = gan.config, gan.done or {}
        method.append(
            f"A {html.escape(config.model)} GAN trained on {done.get('cells', gan.info.get('n_cells', '?'))} "
            f"single-cell crops from <code>{html.escape(str(gan.info.get('cells', '?')))}</code> (DNA, tubulin and "
            f"actin as RGB), batch {config.batch_size}; "
            + (f"it trained {done.get('steps'):,} of {done.get('steps_planned'):,} planned steps, stopped by "
               f"{html.escape(str(done.get('stopped')))}." if done else "not finished yet.")
            + " Its discriminator's penultimate layer is each cell's profile.")
    if accuracy is not None:
        names = ", ".join(dict.fromkeys(accuracy["profiles"].astype(str)))
        method.append(
            f"Profiles compared on the same cells: {html.escape(names)}. Cell profiles are aggregated per treatment "
            "and each treatment's MOA is predicted by its nearest neighbour (cosine) from another compound (NSC) or "
            "also another batch (NSCB). The random-weights discriminator is the control a trained GAN must beat.")
    section.method = [f"<p>{p}</p>" for p in method]
    examples, found = _figures(figures, evaluation, gan, accuracy)
    section.examples, section.figures = examples, found
    section.summary = _summary(accuracy, table1, gan)
    if accuracy is not None and table1 is not None:
        section.results += [_table1_html(table1), _accuracy_html(accuracy)]
    if evaluation is not None and (evaluation / "map_summary.csv").is_file():
        summary = pd.read_csv(evaluation / "map_summary.csv")
        if len(summary):
            section.results.append(_map_html(summary))
    elif evaluation is not None and (evaluation / "metrics.json").is_file():
        # Say why there is no mAP table (an install without the eval extra), rather than leave it out silently.
        why = read_json_object(evaluation / "metrics.json").get("map")
        if isinstance(why, str) and why != "not requested":
            section.results.append(f'<p class="note">Not computed: {html.escape(why)}.</p>')
    if gan is not None:
        section.provenance.append(run_provenance(gan, time_per_step=_time_per_step(gan),
                                                 extra={"cells": str(gan.info.get("cells", "?"))}))
    return section
