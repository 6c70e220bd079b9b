"""``cytolens profile evaluate``: MOA accuracy of one or more profiles folders, and CytoGAN's Table 1 beside ours.

Each folder (written by ``profile embed``) holds ``treatments.parquet`` with one or more aggregations
(``cytogan``, ``bbbc021``, their ``+whiten`` variants; see :mod:`cytolens.profile.profiles`). Every aggregation
is scored under NSC and NSCB, with both measures (see :mod:`cytolens.profile.moa`).

Outputs in ``OUT`` (default ``PROFILES/evaluation`` for one folder):

``moa_accuracy.csv`` / ``.md``
    One row per folder × aggregation × protocol: accuracy over treatments with its Wilson 95 % interval,
    CytoGAN's per-compound mean, the counts, and (``average_precision``) the mean AP of MOA retrieval among the
    protocol's candidates, without a p-value.
``predictions.csv``
    Every query treatment's nearest neighbour.
``confusion_nsc.csv``, ``confusion_nsc.png``, ``confusion_nscb.csv``
    True against predicted MOA for the main aggregation (``bbbc021``); one sub-folder per profiles folder when
    several are evaluated.
``table1.csv`` / ``.md``
    CytoGAN's Table 1: the paper's numbers and ours, one column per method.
``map.csv``, ``map_summary.csv``, ``map.md``
    With copairs (the ``eval`` extra): JUMP-style mAP of phenotypic activity (per treatment) and consistency
    (per MOA) with p-values, q-values and the fraction retrieved (:mod:`cytolens.profile.retrieval`);
    ``map.csv`` has one row per query, ``map_summary.csv`` one per folder × aggregation × measure.
``metrics.json``
    All of the above as numbers, with the definitions.

Every table says which measure it shows: NSC / NSCB accuracy over treatments, CytoGAN's per-compound mean, mAP
of activity or consistency.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cytolens.core.atomic import write_text_atomic
from cytolens.core.errors import CytolensError
from cytolens.core.files import read_json_object, read_parquet_table
from cytolens.data.bbbc021 import MOAS as BBBC021_MOAS
from cytolens.profile.moa import MEASURES, NSCB_DROPPED_MOAS, PROTOCOLS, MoaResult, evaluate_moa
from cytolens.profile.profiles import PROFILE_JSON, TREATMENTS
from cytolens.profile.retrieval import (
    DEFAULT_NULL_SIZE, MEASURES as RETRIEVAL_MEASURES, MISSING_COPAIRS, RetrievalResult, copairs_available,
    import_copairs,
)
from cytolens.report.figures import new_figure, save_figure

__all__ = ["PAPER_TABLE1", "ProfilesEvaluation", "evaluate_folder", "table1", "table1_markdown", "write_evaluation"]

MAIN_AGGREGATION = "bbbc021"
# Table 1 columns: the paper's methods in its order, then the extra columns of ours.
PAPER_COLUMNS = (
    "DCGAN", "WGAN", "LSGAN", "LSGAN + whitening", "BiGAN", "VAE [15]", "CellProfiler [18]", "Deep Transfer [16]",
    "Deep Transfer [1]",
)
#: CytoGAN's published MOA accuracies (%, NSC, mean of per-compound accuracies). The final version reports
#: DCGAN 51, WGAN 56, LSGAN 68, LSGAN + whitening 76, BiGAN 70, CellProfiler 90, transfer learning 91 / 96;
#: the workshop draft in seeds/004 reports DCGAN 43, WGAN 45, LSGAN 63, VAE 49 and the same baselines.
PAPER_TABLE1: dict[str, dict[str, float | None]] = {
    "CytoGAN, final version: NSC, per-compound mean (%)": {
        "DCGAN": 51, "WGAN": 56, "LSGAN": 68, "LSGAN + whitening": 76, "BiGAN": 70, "VAE [15]": None,
        "CellProfiler [18]": 90, "Deep Transfer [16]": 91, "Deep Transfer [1]": 96,
    },
    "CytoGAN, workshop draft (seed 004 Table 1) (%)": {
        "DCGAN": 43, "WGAN": 45, "LSGAN": 63, "LSGAN + whitening": None, "BiGAN": None, "VAE [15]": 49,
        "CellProfiler [18]": 90, "Deep Transfer [16]": 91, "Deep Transfer [1]": 96,
    },
}
# Our rows: (label, aggregation, protocol, measure).
OUR_ROWS = (
    ("ours: NSC, per-compound mean (CytoGAN's measure; mean profile per treatment) (%)", "cytogan", "NSC",
     "per_compound"),
    ("ours: NSC, per-compound mean (CytoGAN's measure; BBBC021 protocol profiles) (%)", "bbbc021", "NSC",
     "per_compound"),
    ("ours: NSC over treatments (BBBC021 protocol: DMSO-normalised, well mean, replicate median) (%)", "bbbc021",
     "NSC", "treatments"),
    ("ours: NSCB over treatments (BBBC021 protocol) (%)", "bbbc021", "NSCB", "treatments"),
)
METHOD_COLUMNS = {"dcgan": "DCGAN", "wgan": "WGAN", "wgan-gp": "WGAN", "lsgan": "LSGAN", "classical": "CellProfiler [18]",
                  "random": "random D (control)"}


@dataclass
class ProfilesEvaluation:
    """The MOA results of one profiles folder: ``results[(aggregation, protocol)]``."""

    folder: Path
    label: str
    method: str
    info: dict[str, Any]
    results: dict[tuple[str, str], MoaResult] = field(default_factory=dict)
    #: ``retrieval[(aggregation, measure)]``: mAP of phenotypic activity / consistency, when computed.
    retrieval: dict[tuple[str, str], RetrievalResult] = field(default_factory=dict)
    #: The well normalisation each aggregation's activity was measured on.
    retrieval_levels: dict[str, str] = field(default_factory=dict)
    retrieval_notes: list[str] = field(default_factory=list)

    @property
    def aggregations(self) -> list[str]:
        return list(dict.fromkeys(aggregation for aggregation, _ in self.results))


def evaluate_folder(
    folder: str | Path,
    *,
    label: str | None = None,
    average_precision: bool = False,
    retrieval: bool = False,
    null_size: int = DEFAULT_NULL_SIZE,
    seed: int = 0,
) -> ProfilesEvaluation:
    """Score every aggregation of ``FOLDER/treatments.parquet`` under NSC and NSCB.

    Parameters
    ----------
    folder : path
        A profiles folder (``treatments.parquet``; ``wells.parquet`` for phenotypic activity).
    label : str, optional
        Its name in tables (default from ``profile.json``).
    average_precision : bool, default False
        Also the mean AP of MOA retrieval in the NSC / NSCB results (no p-value; needs no extra).
    retrieval : bool, default False
        Also mAP of phenotypic activity and consistency with p-values (needs copairs).
    null_size, seed : int
        The permutation test's draws and seed.
    """
    folder = Path(folder)
    path = folder / TREATMENTS
    if not path.is_file():
        raise CytolensError(f"no {TREATMENTS} (run 'cytolens profile embed' first)", path=folder)
    info = read_json_object(folder / PROFILE_JSON) if (folder / PROFILE_JSON).is_file() else {}
    treatments = read_parquet_table(path)
    if "Metadata_Aggregation" not in treatments:
        treatments["Metadata_Aggregation"] = "unnamed"
    evaluation = ProfilesEvaluation(
        folder=folder,
        label=label or str(info.get("label") or folder.name),
        method=str(info.get("method", "")),
        info=info,
    )
    for aggregation, table in treatments.groupby("Metadata_Aggregation", sort=False):
        for protocol in PROTOCOLS:
            evaluation.results[(str(aggregation), protocol)] = evaluate_moa(
                table, protocol=protocol, average_precision=average_precision
            )
    if retrieval:
        from cytolens.profile.retrieval_tables import retrieval_of_folder

        evaluation.retrieval, evaluation.retrieval_levels, evaluation.retrieval_notes = retrieval_of_folder(
            folder, treatments, null_size=null_size, seed=seed)
    return evaluation


def accuracy_table(evaluations: list[ProfilesEvaluation]) -> pd.DataFrame:
    """One row per folder × aggregation × protocol, both measures labelled."""
    rows = []
    for evaluation in evaluations:
        for (aggregation, protocol), result in evaluation.results.items():
            summary = result.summary()
            rows.append({
                "profiles": evaluation.label,
                "method": evaluation.method,
                "aggregation": aggregation,
                "protocol": protocol,
                "accuracy_over_treatments": summary["accuracy_treatments"],
                "ci95_low": summary["ci95_treatments"][0],
                "ci95_high": summary["ci95_treatments"][1],
                "correct": summary["correct"],
                "n_treatments": summary["n_treatments"],
                "per_compound_mean_accuracy": summary["accuracy_per_compound"],
                "n_compounds": summary["n_compounds"],
                "n_moas": summary["n_moas"],
                "n_without_neighbour": summary["n_without_neighbour"],
                "accuracy_over_treatments_with_neighbour": summary["accuracy_treatments_with_neighbour"],
                "mean_average_precision": summary.get("mean_average_precision", np.nan),
            })
    return pd.DataFrame(rows)


def accuracy_markdown(table: pd.DataFrame) -> str:
    lines = [
        "# MOA classification (1-NN, cosine): NSC / NSCB accuracy over treatments and per-compound mean",
        "",
        f"- **over treatments**: {MEASURES['treatments']}; 95 % Wilson interval.",
        f"- **per-compound mean**: {MEASURES['per_compound']}.",
        "- **NSC**: the neighbour is another compound. **NSCB**: another compound from another batch (week); "
        f"{' and '.join(NSCB_DROPPED_MOAS)} are dropped.",
        "- Aggregations: `cytogan` = mean of the cells per treatment; `bbbc021` = per-plate DMSO normalisation, "
        "mean per well, median over replicate wells; `+whiten` = ZCA whitening fit on DMSO cells.",
        "- *no neighbour*: queries without any allowed candidate (counted as wrong); under NSCB, a treatment whose "
        "wells span every week (a positive control on every plate) has none.",
        "- *mean AP*: mean over the treatments of the average precision of same-MOA treatments among the "
        "protocol's candidates (no p-value; mAP with p-values is in map.md, with the eval extra).",
        "",
        "| profiles | aggregation | protocol | accuracy over treatments | 95 % CI | correct / n "
        "| per-compound mean accuracy | compounds | no neighbour | mean AP |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in table.itertuples():
        average = "—" if pd.isna(row.mean_average_precision) else f"{row.mean_average_precision:.3f}"
        lines.append(
            f"| {row.profiles} | {row.aggregation} | {row.protocol} | {100 * row.accuracy_over_treatments:.1f} % | "
            f"{100 * row.ci95_low:.0f}–{100 * row.ci95_high:.0f} % | {row.correct} / {row.n_treatments} | "
            f"{100 * row.per_compound_mean_accuracy:.1f} % | {row.n_compounds} | {row.n_without_neighbour} | "
            f"{average} |"
        )
    return "\n".join(lines) + "\n"


def _our_column(evaluation: ProfilesEvaluation, whitened: bool) -> str:
    base = METHOD_COLUMNS.get(evaluation.method, evaluation.label)
    if whitened:
        return f"{base} + whitening"
    return base


def is_papers_task(evaluations: list[ProfilesEvaluation]) -> bool:
    """Whether these profiles were scored on the paper's task: treatments of exactly BBBC021's 12 MOAs.

    Only then are the paper's numbers placed beside ours; a lab's own screen gets its own numbers alone.
    """
    # NSC scores every annotated treatment (NSCB leaves out MOAs seen in one week only).
    scored = [result for evaluation in evaluations for result in evaluation.results.values()
              if result.protocol == "NSC"]
    return bool(scored) and all(set(result.predictions["moa"]) == set(BBBC021_MOAS) for result in scored)


def table1(evaluations: list[ProfilesEvaluation]) -> pd.DataFrame:
    """CytoGAN's Table 1 with ours: rows = source and measure, columns = methods, values in percent.

    Our classical features go into the CellProfiler column, the random discriminator into its own column; a
    folder with whitened aggregations also fills ``<method> + whitening``. Two folders of the same method get
    their labels appended to the column name.
    """
    ours: dict[str, dict[str, float]] = {}
    for evaluation in evaluations:
        for whitened in (False, True):
            suffix = "+whiten" if whitened else ""
            if not {f"cytogan{suffix}", f"bbbc021{suffix}"} & set(evaluation.aggregations):
                continue
            column = _our_column(evaluation, whitened)
            if column in ours:
                column = f"{column} ({evaluation.label})"
            values = {}
            for row_label, aggregation, protocol, measure in OUR_ROWS:
                result = evaluation.results.get((f"{aggregation}{suffix}", protocol))
                if result is not None:
                    value = result.per_compound_accuracy if measure == "per_compound" else result.accuracy
                    values[row_label] = 100 * value
            ours[column] = values
    # Each of our extra columns (a whitened variant, the random control) right after the column it extends.
    columns: list[str] = []
    for column in list(PAPER_COLUMNS) + [c for c in ours if c not in PAPER_COLUMNS]:
        if column in columns:
            continue
        columns.append(column)
        columns += [c for c in ours if c.startswith(f"{column} +") and c not in columns and c not in PAPER_COLUMNS]
    rows = []
    if is_papers_task(evaluations):
        for row_label, values in PAPER_TABLE1.items():
            rows.append({"row": row_label, **{c: values.get(c) for c in columns}})
    for row_label, *_ in OUR_ROWS:
        rows.append({"row": row_label, **{c: ours.get(c, {}).get(row_label) for c in columns}})
    table = pd.DataFrame(rows).set_index("row")
    # Drop columns nobody filled (e.g. no whitening run).
    return table.loc[:, table.notna().any(axis=0)].astype(float)


def table1_markdown(table: pd.DataFrame, evaluations: list[ProfilesEvaluation]) -> str:
    def show(value: Any, paper: bool) -> str:
        if value is None or pd.isna(value):
            return "—"
        return f"{value:.0f} %" if paper else f"{value:.1f} %"

    papers = any(index in PAPER_TABLE1 for index in table.index)
    lines = [
        "# Table 1 (CytoGAN 2017): MOA classification accuracy"
        + (", the paper's numbers beside ours" if papers else " (not BBBC021's 12 MOAs: no paper numbers beside)"),
        "",
        "| | " + " | ".join(table.columns) + " |",
        "|---|" + "---:|" * len(table.columns),
    ]
    for index, row in table.iterrows():
        lines.append(f"| {index} | " + " | ".join(show(v, index in PAPER_TABLE1) for v in row) + " |")
    counts = []
    for evaluation in evaluations:
        result = evaluation.results.get((MAIN_AGGREGATION, "NSC")) or next(iter(evaluation.results.values()))
        nscb = evaluation.results.get((MAIN_AGGREGATION, "NSCB"))
        counts.append(
            f"- `{evaluation.label}` ({evaluation.folder}): NSC over {result.n} treatments of "
            f"{result.predictions['compound'].nunique()} compounds"
            + (f", NSCB over {nscb.n}" if nscb is not None else "")
            + f"; {evaluation.info.get('n_cells', '?')} cells."
        )
    lines += [
        "",
        ("The paper's numbers are on the real BBBC021 data (103 treatments, 38 compounds, 12 MOAs); ours are on "
         "the cells these profiles were computed from:" if papers else "Ours are on the cells these profiles were "
         "computed from:"),
        *counts,
        "",
        "The paper reports one number per method: the mean of per-compound accuracies under leave-one-compound-out "
        "1-NN (NSC), on mean profiles per treatment. The first row of ours is that measure on that aggregation, "
        "the second the same measure on the BBBC021 protocol's profiles (DMSO-normalised per plate, well means, "
        "replicate medians), the last two the protocol's NSC and NSCB accuracies over treatments (Ljosa et al. "
        "2013). Mean profiles of unnormalised features let the features with the largest values dominate the "
        "cosine (areas in pixels beside intensities in [0, 1]), which is why classical features need the "
        "protocol's normalisation. Under NSCB a treatment present in every week (a positive control on every "
        "plate) has no allowed neighbour and counts as wrong (see moa_accuracy.md). Our classical "
        "CellProfiler-like features (cytolens.profile.features) sit in the CellProfiler column; the random "
        "discriminator is the control every trained GAN must beat. Published NSC / NSCB on the real data for "
        "reference: Ljosa et al. factor analysis 94 / 77; Ando et al. 2017 96 / —.",
    ]
    return "\n".join(lines) + "\n"


def plot_moa_confusion(confusion: pd.DataFrame, path: str | Path, *, title: str) -> Path:
    """Save a MOA confusion matrix (rows true MOA, columns predicted; coloured by row share) as a PNG."""
    counts = confusion.to_numpy()
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    size = 2.5 + 0.55 * len(confusion.columns)
    fig, ax = new_figure(figsize=(size + 1.5, size), layout="constrained")
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="share of the true MOA's treatments", shrink=0.7)
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if shares[i, j] > 0.6 else "black")  # fmt: skip
    ax.set_xticks(range(len(confusion.columns)), [str(c) for c in confusion.columns], rotation=45, ha="right")
    ax.set_yticks(range(len(confusion.index)), [str(c) for c in confusion.index])
    ax.set_xlabel("predicted MOA (nearest neighbour's)")
    ax.set_ylabel("true MOA")
    correct = sum(int(confusion.loc[name, name]) for name in confusion.index if name in confusion.columns)
    ax.set_title(f"{title}\n{correct} / {int(counts.sum())} treatments correct", fontsize=10)
    path = Path(path)
    save_figure(fig, path, dpi=110)
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "profiles"


def write_evaluation(
    folders: list[str | Path],
    out: str | Path | None = None,
    *,
    labels: list[str] | None = None,
    average_precision: bool = False,
    retrieval: bool | None = None,
    null_size: int = DEFAULT_NULL_SIZE,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate profiles folders and write the outputs listed in the module docstring.

    Parameters
    ----------
    folders : list of path
        Profiles folders written by ``cytolens profile embed``.
    out : path, optional
        Output folder (default ``FOLDERS[0]/evaluation``).
    labels : list of str, optional
        Names of the folders in the tables.
    average_precision : bool, default False
        Also the mean AP column of ``moa_accuracy`` (no extra needed).
    retrieval : bool or None, default None
        mAP of phenotypic activity and consistency with p-values (``map.*``): True requires copairs (one-line
        error without it), None computes it when copairs is installed, False never.
    null_size, seed : int
        The permutation test's draws and seed.

    Returns
    -------
    dict
        ``{"out": Path, "evaluations": [...], "accuracy": DataFrame, "table1": DataFrame, "map": DataFrame or
        None, "map_skipped": str or None}`` (``map_skipped``: why mAP with p-values was not computed).
    """
    skipped = None
    if retrieval:
        import_copairs()  # fail before any work: one line naming the extra
    elif retrieval is None:
        retrieval = copairs_available()
        skipped = None if retrieval else MISSING_COPAIRS
    if not folders:
        raise CytolensError("give at least one profiles folder")
    if labels is not None and len(labels) != len(folders):
        raise CytolensError(f"got {len(labels)} labels for {len(folders)} profiles folders")
    evaluations = [
        evaluate_folder(folder, label=labels[i] if labels else None, average_precision=average_precision,
                        retrieval=retrieval, null_size=null_size, seed=seed)
        for i, folder in enumerate(folders)
    ]
    seen: dict[str, int] = {}
    for evaluation in evaluations:  # unique labels, so files and columns do not collide
        count = seen.get(evaluation.label, 0)
        seen[evaluation.label] = count + 1
        if count:
            evaluation.label = f"{evaluation.label} #{count + 1}"
    out = Path(out) if out is not None else Path(folders[0]) / "evaluation"
    out.mkdir(parents=True, exist_ok=True)

    accuracy = accuracy_table(evaluations)
    write_text_atomic(out / "moa_accuracy.csv", accuracy.to_csv(index=False))
    write_text_atomic(out / "moa_accuracy.md", accuracy_markdown(accuracy))
    predictions = pd.concat(
        [
            result.predictions.assign(profiles=evaluation.label, aggregation=aggregation, protocol=protocol)
            for evaluation in evaluations
            for (aggregation, protocol), result in evaluation.results.items()
        ],
        ignore_index=True,
    )
    write_text_atomic(out / "predictions.csv", predictions.to_csv(index=False))
    for evaluation in evaluations:
        folder = out if len(evaluations) == 1 else out / _slug(evaluation.label)
        has_main = (MAIN_AGGREGATION, "NSC") in evaluation.results
        aggregation = MAIN_AGGREGATION if has_main else evaluation.aggregations[0]
        for protocol in PROTOCOLS:
            confusion = evaluation.results[(aggregation, protocol)].confusion()
            write_text_atomic(folder / f"confusion_{protocol.lower()}.csv", confusion.to_csv())
        plot_moa_confusion(
            evaluation.results[(aggregation, "NSC")].confusion(), folder / "confusion_nsc.png",
            title=f"{evaluation.label}: NSC 1-NN, {aggregation} profiles",
        )
    table = table1(evaluations)
    write_text_atomic(out / "table1.csv", table.to_csv())
    write_text_atomic(out / "table1.md", table1_markdown(table, evaluations))
    per_query = None
    if retrieval:
        from cytolens.profile.retrieval_tables import map_markdown, map_notes, map_tables

        per_query, summary = map_tables(evaluations)
        write_text_atomic(out / "map.csv", per_query.to_csv(index=False))
        write_text_atomic(out / "map_summary.csv", summary.to_csv(index=False))
        write_text_atomic(out / "map.md", map_markdown(per_query, summary, main_aggregation=MAIN_AGGREGATION,
                                                       notes=map_notes(evaluations)))
    metrics = {
        "definitions": {**MEASURES, "NSC": "nearest neighbour from another compound",
                        "NSCB": f"another compound and another batch; MOAs dropped: {list(NSCB_DROPPED_MOAS)}",
                        **{f"mAP {name}": text for name, text in RETRIEVAL_MEASURES.items()}},
        "map": "computed (copairs)" if retrieval else (skipped or "not requested"),
        "profiles": [
            {
                "label": evaluation.label,
                "folder": str(evaluation.folder),
                "method": evaluation.method,
                "info": evaluation.info,
                "results": {
                    aggregation: {
                        protocol: evaluation.results[(aggregation, protocol)].summary() for protocol in PROTOCOLS
                    }
                    for aggregation in evaluation.aggregations
                },
                "map": {
                    aggregation: {measure: evaluation.retrieval[(aggregation, measure)].summary()
                                  | {"profiles": evaluation.retrieval_levels.get(aggregation, "treatments")
                                     if measure == "activity" else "treatments"}
                                  for measure in ("activity", "consistency")
                                  if (aggregation, measure) in evaluation.retrieval}
                    for aggregation in evaluation.aggregations
                } if retrieval else None,
                "map_notes": evaluation.retrieval_notes,
            }
            for evaluation in evaluations
        ],
    }
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2, default=str) + "\n")
    return {"out": out, "evaluations": evaluations, "accuracy": accuracy, "table1": table, "map": per_query,
            "map_skipped": skipped}
