"""From single-cell vectors to well and treatment profiles: CytoGAN's aggregation and the BBBC021 protocol's.

A *treatment* is a (compound, concentration) pair. Two aggregations are computed from the same cells:

``cytogan`` (CytoGAN 2017)
    The mean of the treatment's cell vectors, nothing else.
``bbbc021`` (Ljosa et al. 2013, the Broad's reference protocol)
    Each feature is normalised per plate against that plate's DMSO cells, ``(x - mean) / std`` (``"standard"``)
    or ``(x - median) / (1.4826 · MAD)`` (``"robust"``, pycytominer's ``mad_robustize``); then the mean per well;
    then the median over the treatment's replicate wells.

With ``whiten=True`` each also gets a whitened variant (``cytogan+whiten``, ``bbbc021+whiten``): ZCA whitening
fit on the DMSO cells (after the per-plate normalisation for ``bbbc021``; CytoGAN's whitening was fit on DMSO
cells too), applied to the profiles. PCA and ZCA whitening differ by a rotation, so cosine nearest neighbours
are the same with either.

Because normalisation and whitening are affine maps, the mean of normalised cells over a well is the
normalised mean of the well's raw cells: only the well means, cell counts and the DMSO cells are ever held in
memory, however many cells ``single_cells.parquet`` has (it is read in row groups).

Classical features (``profile.json`` kind ``classical``) are first reduced with pycytominer's ``feature_select``
(variance, correlation, blocklist) on the DMSO-normalised well means, and only the kept columns are aggregated
(:mod:`cytolens.profile.feature_selection`); ``profile.json`` records what was kept and by what.

Files written into the profiles folder (pycytominer's conventions: ``Metadata_`` columns first, then features,
one row per sample):

``wells.parquet``
    One row per well *and normalisation*: ``Metadata_Normalization`` is ``"raw"`` (plain mean of the cells —
    what ``pycytominer.aggregate(single_cells, strata=["Metadata_Plate", "Metadata_Well"], operation="mean")``
    gives), ``"dmso"`` or ``"dmso_robust"`` (the protocol's normalised well means), and ``"dmso+whiten"`` /
    ``"dmso_robust+whiten"`` with whitening. Columns include ``Metadata_Cell_Count``.
``treatments.parquet``
    One row per treatment *and aggregation*: ``Metadata_Aggregation`` is ``"cytogan"``, ``"bbbc021"`` and, with
    whitening, ``"cytogan+whiten"`` and ``"bbbc021+whiten"``. Filter on it before using the table. DMSO and
    treatments without a known MOA are kept (the evaluation leaves them out as queries).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from cytolens.core.atomic import atomic_path, write_text_atomic
from cytolens.core.errors import CytolensError, check_choice
from cytolens.profile.dmso_normalisation import NORMALIZATIONS, fit_whitening, plate_dmso_statistics

if TYPE_CHECKING:
    from cytolens.profile.feature_selection import FeatureSelection

__all__ = [
    "AGGREGATIONS",
    "WellTable",
    "aggregate_treatments_mean",
    "aggregate_treatments_median",
    "feature_columns",
    "normalize_wells",
    "read_well_means",
    "select_well_features",
    "treatment_key",
    "write_profiles",
]

AGGREGATIONS = ("cytogan", "bbbc021")
CONTROL = "DMSO"
SINGLE_CELLS = "single_cells.parquet"
WELLS = "wells.parquet"
TREATMENTS = "treatments.parquet"
PROFILE_JSON = "profile.json"
# Well metadata carried from the cells (the first value; these are constant within a well in BBBC021).
WELL_METADATA = (
    "Metadata_Plate", "Metadata_Well", "Metadata_Replicate", "Metadata_Compound", "Metadata_Concentration",
    "Metadata_MOA", "Metadata_Batch",
)


def feature_columns(table: pd.DataFrame) -> list[str]:
    """The feature columns of a profile table: every column not starting with ``Metadata_``."""
    return [column for column in table.columns if not str(column).startswith("Metadata_")]


def treatment_key(compound: pd.Series, concentration: pd.Series) -> pd.Series:
    """A text key per row identifying its treatment; concentrations match to 6 significant digits."""
    conc = pd.to_numeric(concentration, errors="coerce")
    text = conc.map(lambda value: "nan" if pd.isna(value) else f"{float(value):.6g}")
    return compound.astype(str) + "@" + text


def _is_control(compound: pd.Series) -> np.ndarray:
    return compound.astype(str).str.upper().eq(CONTROL).to_numpy()


# ------------------------------------------------------------------------------------------------ wells


@dataclass
class WellTable:
    """Raw well means and the DMSO cells needed to normalise and whiten them.

    Attributes
    ----------
    metadata : DataFrame
        One row per well: :data:`WELL_METADATA` columns present in the cells, plus ``Metadata_Cell_Count``.
    means : (n_wells, F) ndarray of float64
        Mean of each feature over the well's cells.
    features : list of str
        Feature names.
    dmso_cells : dict of str to (n, F) float32 ndarray
        The DMSO cells of each plate.
    """

    metadata: pd.DataFrame
    means: np.ndarray
    features: list[str]
    dmso_cells: dict[str, np.ndarray] = field(default_factory=dict)

    def table(self, values: np.ndarray | None = None, normalization: str = "raw") -> pd.DataFrame:
        """The wells as one DataFrame (metadata, ``Metadata_Normalization``, then features)."""
        meta = self.metadata.copy()
        meta["Metadata_Normalization"] = normalization
        data = pd.DataFrame(self.means if values is None else values, columns=self.features, index=meta.index)
        return pd.concat([meta, data], axis=1)

    def subset(self, features: list[str]) -> WellTable:
        """The same wells with only ``features`` (in that order)."""
        index = [self.features.index(name) for name in features]
        return WellTable(metadata=self.metadata, means=self.means[:, index], features=list(features),
                         dmso_cells={plate: cells[:, index] for plate, cells in self.dmso_cells.items()})


def read_well_means(cells: str | Path | pd.DataFrame, *, batch_rows: int = 65536) -> WellTable:
    """Stream single cells into well means (and keep the DMSO cells per plate).

    Parameters
    ----------
    cells : path or DataFrame
        ``single_cells.parquet`` (read in batches of ``batch_rows`` rows) or the table itself. It needs
        ``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Compound`` and ``Metadata_Concentration``.

    Returns
    -------
    WellTable
    """
    if isinstance(cells, pd.DataFrame):
        batches = [cells]
        columns = list(cells.columns)
    else:
        parquet = pq.ParquetFile(str(cells))
        columns = parquet.schema_arrow.names
        batches = (batch.to_pandas() for batch in parquet.iter_batches(batch_size=batch_rows))
    for required in ("Metadata_Plate", "Metadata_Well", "Metadata_Compound", "Metadata_Concentration"):
        if required not in columns:
            where = None if isinstance(cells, pd.DataFrame) else cells
            raise CytolensError(f"single-cell table has no {required} column", path=where)
    features = [column for column in columns if not column.startswith("Metadata_")]
    if not features:
        raise CytolensError("single-cell table has no feature columns (all start with Metadata_)")
    meta_columns = [column for column in WELL_METADATA if column in columns]

    sums: dict[tuple[str, str], np.ndarray] = {}
    counts: dict[tuple[str, str], int] = {}
    first_rows: dict[tuple[str, str], dict[str, Any]] = {}
    dmso: dict[str, list[np.ndarray]] = {}
    for frame in batches:
        if frame.empty:
            continue
        values = frame[features].to_numpy(dtype=np.float64)
        keys = list(zip(frame["Metadata_Plate"].astype(str), frame["Metadata_Well"].astype(str), strict=True))
        codes, uniques = pd.factorize(pd.Series(keys, dtype=object))
        group_sums = np.zeros((len(uniques), len(features)))
        _grouped_sum(group_sums, codes, values)
        group_counts = np.bincount(codes, minlength=len(uniques))
        first_index = pd.Series(np.arange(len(frame))).groupby(codes).first().to_numpy()
        for g, key in enumerate(uniques):
            if key in sums:
                sums[key] += group_sums[g]
                counts[key] += int(group_counts[g])
            else:
                sums[key] = group_sums[g].copy()
                counts[key] = int(group_counts[g])
                first_rows[key] = frame.iloc[int(first_index[g])][meta_columns].to_dict()
        control = _is_control(frame["Metadata_Compound"])
        if control.any():
            plates = frame["Metadata_Plate"].astype(str).to_numpy()[control]
            control_values = values[control].astype(np.float32)
            for plate in np.unique(plates):
                dmso.setdefault(str(plate), []).append(control_values[plates == plate])
    if not sums:
        raise CytolensError("single-cell table has no rows")
    keys = sorted(sums)
    metadata = pd.DataFrame([first_rows[key] for key in keys], columns=meta_columns)
    metadata["Metadata_Cell_Count"] = np.array([counts[key] for key in keys], dtype=np.int64)
    means = np.stack([sums[key] / counts[key] for key in keys])
    dmso_cells = {plate: np.concatenate(parts) for plate, parts in dmso.items()}
    return WellTable(metadata=metadata, means=means, features=features, dmso_cells=dmso_cells)


def _grouped_sum(out: np.ndarray, codes: np.ndarray, values: np.ndarray) -> None:
    # Sort once, then reduceat: much faster than np.add.at for many groups.
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    out[sorted_codes[starts]] += np.add.reduceat(values[order], starts, axis=0)


def normalize_wells(wells: WellTable, stats: dict[str, tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Well means normalised per plate: ``(mean - centre[plate]) / scale[plate]``.

    Raises
    ------
    CytolensError
        If a plate has wells but no DMSO cells.
    """
    plates = wells.metadata["Metadata_Plate"].astype(str).to_numpy()
    missing = sorted(set(plates) - set(stats))
    if missing:
        raise CytolensError(f"plates without DMSO cells cannot be normalised: {', '.join(missing[:5])}")
    out = np.empty_like(wells.means)
    for plate in np.unique(plates):
        rows = plates == plate
        centre, scale = stats[plate]
        out[rows] = (wells.means[rows] - centre) / scale
    return out


# ------------------------------------------------------------------------------------------------ treatments


def _treatment_keys(meta: pd.DataFrame) -> pd.Series:
    return treatment_key(meta["Metadata_Compound"], meta["Metadata_Concentration"])


def _treatment_metadata(metadata: pd.DataFrame, keys: pd.Series) -> pd.DataFrame:
    rows = []
    for key, group in metadata.groupby(keys, sort=True):
        moas = group["Metadata_MOA"].dropna().astype(str).unique() if "Metadata_MOA" in group else []
        batches = sorted(group["Metadata_Batch"].dropna().astype(str).unique()) if "Metadata_Batch" in group else []
        rows.append({
            "key": key,
            "Metadata_Compound": group["Metadata_Compound"].iloc[0],
            "Metadata_Concentration": group["Metadata_Concentration"].iloc[0],
            "Metadata_MOA": moas[0] if len(moas) else pd.NA,
            # A treatment seen in several batches (a control on every plate) lists them all, joined by "|".
            "Metadata_Batch": "|".join(batches) if batches else pd.NA,
        })
    return pd.DataFrame(rows)


def aggregate_treatments_mean(wells: WellTable, values: np.ndarray | None = None) -> pd.DataFrame:
    """CytoGAN's treatment profiles: the mean over all the treatment's cells (cell-count-weighted well means).

    Parameters
    ----------
    wells : WellTable
        Raw well means and counts.
    values : (n_wells, F) ndarray, optional
        Per-well values to average instead of the raw means (e.g. whitened well means).

    Returns
    -------
    DataFrame
        One row per treatment: metadata, ``Metadata_Well_Count``, ``Metadata_Cell_Count``, then features.
    """
    values = wells.means if values is None else values
    meta = wells.metadata
    keys = _treatment_keys(meta)
    counts = meta["Metadata_Cell_Count"].to_numpy(dtype=np.float64)
    out_meta = _treatment_metadata(meta, keys)
    profiles = []
    well_counts, cell_counts = [], []
    for key in out_meta["key"]:
        rows = (keys == key).to_numpy()
        weights = counts[rows]
        profiles.append(weights @ values[rows] / weights.sum())
        well_counts.append(int(rows.sum()))
        cell_counts.append(int(weights.sum()))
    out_meta["Metadata_Well_Count"] = well_counts
    out_meta["Metadata_Cell_Count"] = cell_counts
    return _assemble(out_meta.drop(columns="key"), np.array(profiles), wells.features)


def aggregate_treatments_median(wells: WellTable, values: np.ndarray) -> pd.DataFrame:
    """The BBBC021 protocol's treatment profiles: the median over the treatment's wells of ``values``.

    Parameters
    ----------
    wells : WellTable
        Well metadata and counts.
    values : (n_wells, F) ndarray
        The normalised well means.
    """
    meta = wells.metadata
    keys = _treatment_keys(meta)
    counts = meta["Metadata_Cell_Count"].to_numpy()
    out_meta = _treatment_metadata(meta, keys)
    profiles, well_counts, cell_counts = [], [], []
    for key in out_meta["key"]:
        rows = (keys == key).to_numpy()
        profiles.append(np.median(values[rows], axis=0))
        well_counts.append(int(rows.sum()))
        cell_counts.append(int(counts[rows].sum()))
    out_meta["Metadata_Well_Count"] = well_counts
    out_meta["Metadata_Cell_Count"] = cell_counts
    return _assemble(out_meta.drop(columns="key"), np.array(profiles), wells.features)


def _assemble(meta: pd.DataFrame, values: np.ndarray, features: list[str]) -> pd.DataFrame:
    data = pd.DataFrame(values.reshape(len(meta), len(features)), columns=features, index=meta.index)
    return pd.concat([meta.reset_index(drop=True), data.reset_index(drop=True)], axis=1)


# ------------------------------------------------------------------------------------------------ writer


def build_profiles(
    wells: WellTable,
    *,
    normalization: str = "standard",
    whiten: bool = False,
    whiten_regularization: float = 1e-2,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Well and treatment tables of both aggregations (see the module docstring for the markers).

    Returns
    -------
    wells_table, treatments_table : DataFrame
    """
    check_choice("normalization", normalization, NORMALIZATIONS)
    label = "dmso" if normalization == "standard" else "dmso_robust"
    stats = plate_dmso_statistics(wells.dmso_cells, normalization=normalization)
    normalized = normalize_wells(wells, stats)
    well_tables = [wells.table(None, "raw"), wells.table(normalized, label)]
    treatments = [
        aggregate_treatments_mean(wells).assign(Metadata_Aggregation="cytogan"),
        aggregate_treatments_median(wells, normalized).assign(Metadata_Aggregation="bbbc021"),
    ]
    if whiten:
        raw_dmso = np.concatenate(list(wells.dmso_cells.values()))
        mean, matrix = fit_whitening(raw_dmso, regularization=whiten_regularization)
        whitened_means = (wells.means - mean) @ matrix
        mean_profiles = aggregate_treatments_mean(wells, whitened_means)
        treatments.append(mean_profiles.assign(Metadata_Aggregation="cytogan+whiten"))
        normalized_dmso = np.concatenate(
            [(cells - stats[plate][0]) / stats[plate][1] for plate, cells in wells.dmso_cells.items()]
        )
        mean, matrix = fit_whitening(normalized_dmso, regularization=whiten_regularization)
        whitened = (normalized - mean) @ matrix
        well_tables.append(wells.table(whitened, f"{label}+whiten"))
        treatments.append(aggregate_treatments_median(wells, whitened).assign(Metadata_Aggregation="bbbc021+whiten"))
    return _metadata_first(pd.concat(well_tables, ignore_index=True), wells.features), _metadata_first(
        pd.concat(treatments, ignore_index=True), wells.features
    )


def _metadata_first(table: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """pycytominer's column order: ``Metadata_`` columns, then the features."""
    return table[[c for c in table.columns if str(c).startswith("Metadata_")] + features]


def select_well_features(wells: WellTable, *, normalization: str = "standard") -> FeatureSelection:
    """pycytominer's feature selection on the DMSO-normalised well means (see the module docstring)."""
    from cytolens.profile.feature_selection import select_features

    normalized = normalize_wells(wells, plate_dmso_statistics(wells.dmso_cells, normalization=normalization))
    return select_features(wells.table(normalized, "dmso"), wells.features)


def write_profiles(
    folder: str | Path,
    *,
    normalization: str = "standard",
    whiten: bool = False,
    whiten_regularization: float = 1e-2,
    feature_select: bool | None = None,
) -> dict[str, Any]:
    """Aggregate ``FOLDER/single_cells.parquet`` into ``wells.parquet`` and ``treatments.parquet``.

    Also records the aggregation settings in ``FOLDER/profile.json`` (created if missing).

    Parameters
    ----------
    folder : path
        A profiles folder with ``single_cells.parquet``.
    normalization, whiten, whiten_regularization
        See :func:`build_profiles`.
    feature_select : bool or None, default None
        Reduce the features with pycytominer first (see the module docstring); None: only for classical
        features (``profile.json`` kind ``classical``). Without pycytominer every feature is kept.

    Returns
    -------
    dict
        ``{"wells": path, "treatments": path, "feature_selection": dict or None}`` (what ``profile.json``
        records of the selection; its ``tool`` says why nothing was selected when ``applied`` is false).
    """
    folder = Path(folder)
    source = folder / SINGLE_CELLS
    if not source.is_file():
        raise CytolensError(f"no {SINGLE_CELLS} (run 'cytolens profile embed' first)", path=folder)
    info_path = folder / PROFILE_JSON
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    wells = read_well_means(source)
    if feature_select is None:
        feature_select = info.get("kind") == "classical"
    selection = select_well_features(wells, normalization=normalization) if feature_select else None
    if selection is not None:
        wells = wells.subset(selection.features)
    wells_table, treatments_table = build_profiles(
        wells, normalization=normalization, whiten=whiten, whiten_regularization=whiten_regularization
    )
    paths = {"wells": folder / WELLS, "treatments": folder / TREATMENTS}
    with atomic_path(paths["wells"]) as tmp:
        wells_table.to_parquet(tmp, index=False)
    with atomic_path(paths["treatments"]) as tmp:
        treatments_table.to_parquet(tmp, index=False)
    info["aggregation"] = {
        "normalization": normalization,
        "whiten": bool(whiten),
        "whiten_regularization": whiten_regularization if whiten else None,
        "aggregations": sorted(treatments_table["Metadata_Aggregation"].unique()),
        "n_wells": int(len(wells.metadata)),
        "n_treatments": int(treatments_table["Metadata_Aggregation"].eq("cytogan").sum()),
        "n_dmso_cells": int(sum(len(v) for v in wells.dmso_cells.values())),
        "feature_selection": selection.record() if selection is not None else {"applied": False,
                                                                                "tool": "not requested"},
    }
    write_text_atomic(info_path, json.dumps(info, indent=2, default=str) + "\n")
    return {**paths, "feature_selection": info["aggregation"]["feature_selection"]}
