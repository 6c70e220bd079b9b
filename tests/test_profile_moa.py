"""NSC, NSCB, CytoGAN's per-compound mean and mAP on a hand-built table whose answers are worked out below."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cytolens.core.errors import CytolensError
from cytolens.profile.evaluate import table1, write_evaluation
from cytolens.profile.moa import cosine_similarity, evaluate_moa, mean_average_precision, moa_queries

# Unit-ish vectors: MOA A along x, B along y, C along z, the kinase inhibitors along w.
# Cosine similarities used below (rounded): A1·A2 .9986, A1·C1@1 .8, A2·C1@1 .7989, A1·C1@2 .7021,
# A2·C1@2 .7011, C1@2·C2 .7121, C1@1·C2 .6, B1·B2 .9988, K1·K2 .995, A2·B2 .1023, K2·C2 .0995.
ROWS = [
    # compound, concentration, MOA, batch, vector
    ("A1", 1.0, "A", "W1", [1.0, 0.0, 0.0, 0.0]),
    ("A2", 1.0, "A", "W1", [0.95, 0.05, 0.0, 0.0]),
    ("B1", 1.0, "B", "W2", [0.0, 1.0, 0.0, 0.0]),
    ("B2", 1.0, "B", "W3", [0.05, 1.0, 0.0, 0.0]),
    ("C1", 1.0, "C", "W2", [0.8, 0.0, 0.6, 0.0]),
    ("C1", 2.0, "C", "W2", [0.7, 0.0, 0.71, 0.0]),
    ("C2", 1.0, "C", "W3", [0.0, 0.0, 1.0, 0.0]),
    ("K1", 1.0, "Kinase inhibitors", "W4", [0.0, 0.0, 0.0, 1.0]),
    ("K2", 1.0, "Kinase inhibitors", "W4", [0.0, 0.0, 0.1, 1.0]),
    # Never queries nor candidates: DMSO, and a compound without a known MOA. Both sit exactly on A1.
    ("DMSO", 0.0, "DMSO", "W1|W2|W3|W4", [1.0, 0.0, 0.0, 0.0]),
    ("X", 1.0, None, "W2", [1.0, 0.0, 0.0, 0.0]),
]


def hand_table() -> pd.DataFrame:
    meta = pd.DataFrame(
        [r[:4] for r in ROWS], columns=["Metadata_Compound", "Metadata_Concentration", "Metadata_MOA", "Metadata_Batch"]
    )
    features = pd.DataFrame([r[4] for r in ROWS], columns=[f"f{i}" for i in range(4)])
    # Scaling a profile must not change anything (cosine).
    features.iloc[3] *= 7.0
    return pd.concat([meta, features], axis=1)


def test_queries_exclude_dmso_and_unknown_moa() -> None:
    table = hand_table()
    expected = ["A1", "A2", "B1", "B2", "C1", "C1", "C2", "K1", "K2"]
    assert list(moa_queries(table, "NSC")["Metadata_Compound"]) == expected
    assert "K1" not in set(moa_queries(table, "NSCB")["Metadata_Compound"])


def test_nsc_on_hand_built_table() -> None:
    result = evaluate_moa(hand_table(), protocol="NSC")
    predicted = dict(zip(zip(result.predictions["compound"], result.predictions["concentration"]),
                         result.predictions["predicted_moa"]))  # fmt: skip
    # A1→A2, A2→A1, B1↔B2, C1@1→A1 (wrong), C1@2→C2, C2→C1@2, K1↔K2.
    assert predicted[("C1", 1.0)] == "A"
    assert predicted[("C1", 2.0)] == "C"
    assert result.correct == 8 and result.n == 9
    assert result.accuracy == pytest.approx(8 / 9)
    # CytoGAN's measure: compound C1 scores 1/2, the seven others 1 → 7.5 / 8.
    assert result.per_compound_accuracy == pytest.approx(7.5 / 8)
    neighbours = dict(zip(result.predictions["compound"] + "@" + result.predictions["concentration"].astype(str),
                          result.predictions["neighbour_compound"]))  # fmt: skip
    assert neighbours["A1@1.0"] == "A2"  # not DMSO or X, which are identical to A1


def test_nscb_on_hand_built_table() -> None:
    result = evaluate_moa(hand_table(), protocol="NSCB")
    # Kinase inhibitors dropped; A1 and A2 share week W1, so each falls to C1@1 (wrong); C1@1 still → A1
    # (B1 is excluded: same week W2); B1 → B2, B2 → B1, C1@2 → C2, C2 → C1@2.
    assert result.n == 7 and result.correct == 4
    assert result.accuracy == pytest.approx(4 / 7)
    assert result.per_compound_accuracy == pytest.approx(3.5 / 6)
    confusion = result.confusion()
    assert confusion.loc["A", "C"] == 2
    assert confusion.loc["B", "B"] == 2
    assert confusion.loc["C", "A"] == 1 and confusion.loc["C", "C"] == 2
    assert int(confusion.to_numpy().sum()) == 7


def test_average_precision_by_hand() -> None:
    result = evaluate_moa(hand_table(), protocol="NSC", average_precision=True)
    ap = dict(zip(result.predictions["compound"] + "@" + result.predictions["concentration"].astype(str),
                  result.average_precision))  # fmt: skip
    # C1@1 ranks A1 (.8), A2 (.7989), C2 (.6), ...: its one positive (C2) is 3rd → AP 1/3.
    assert ap["C1@1.0"] == pytest.approx(1 / 3)
    # A1's only positive candidate A2 is first.
    assert ap["A1@1.0"] == pytest.approx(1.0)
    # C2's positives C1@2 (.7121, 1st) and C1@1 (.6, 2nd) → AP 1.
    assert ap["C2@1.0"] == pytest.approx(1.0)
    assert mean_average_precision(hand_table()) == pytest.approx(float(np.nanmean(list(ap.values()))))


def test_query_without_candidate_counts_as_wrong() -> None:
    table = hand_table()
    table = table[table["Metadata_Compound"].isin(["A1", "A2"])].copy()
    result = evaluate_moa(table, protocol="NSCB")  # same week: no candidate at all
    assert result.n == 2 and result.correct == 0
    assert result.predictions["predicted_moa"].isna().all()
    assert "(none)" in result.confusion().columns


def test_errors() -> None:
    table = hand_table()
    with pytest.raises(CytolensError, match="mix aggregations"):
        evaluate_moa(table.assign(Metadata_Aggregation=["a", "b"] * 5 + ["a"]))
    with pytest.raises(CytolensError, match="Metadata_Batch"):
        evaluate_moa(table.drop(columns="Metadata_Batch"), protocol="NSCB")
    with pytest.raises(ValueError, match="did you mean|must be one of"):
        evaluate_moa(table, protocol="nsc")


def test_cosine_similarity_zero_rows() -> None:
    similarity = cosine_similarity(np.array([[1.0, 0.0], [0.0, 0.0], [2.0, 0.0]]))
    assert similarity[0, 2] == pytest.approx(1.0)
    assert similarity[1].tolist() == [0.0, 0.0, 0.0]


def test_write_evaluation_and_table1(tmp_path) -> None:
    folder = tmp_path / "profiles"
    folder.mkdir()
    base = hand_table()
    treatments = pd.concat(
        [base.assign(Metadata_Aggregation="cytogan"), base.assign(Metadata_Aggregation="bbbc021")], ignore_index=True
    )
    treatments.to_parquet(folder / "treatments.parquet", index=False)
    (folder / "profile.json").write_text(json.dumps({"label": "lsgan (run)", "method": "lsgan", "n_cells": 123}))
    outcome = write_evaluation([folder], tmp_path / "eval", average_precision=True)
    out = outcome["out"]
    for name in ("moa_accuracy.csv", "moa_accuracy.md", "predictions.csv", "confusion_nsc.csv", "confusion_nsc.png",
                 "confusion_nscb.csv", "table1.md", "table1.csv", "metrics.json"):
        assert (out / name).is_file(), name
    accuracy = pd.read_csv(out / "moa_accuracy.csv")
    row = accuracy[(accuracy["aggregation"] == "bbbc021") & (accuracy["protocol"] == "NSCB")].iloc[0]
    assert row["correct"] == 4 and row["n_treatments"] == 7
    table = outcome["table1"]
    # MOAs A, B, C and K are not BBBC021's 12: another task, so no paper numbers beside ours.
    assert not [index for index in table.index if not index.startswith("ours")]
    assert "paper's numbers beside ours" not in (out / "table1.md").read_text()
    ours = [index for index in table.index if index.startswith("ours: NSC, per-compound")][0]
    assert table.loc[ours, "LSGAN"] == pytest.approx(100 * 7.5 / 8)
    nscb = [index for index in table.index if index.startswith("ours: NSCB")][0]
    assert table.loc[nscb, "LSGAN"] == pytest.approx(100 * 4 / 7)
    assert "LSGAN + whitening" not in table.columns  # no whitened run of ours, and no paper column
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["profiles"][0]["results"]["bbbc021"]["NSC"]["correct"] == 8
    assert "per-compound" in (out / "moa_accuracy.md").read_text()


def test_table1_places_the_papers_numbers_beside_ours_on_bbbc021s_twelve_moas(tmp_path) -> None:
    from cytolens.data.bbbc021 import MOAS

    rng = np.random.default_rng(0)
    rows = [{"Metadata_Compound": f"{moa} {i}", "Metadata_Concentration": 1.0, "Metadata_MOA": moa,
             "Metadata_Batch": f"Week{i + 1}", **{f"f{j}": rng.normal() + 3 * (k == j) for j in range(12)}}
            for k, moa in enumerate(MOAS) for i in range(2)]
    folder = tmp_path / "profiles"
    folder.mkdir()
    pd.DataFrame(rows).assign(Metadata_Aggregation="cytogan").to_parquet(folder / "treatments.parquet", index=False)
    (folder / "profile.json").write_text(json.dumps({"label": "lsgan", "method": "lsgan"}))
    outcome = write_evaluation([folder], tmp_path / "eval")
    table = outcome["table1"]
    assert table.loc["CytoGAN, final version: NSC, per-compound mean (%)", "LSGAN"] == 68
    assert "LSGAN + whitening" in table.columns  # the paper's number, even without a whitened run of ours
    assert "paper's numbers beside ours" in (tmp_path / "eval" / "table1.md").read_text()


def test_table1_puts_classical_and_random_in_their_columns(tmp_path) -> None:
    folders = []
    for method in ("classical", "random", "dcgan"):
        folder = tmp_path / method
        folder.mkdir()
        hand_table().assign(Metadata_Aggregation="bbbc021").to_parquet(folder / "treatments.parquet", index=False)
        (folder / "profile.json").write_text(json.dumps({"label": method, "method": method}))
        folders.append(folder)
    outcome = write_evaluation(folders, tmp_path / "eval")
    table = outcome["table1"]
    assert {"CellProfiler [18]", "random D (control)", "DCGAN"} <= set(table.columns)
    assert (tmp_path / "eval" / "classical" / "confusion_nsc.csv").is_file()
    assert table1(outcome["evaluations"]).equals(table)
