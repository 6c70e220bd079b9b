"""JUMP-style retrieval evaluation of profiles: mean average precision (mAP) with permutation p-values.

Two questions, each answered per *query* with an mAP, a p-value, a Benjamini–Hochberg q-value, and over all
queries with the mean mAP and the *fraction retrieved* (queries with q < 0.05):

Phenotypic activity (query = a treatment, profiles = its replicate wells)
    Each replicate well ranks the treatment's other replicate wells (positives) among all DMSO wells (negatives)
    by cosine similarity. Are the treatment's wells told apart from the controls?
Phenotypic consistency (query = a MOA, profiles = its treatments)
    Each treatment ranks the treatments of *other compounds* with the same MOA (positives) among the treatments
    of other MOAs (negatives). Treatments of the same compound (other concentrations) are neither: as in NSC,
    a compound never retrieves itself.

AP of one profile = the mean, over its positives, of the precision at each positive's rank; the query's mAP is
the mean AP of its profiles (those with at least one positive). The APs and the pairs come from copairs
(``copairs.map.average_precision``, cosine similarity), an optional dependency: ``pip install 'cytolens[eval]'``.

The p-values are ours. The null of one profile's AP is the AP of ``n_positives`` positives placed at random in
its rank list of ``n_total`` (copairs' null; it depends only on these two numbers); the null of a query's mAP is
the mean of independent draws for each of its profiles. ``p = (1 + #{null >= observed}) / (1 + null_size)``
with ties counted (:func:`cytolens.evaluation.stats.permutation_p_value`). copairs 0.5.5 counts only null values
*strictly greater* than the observed mAP, so a single positive ranked first among 5 candidates gets
``p = 1 / (null_size + 1)`` instead of 0.2 — anti-conservative exactly where BBBC021 is (3 replicates a
treatment) — and it gives the profiles of a query that share a configuration one and the same null draw, so
the null of their mean is as wide as that of a single AP.

copairs breaks ties in similarity in favour of the positives (they are listed first); exact ties only occur
between identical profiles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cytolens.core.errors import CytolensError, OptionError
from cytolens.evaluation.stats import benjamini_hochberg, permutation_p_value
from cytolens.profile.moa import moa_queries
from cytolens.profile.profiles import CONTROL, feature_columns, treatment_key

__all__ = [
    "DEFAULT_NULL_SIZE",
    "EXTRA_HINT",
    "MEASURES",
    "MISSING_COPAIRS",
    "RetrievalResult",
    "average_precision_null",
    "copairs_available",
    "import_copairs",
    "phenotypic_activity",
    "phenotypic_consistency",
    "query_p_values",
]

EXTRA_HINT = "pip install 'cytolens[eval]'"
MISSING_COPAIRS = f"mAP with p-values (phenotypic activity and consistency) needs copairs: {EXTRA_HINT}"
#: What each measure's queries, positives and negatives are; tables quote these.
MEASURES = {
    "activity": "phenotypic activity: mAP of retrieving a treatment's replicate wells against DMSO wells "
                "(query = treatment)",
    "consistency": "phenotypic consistency: mAP of retrieving treatments of other compounds with the same MOA "
                   "against treatments of other MOAs; same-compound treatments excluded (query = MOA)",
}
DEFAULT_NULL_SIZE = 10000
DEFAULT_THRESHOLD = 0.05


def import_copairs() -> Any:
    """``copairs.map``, imported on first use.

    Raises
    ------
    CytolensError
        One line naming the extra to install, when copairs is not installed.
    """
    try:
        import copairs.map as copairs_map
    except ImportError:
        raise CytolensError(MISSING_COPAIRS) from None
    return copairs_map


def copairs_available() -> bool:
    """Whether copairs can be imported (the ``eval`` extra is installed)."""
    try:
        import_copairs()
    except CytolensError:
        return False
    return True


@dataclass
class RetrievalResult:
    """mAP, p-values, q-values and the fraction retrieved of one measure on one set of profiles.

    Attributes
    ----------
    measure : {"activity", "consistency"}
    profiles : DataFrame
        One row per profile that was a query profile: ``query``, ``n_positives``, ``n_total`` (the length of
        its rank list), ``average_precision`` (NaN without a positive), and its metadata.
    queries : DataFrame
        One row per query with at least one positive: ``query``, ``n_profiles``, ``mean_average_precision``,
        ``p_value``, ``q_value`` (Benjamini–Hochberg over the queries), ``retrieved`` (``q_value < threshold``)
        and descriptive columns.
    null_size, seed, threshold
        The permutation test's settings.
    notes : list of str
        What was left out and why.
    """

    measure: str
    profiles: pd.DataFrame
    queries: pd.DataFrame
    null_size: int
    seed: int
    threshold: float
    notes: list[str] = field(default_factory=list)

    @property
    def mean_map(self) -> float:
        """Mean over the queries of their mAP."""
        return float(self.queries["mean_average_precision"].mean()) if len(self.queries) else float("nan")

    @property
    def n_retrieved(self) -> int:
        return int(self.queries["retrieved"].sum()) if len(self.queries) else 0

    @property
    def fraction_retrieved(self) -> float:
        """Share of the queries whose q-value is below the threshold."""
        return self.n_retrieved / len(self.queries) if len(self.queries) else float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            "measure": self.measure,
            "definition": MEASURES[self.measure],
            "n_queries": int(len(self.queries)),
            "n_queries_without_positives": int(self.profiles.groupby("query")["average_precision"]
                                               .apply(lambda v: v.isna().all()).sum()) if len(self.profiles) else 0,
            "mean_map": self.mean_map,
            "n_retrieved": self.n_retrieved,
            "fraction_retrieved": self.fraction_retrieved,
            "threshold": self.threshold,
            "null_size": self.null_size,
            "seed": self.seed,
            "p_value": "(1 + #{null mAP >= observed}) / (1 + null_size); null = random ranks of each profile's "
                       "positives, independent across a query's profiles",
            "q_value": "Benjamini-Hochberg over the queries (scipy.stats.false_discovery_control)",
            "notes": list(self.notes),
        }


# ------------------------------------------------------------------------------------------------ null and p


def average_precision_null(n_positives: int, n_total: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """APs of ``n_positives`` positives placed uniformly at random among ``n_total`` ranks.

    Parameters
    ----------
    n_positives, n_total : int
        ``1 <= n_positives <= n_total``.
    size : int
        Number of draws.
    rng : numpy.random.Generator

    Returns
    -------
    (size,) ndarray of float64
    """
    if not 1 <= n_positives <= n_total:
        raise OptionError(f"need 1 <= n_positives <= n_total, got {n_positives} and {n_total}")
    out = np.empty(size, dtype=np.float64)
    hits = np.arange(1, n_positives + 1, dtype=np.float64)
    # Chunks keep the (rows, n_total) permutation matrix small however long the rank lists are.
    rows = max(1, 2_000_000 // n_total)
    for start in range(0, size, rows):
        count = min(rows, size - start)
        ranks = np.tile(np.arange(1, n_total + 1, dtype=np.int32), (count, 1))
        rng.permuted(ranks, axis=1, out=ranks)
        positions = np.sort(ranks[:, :n_positives], axis=1)
        out[start : start + count] = (hits / positions).mean(axis=1)
    return out


def query_p_values(
    profiles: pd.DataFrame, *, null_size: int = DEFAULT_NULL_SIZE, seed: int = 0, by: str = "query"
) -> pd.DataFrame:
    """Each query's mAP and permutation p-value (ties counted) from its profiles' APs.

    Parameters
    ----------
    profiles : DataFrame
        ``by``, ``average_precision``, ``n_positives``, ``n_total``; rows with NaN AP or no positive are ignored.
    null_size : int
        Draws of each null.
    seed : int
        Nulls are drawn from generators seeded by ``(seed, n_positives, n_total)`` (one pool per configuration)
        and ``(seed, query number)`` (the resampling of a query's mean), so a query's p-value does not depend
        on the other queries' configurations.

    Returns
    -------
    DataFrame
        ``by``, ``n_profiles``, ``mean_average_precision``, ``p_value``, in first-appearance order.
    """
    if int(null_size) != null_size or null_size < 1:
        raise OptionError(f"`null_size` must be a positive integer, got {null_size!r}")
    scored = profiles[profiles["average_precision"].notna() & (profiles["n_positives"] > 0)]
    pools: dict[tuple[int, int], np.ndarray] = {}

    def pool(config: tuple[int, int]) -> np.ndarray:
        if config not in pools:
            pools[config] = average_precision_null(*config, null_size, np.random.default_rng([seed, *config]))
        return pools[config]

    rows = []
    for number, (query, group) in enumerate(scored.groupby(by, sort=False)):
        configs = list(zip(group["n_positives"].astype(int), group["n_total"].astype(int), strict=True))
        if len(configs) == 1:
            null = pool(configs[0])
        else:
            # Independent draws for each profile: resample each profile's pool (with replacement).
            resample = np.random.default_rng([seed, 1_000_003, number])
            null = np.mean([pool(c)[resample.integers(null_size, size=null_size)] for c in configs], axis=0)
        observed = float(group["average_precision"].mean())
        rows.append({by: query, "n_profiles": len(group), "mean_average_precision": observed,
                     "p_value": permutation_p_value(observed, null)})
    return pd.DataFrame(rows, columns=[by, "n_profiles", "mean_average_precision", "p_value"])


def _finish(measure: str, profiles: pd.DataFrame, describe: pd.DataFrame, *, null_size: int, seed: int,
            threshold: float, notes: list[str]) -> RetrievalResult:
    queries = query_p_values(profiles, null_size=null_size, seed=seed)
    queries["q_value"] = benjamini_hochberg(queries["p_value"]) if len(queries) else []
    queries["retrieved"] = queries["q_value"] < threshold
    queries = describe.merge(queries, on="query", how="inner")
    return RetrievalResult(measure, profiles, queries, null_size, seed, threshold, notes)


def _check_threshold(threshold: float) -> None:
    if not 0 < threshold < 1:
        raise OptionError(f"`threshold` must be in (0, 1), got {threshold!r}")


def _features(table: pd.DataFrame, features: list[str] | None, what: str) -> np.ndarray:
    columns = features or feature_columns(table)
    if not columns:
        raise CytolensError(f"{what} have no feature columns")
    values = table[columns].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        raise CytolensError(f"{what} have {int((~np.isfinite(values)).sum())} missing or infinite values")
    return values


def _average_precision(meta: pd.DataFrame, values: np.ndarray, **pairs: list[str]) -> pd.DataFrame:
    """copairs' APs (cosine), with its columns renamed; NaN AP for profiles without pairs."""
    copairs_map = import_copairs()
    from copairs.matching import UnpairedException

    try:
        result = copairs_map.average_precision(meta, values, distance="cosine", progress_bar=False, **pairs)
    except UnpairedException:
        result = meta.assign(average_precision=np.nan, n_pos_pairs=0, n_total_pairs=0)
    return result.rename(columns={"n_pos_pairs": "n_positives", "n_total_pairs": "n_total"})


# ------------------------------------------------------------------------------------------------ the measures


def phenotypic_activity(
    wells: pd.DataFrame,
    *,
    features: list[str] | None = None,
    null_size: int = DEFAULT_NULL_SIZE,
    seed: int = 0,
    threshold: float = DEFAULT_THRESHOLD,
) -> RetrievalResult:
    """mAP of each treatment's replicate wells retrieved against the DMSO wells (see the module docstring).

    Parameters
    ----------
    wells : DataFrame
        Well profiles of *one* normalisation: ``Metadata_Compound``, ``Metadata_Concentration`` (optional
        ``Metadata_MOA``) and features; DMSO wells are the controls.
    features : list of str, optional
        Feature columns (default: every column not starting with ``Metadata_``).
    null_size, seed, threshold
        Permutation draws, their seed, and the q-value below which a treatment counts as retrieved.

    Returns
    -------
    RetrievalResult
        ``measure="activity"``; a query is a treatment (``compound@concentration``).
    """
    _check_threshold(threshold)
    for column in ("Metadata_Compound", "Metadata_Concentration"):
        if column not in wells.columns:
            raise CytolensError(f"well profiles have no {column} column")
    table = wells.reset_index(drop=True)
    values = _features(table, features, "well profiles")
    control = table["Metadata_Compound"].astype(str).str.upper().eq(CONTROL).to_numpy()
    if not control.any():
        raise CytolensError("phenotypic activity needs DMSO wells (the negatives), and these profiles have none")
    meta = pd.DataFrame({
        "query": treatment_key(table["Metadata_Compound"], table["Metadata_Concentration"]),
        "Metadata_Control": control,
        # copairs' idiom: each control well its own group, so controls are never each other's positives.
        "Metadata_Reference": np.where(control, np.arange(len(table)), -1),
    })
    aps = _average_precision(meta, values, pos_sameby=["query", "Metadata_Reference"], pos_diffby=[],
                             neg_sameby=[], neg_diffby=["Metadata_Control"])
    keep = ~control
    profiles = pd.concat([table.loc[keep, [c for c in table.columns if str(c).startswith("Metadata_")]],
                          aps.loc[keep, ["query", "n_positives", "n_total", "average_precision"]]], axis=1)
    describe = table.loc[keep].assign(query=meta.loc[keep, "query"]).groupby("query", sort=False).agg(
        compound=("Metadata_Compound", "first"), concentration=("Metadata_Concentration", "first"),
        **({"moa": ("Metadata_MOA", "first")} if "Metadata_MOA" in table else {}),
    ).reset_index()
    describe["n_controls"] = int(control.sum())
    single = int((profiles.groupby("query")["n_positives"].max() == 0).sum())
    notes = [f"{single} treatments with a single well have no replicate to retrieve"] if single else []
    return _finish("activity", profiles.reset_index(drop=True), describe, null_size=null_size, seed=seed,
                   threshold=threshold, notes=notes)


def phenotypic_consistency(
    treatments: pd.DataFrame,
    *,
    features: list[str] | None = None,
    null_size: int = DEFAULT_NULL_SIZE,
    seed: int = 0,
    threshold: float = DEFAULT_THRESHOLD,
) -> RetrievalResult:
    """mAP of each MOA's treatments retrieving each other across compounds (see the module docstring).

    Parameters
    ----------
    treatments : DataFrame
        Treatment profiles of *one* aggregation: ``Metadata_Compound``, ``Metadata_MOA`` and features. DMSO and
        treatments without a MOA are left out (as in NSC).
    features, null_size, seed, threshold
        As in :func:`phenotypic_activity`.

    Returns
    -------
    RetrievalResult
        ``measure="consistency"``; a query is a MOA.
    """
    _check_threshold(threshold)
    if "Metadata_Aggregation" in treatments and treatments["Metadata_Aggregation"].nunique() > 1:
        raise CytolensError("treatment profiles mix aggregations: select one Metadata_Aggregation first")
    table = moa_queries(treatments, "NSC")
    if table.empty:
        raise CytolensError("no treatments with a known MOA other than DMSO")
    values = _features(table, features, "treatment profiles")
    meta = pd.DataFrame({"query": table["Metadata_MOA"].astype(str),
                         "Metadata_Compound": table["Metadata_Compound"].astype(str)})
    # Positives: same MOA, another compound; negatives: another MOA (hence another compound). Treatments of the
    # query's own compound are in neither list.
    aps = _average_precision(meta, values, pos_sameby=["query"], pos_diffby=["Metadata_Compound"],
                             neg_sameby=[], neg_diffby=["query"])
    metadata = table[[c for c in table.columns if str(c).startswith("Metadata_")]]
    profiles = pd.concat([metadata, aps[["query", "n_positives", "n_total", "average_precision"]]], axis=1)
    describe = table.groupby(meta["query"], sort=False).agg(
        n_treatments=("Metadata_Compound", "size"), n_compounds=("Metadata_Compound", "nunique"),
    ).rename_axis("query").reset_index()
    lone = describe.loc[describe["n_compounds"] < 2, "query"].tolist()
    notes = [f"MOAs with a single compound have no positive: {', '.join(lone)}"] if lone else []
    return _finish("consistency", profiles, describe, null_size=null_size, seed=seed, threshold=threshold,
                   notes=notes)
