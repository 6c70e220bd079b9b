"""Mechanism-of-action evaluation of treatment profiles: NSC, NSCB, CytoGAN's per-compound mean, mAP.

Queries are the treatments (compound, concentration) with a known MOA, DMSO excluded; they are also the only
candidates. Each query is classified as the MOA of its nearest neighbour by cosine similarity (1-NN):

NSC — "not same compound" (Ljosa et al. 2013)
    Candidates are the treatments of *other* compounds. Accuracy = correct / queries (103 on BBBC021).
NSCB — "not same compound or batch"
    Candidates must also come from another batch (week): a treatment whose batches (``Metadata_Batch``, several
    joined by ``|``) overlap the query's is left out. The MOAs ``Cholesterol-lowering`` and ``Kinase
    inhibitors`` are dropped as queries and candidates (on BBBC021 each lives in one week, so it could never be
    matched): 92 queries on BBBC021.
CytoGAN's measure
    CytoGAN reported the *mean over compounds* of each compound's accuracy (its treatments' share classified
    correctly; 38 compounds on BBBC021) under NSC's leave-one-compound-out rule. Both numbers are reported and
    labelled: ``over treatments`` (Ljosa) and ``per-compound mean`` (CytoGAN).

A query without any candidate (possible only on tiny datasets) counts as wrong, with the predicted MOA missing.
Ties go to the candidate listed first (treatments sorted by compound, then concentration).

Mean average precision (optional, our implementation; copairs is not a dependency): for each query, the
candidates of the same protocol ranked by cosine similarity, positives = same MOA; AP = mean over the
positives of the precision at their rank; mAP = mean AP over the queries that have at least one positive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from cytolens.core.errors import CytolensError, check_choice
from cytolens.profile.profiles import CONTROL, feature_columns
from cytolens.evaluation.stats import proportion_interval

__all__ = [
    "NSCB_DROPPED_MOAS",
    "PROTOCOLS",
    "MoaResult",
    "cosine_similarity",
    "evaluate_moa",
    "mean_average_precision",
    "moa_queries",
]

PROTOCOLS = ("NSC", "NSCB")
NSCB_DROPPED_MOAS = ("Cholesterol-lowering", "Kinase inhibitors")
MEASURES = {
    "treatments": "accuracy over treatments (Ljosa 2013; the BBBC021 protocol)",
    "per_compound": "mean of per-compound accuracies (CytoGAN 2017's measure)",
}


@dataclass
class MoaResult:
    """1-NN MOA classification of treatment profiles under one protocol.

    Attributes
    ----------
    protocol : str
        ``"NSC"`` or ``"NSCB"``.
    predictions : DataFrame
        One row per query: ``compound``, ``concentration``, ``moa``, ``batch``, ``neighbour_compound``,
        ``neighbour_concentration``, ``predicted_moa``, ``similarity``, ``correct``.
    average_precision : Series, optional
        AP per query (NaN where the query has no positive), when mAP was computed.
    """

    protocol: str
    predictions: pd.DataFrame
    average_precision: pd.Series | None = field(default=None)

    @property
    def n(self) -> int:
        return int(len(self.predictions))

    @property
    def correct(self) -> int:
        return int(self.predictions["correct"].sum())

    @property
    def accuracy(self) -> float:
        """Share of queries (treatments) classified correctly."""
        return self.correct / self.n if self.n else float("nan")

    @property
    def per_compound(self) -> pd.Series:
        """Accuracy of each compound's treatments."""
        return self.predictions.groupby("compound", sort=True)["correct"].mean()

    @property
    def per_compound_accuracy(self) -> float:
        """CytoGAN's measure: the mean over compounds of their accuracy."""
        return float(self.per_compound.mean()) if self.n else float("nan")

    @property
    def mean_average_precision(self) -> float | None:
        if self.average_precision is None:
            return None
        values = self.average_precision.dropna()
        return float(values.mean()) if len(values) else float("nan")

    def confusion(self) -> pd.DataFrame:
        """Counts of true MOA (rows) against predicted MOA (columns); ``(none)`` for queries without neighbour."""
        predicted = self.predictions["predicted_moa"].fillna("(none)")
        names = sorted(set(self.predictions["moa"]) | set(predicted) - {"(none)"})
        columns = names + (["(none)"] if (predicted == "(none)").any() else [])
        table = pd.crosstab(self.predictions["moa"], predicted).reindex(index=names, columns=columns, fill_value=0)
        table.index.name, table.columns.name = "true MOA", "predicted MOA"
        return table.astype(int)

    def summary(self) -> dict[str, Any]:
        low, high = proportion_interval(self.correct, self.n) if self.n else (float("nan"), float("nan"))
        out = {
            "protocol": self.protocol,
            "accuracy_treatments": self.accuracy,
            "correct": self.correct,
            "n_treatments": self.n,
            "ci95_treatments": [low, high],
            "accuracy_per_compound": self.per_compound_accuracy,
            "n_compounds": int(self.predictions["compound"].nunique()),
            "n_moas": int(self.predictions["moa"].nunique()),
            "n_without_neighbour": int(self.predictions["predicted_moa"].isna().sum()),
            "accuracy_treatments_with_neighbour": (
                float(self.predictions.loc[self.predictions["predicted_moa"].notna(), "correct"].mean())
                if self.predictions["predicted_moa"].notna().any() else float("nan")
            ),
        }
        if self.average_precision is not None:
            out["mean_average_precision"] = self.mean_average_precision
            out["n_map_queries"] = int(self.average_precision.notna().sum())
        return out


def moa_queries(treatments: pd.DataFrame, protocol: str = "NSC") -> pd.DataFrame:
    """The treatments that take part in ``protocol``: known MOA, not DMSO (and for NSCB not the dropped MOAs).

    Sorted by compound and concentration (the order ties are broken in).
    """
    check_choice("protocol", protocol, PROTOCOLS)
    for column in ("Metadata_Compound", "Metadata_MOA"):
        if column not in treatments.columns:
            raise CytolensError(f"treatment profiles have no {column} column")
    keep = treatments["Metadata_MOA"].notna() & ~treatments["Metadata_Compound"].astype(str).str.upper().eq(CONTROL)
    keep &= ~treatments["Metadata_MOA"].astype(str).str.upper().eq(CONTROL)
    if protocol == "NSCB":
        keep &= ~treatments["Metadata_MOA"].isin(NSCB_DROPPED_MOAS)
    table = treatments[keep].copy()
    sort = ["Metadata_Compound"] + (["Metadata_Concentration"] if "Metadata_Concentration" in table else [])
    return table.sort_values(sort, kind="stable").reset_index(drop=True)


def cosine_similarity(vectors: np.ndarray) -> np.ndarray:
    """Pairwise cosine similarity of the rows; a zero row is similar to nothing (0)."""
    values = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    unit = np.divide(values, norms, out=np.zeros_like(values), where=norms > 0)
    return unit @ unit.T


def _batches(table: pd.DataFrame) -> list[frozenset[str]]:
    if "Metadata_Batch" not in table:
        return [frozenset() for _ in range(len(table))]
    return [frozenset() if pd.isna(b) else frozenset(str(b).split("|")) for b in table["Metadata_Batch"]]


def _allowed(table: pd.DataFrame, protocol: str) -> np.ndarray:
    """``allowed[i, j]``: may treatment j be the neighbour of query i?"""
    compounds = table["Metadata_Compound"].astype(str).to_numpy()
    allowed = compounds[:, None] != compounds[None, :]
    if protocol == "NSCB":
        batches = _batches(table)
        if not any(batches):
            raise CytolensError("NSCB needs Metadata_Batch (the week) in the treatment profiles")
        same_batch = np.array([[bool(a & b) for b in batches] for a in batches], dtype=bool)
        allowed &= ~same_batch
    return allowed


def evaluate_moa(
    treatments: pd.DataFrame,
    *,
    protocol: str = "NSC",
    features: list[str] | None = None,
    average_precision: bool = False,
) -> MoaResult:
    """Classify each query treatment by its nearest allowed neighbour (cosine) under ``protocol``.

    Parameters
    ----------
    treatments : DataFrame
        Treatment profiles of *one* aggregation (``Metadata_Compound``, ``Metadata_Concentration``,
        ``Metadata_MOA``, ``Metadata_Batch`` and features).
    protocol : {"NSC", "NSCB"}
    features : list of str, optional
        Feature columns (default: every column not starting with ``Metadata_``).
    average_precision : bool, default False
        Also compute each query's average precision (see the module docstring).
    """
    if "Metadata_Aggregation" in treatments and treatments["Metadata_Aggregation"].nunique() > 1:
        raise CytolensError("treatment profiles mix aggregations: select one Metadata_Aggregation first")
    table = moa_queries(treatments, protocol)
    columns = features or feature_columns(table)
    if not columns:
        raise CytolensError("treatment profiles have no feature columns")
    if table.empty:
        raise CytolensError(f"no query treatments for {protocol} (treatments with a known MOA other than DMSO)")
    similarity = cosine_similarity(table[columns].to_numpy(dtype=np.float64))
    allowed = _allowed(table, protocol)
    masked = np.where(allowed, similarity, -np.inf)
    has_neighbour = allowed.any(axis=1)
    nearest = np.argmax(masked, axis=1)
    moas = table["Metadata_MOA"].astype(str).to_numpy()
    compounds = table["Metadata_Compound"].astype(str).to_numpy()
    concentration = (
        table["Metadata_Concentration"].to_numpy(dtype=np.float64)
        if "Metadata_Concentration" in table else np.full(len(table), np.nan)
    )
    predictions = pd.DataFrame({
        "compound": compounds,
        "concentration": concentration,
        "moa": moas,
        "batch": table["Metadata_Batch"].to_numpy() if "Metadata_Batch" in table else None,
        "neighbour_compound": np.where(has_neighbour, compounds[nearest], None),
        "neighbour_concentration": np.where(has_neighbour, concentration[nearest], np.nan),
        "predicted_moa": np.where(has_neighbour, moas[nearest], None),
        "similarity": np.where(has_neighbour, masked[np.arange(len(table)), nearest], np.nan),
    })
    predictions["correct"] = (predictions["predicted_moa"] == predictions["moa"]).astype(bool)
    result = MoaResult(protocol=protocol, predictions=predictions)
    if average_precision:
        result.average_precision = pd.Series(_average_precisions(similarity, allowed, moas), index=predictions.index)
    return result


def _average_precisions(similarity: np.ndarray, allowed: np.ndarray, moas: np.ndarray) -> np.ndarray:
    out = np.full(len(moas), np.nan)
    for i in range(len(moas)):
        candidates = np.flatnonzero(allowed[i])
        positives = moas[candidates] == moas[i]
        if not positives.any():
            continue
        order = np.argsort(-similarity[i, candidates], kind="stable")
        hits = positives[order]
        ranks = np.flatnonzero(hits) + 1
        out[i] = float(np.mean(np.arange(1, len(ranks) + 1) / ranks))
    return out


def mean_average_precision(treatments: pd.DataFrame, *, protocol: str = "NSC") -> float:
    """mAP of MOA retrieval among treatments under ``protocol``'s candidate rule (see the module docstring)."""
    value = evaluate_moa(treatments, protocol=protocol, average_precision=True).mean_average_precision
    return float("nan") if value is None else value
