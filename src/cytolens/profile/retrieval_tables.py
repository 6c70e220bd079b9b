"""mAP of a profiles folder's aggregations, and the ``map.csv`` / ``map_summary.csv`` / ``map.md`` tables.

Phenotypic *activity* needs replicate wells, so it is measured on ``wells.parquet``: the well profiles that the
aggregation's treatment profiles were made from (``cytogan`` → the raw well means, ``bbbc021`` → the
DMSO-normalised well means, ``bbbc021+whiten`` → their whitened version; ``cytogan+whiten`` has no stored well
profiles and gets none). Phenotypic *consistency* is measured on ``treatments.parquet``. See
:mod:`cytolens.profile.retrieval` for the definitions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from cytolens.core.errors import CytolensError
from cytolens.core.files import read_parquet_table
from cytolens.profile.profiles import WELLS
from cytolens.profile.retrieval import (
    DEFAULT_NULL_SIZE, DEFAULT_THRESHOLD, MEASURES, RetrievalResult, phenotypic_activity, phenotypic_consistency,
)

__all__ = ["map_markdown", "map_notes", "map_tables", "retrieval_of_folder", "well_normalization"]

MEASURE_TITLES = {"activity": "phenotypic activity (replicate wells vs DMSO wells)",
                  "consistency": "phenotypic consistency (same MOA, other compounds)"}


def well_normalization(aggregation: str, normalizations: list[str]) -> str | None:
    """The ``Metadata_Normalization`` of the well profiles behind ``aggregation``, or None if none is stored."""
    base, _, variant = aggregation.partition("+")
    if base == "cytogan":
        wanted = ["raw"] if not variant else []  # whitened raw well means are not stored
    elif base == "bbbc021":
        wanted = [f"{name}+{variant}" if variant else name for name in ("dmso", "dmso_robust")]
    else:
        wanted = []
    found = [name for name in wanted if name in normalizations]
    return found[0] if len(found) == 1 else None


def retrieval_of_folder(
    folder: Path,
    treatments: pd.DataFrame,
    *,
    null_size: int = DEFAULT_NULL_SIZE,
    seed: int = 0,
    threshold: float = DEFAULT_THRESHOLD,
) -> tuple[dict[tuple[str, str], RetrievalResult], dict[str, str], list[str]]:
    """Both measures for every aggregation of one profiles folder.

    Returns
    -------
    results : dict
        ``{(aggregation, measure): RetrievalResult}``.
    levels : dict
        ``{aggregation: the well normalisation used for activity}``.
    notes : list of str
        Aggregations or measures left out, and why.
    """
    results: dict[tuple[str, str], RetrievalResult] = {}
    levels: dict[str, str] = {}
    notes: list[str] = []
    wells = read_parquet_table(folder / WELLS) if (folder / WELLS).is_file() else None
    normalizations = (sorted(wells["Metadata_Normalization"].dropna().astype(str).unique())
                      if wells is not None and "Metadata_Normalization" in wells else [])
    for aggregation, table in treatments.groupby("Metadata_Aggregation", sort=False):
        aggregation = str(aggregation)
        level = well_normalization(aggregation, normalizations) if wells is not None else None
        if level is None:
            notes.append(f"{aggregation}: no well profiles in {WELLS} for phenotypic activity")
        else:
            selected = wells[wells["Metadata_Normalization"] == level].dropna(axis="columns", how="all")
            # A screen without DMSO wells still gets NSC, NSCB and consistency: activity is noted as impossible.
            try:
                results[(aggregation, "activity")] = phenotypic_activity(selected, null_size=null_size, seed=seed,
                                                                         threshold=threshold)
                levels[aggregation] = level
            except CytolensError as exc:
                notes.append(f"{aggregation}: no phenotypic activity: {exc}")
        try:
            results[(aggregation, "consistency")] = phenotypic_consistency(
                table.drop(columns="Metadata_Aggregation"), null_size=null_size, seed=seed, threshold=threshold)
        except CytolensError as exc:
            notes.append(f"{aggregation}: no phenotypic consistency: {exc}")
    return results, levels, notes


def map_tables(evaluations: list[Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(per_query, summary)`` over the evaluations' retrieval results.

    ``evaluations`` are :class:`cytolens.profile.evaluate.ProfilesEvaluation` with ``retrieval`` filled.
    """
    queries, summary = [], []
    for evaluation in evaluations:
        for (aggregation, measure), result in evaluation.retrieval.items():
            profiles = (f"wells ({evaluation.retrieval_levels.get(aggregation)})" if measure == "activity"
                        else "treatments")
            keys = {"profiles": evaluation.label, "method": evaluation.method, "aggregation": aggregation,
                    "measure": f"mAP, {MEASURE_TITLES[measure]}", "profiled": profiles}
            queries.append(result.queries.assign(**keys))
            row = result.summary()
            summary.append({**keys, "n_queries": row["n_queries"],
                            "n_queries_without_positives": row["n_queries_without_positives"],
                            "mean_map": row["mean_map"], "n_retrieved": row["n_retrieved"],
                            "fraction_retrieved": row["fraction_retrieved"], "threshold": row["threshold"],
                            "null_size": row["null_size"], "seed": row["seed"]})
    if not queries:
        return pd.DataFrame(), pd.DataFrame()
    per_query = pd.concat(queries, ignore_index=True)
    first = ["profiles", "method", "aggregation", "measure", "profiled", "query"]
    per_query = per_query[first + [c for c in per_query.columns if c not in first]]
    # Counts stay integers where the other measure's rows leave them empty (activity has no n_compounds).
    for column in ("n_profiles", "n_controls", "n_treatments", "n_compounds"):
        if column in per_query:
            per_query[column] = per_query[column].astype("Int64")
    return per_query, pd.DataFrame(summary)


def _number(value: Any, digits: int = 3) -> str:
    return "—" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def map_notes(evaluations: list[Any]) -> list[str]:
    """What was left out of the mAP tables and why, one line per folder and note."""
    notes = [f"{evaluation.label}: {note}" for evaluation in evaluations for note in evaluation.retrieval_notes]
    for evaluation in evaluations:
        for (aggregation, measure), result in evaluation.retrieval.items():
            notes += [f"{evaluation.label}, {aggregation}, {measure}: {note}" for note in result.notes]
    return notes


def map_markdown(per_query: pd.DataFrame, summary: pd.DataFrame, *, main_aggregation: str = "bbbc021",
                 notes: list[str] | tuple[str, ...] = ()) -> str:
    """``map.md``: the definitions, the summary table, each folder's per-MOA consistency table and the notes."""
    threshold = summary["threshold"].iloc[0] if len(summary) else DEFAULT_THRESHOLD
    null_size = summary["null_size"].iloc[0] if len(summary) else DEFAULT_NULL_SIZE
    lines = [
        "# Mean average precision (mAP): JUMP-style retrieval with permutation p-values",
        "",
        f"- **activity**: {MEASURES['activity']}.",
        f"- **consistency**: {MEASURES['consistency']}.",
        "- AP of a profile: mean precision at the ranks of its positives, cosine similarity (copairs); a query's "
        "mAP is the mean AP of its profiles.",
        f"- p-value: (1 + #{{null mAP ≥ observed}}) / (1 + {null_size}), ties counted; the null places each "
        "profile's positives at random ranks. q-value: Benjamini–Hochberg over a table's queries. "
        f"**Fraction retrieved**: share of the queries with q < {threshold}.",
        "",
        "## Summary: mean mAP over queries and fraction retrieved",
        "",
        "| profiles | aggregation | measure | profiles ranked | queries | mean mAP | retrieved (q < "
        f"{threshold}) | fraction retrieved |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for row in summary.itertuples():
        lines.append(f"| {row.profiles} | {row.aggregation} | {row.measure} | {row.profiled} | {row.n_queries} | "
                     f"{_number(row.mean_map)} | {row.n_retrieved} / {row.n_queries} | "
                     f"{_number(100 * row.fraction_retrieved, 1)} % |")
    consistency = (per_query[per_query["measure"].str.contains("consistency")] if len(per_query)
                   else pd.DataFrame(columns=["profiles", "aggregation"]))
    for (profiles, aggregation), table in consistency.groupby(["profiles", "aggregation"], sort=False):
        if aggregation != main_aggregation and main_aggregation in set(
                consistency.loc[consistency["profiles"] == profiles, "aggregation"]):
            continue
        lines += ["", f"## {profiles}, {aggregation}: mAP of phenotypic consistency per MOA", "",
                  "| MOA | treatments | compounds | mAP | p | q | retrieved |", "|---|---:|---:|---:|---:|---:|---|"]
        for row in table.sort_values("mean_average_precision", ascending=False).itertuples():
            lines.append(f"| {row.query} | {row.n_treatments} | {row.n_compounds} | "
                         f"{_number(row.mean_average_precision)} | {_number(row.p_value, 4)} | "
                         f"{_number(row.q_value, 4)} | {'yes' if row.retrieved else 'no'} |")
    lines += ["", "Per-treatment mAP of phenotypic activity, with p and q: `map.csv`."]
    if notes:
        lines += ["", "## Left out", "", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"
