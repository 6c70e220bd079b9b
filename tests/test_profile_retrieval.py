"""JUMP-style mAP (phenotypic activity and consistency), its p- and q-values, and `profile evaluate`'s map tables.

The expected numbers are worked out by hand in the comments: profiles are unit vectors at the given angles in a
plane, so cosine similarity falls as the angle between two profiles grows and every rank list can be read off
the angles.
"""

from __future__ import annotations

import itertools
import json
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cytolens.core.errors import CytolensError
from cytolens.evaluation.stats import benjamini_hochberg, permutation_p_value
from cytolens.profile.moa import evaluate_moa
from cytolens.profile.retrieval import (
    MISSING_COPAIRS, average_precision_null, copairs_available, phenotypic_activity, phenotypic_consistency,
    query_p_values,
)

pytest.importorskip("copairs")


def at_angles(rows: list[tuple], columns: list[str]) -> pd.DataFrame:
    """A profile table from ``(metadata..., angle in degrees)`` rows: features ``f0, f1`` = (cos, sin)."""
    table = pd.DataFrame([row[:-1] for row in rows], columns=columns)
    angles = np.deg2rad([row[-1] for row in rows])
    table["f0"], table["f1"] = np.cos(angles), np.sin(angles)
    return table


# Six well profiles: treatment T's three replicates at 0°, 10°, 60° and three DMSO wells at 30°, 100°, 180°.
#   T@0°  ranks T@10° (10° away, +), D@30° (30°), T@60° (60°, +), D@100°, D@180°: positives at ranks 1, 3
#         → AP = (1/1 + 2/3) / 2 = 5/6.
#   T@10° ranks T@0° (10°, +), D@30° (20°), T@60° (50°, +), D@100° (90°), D@180° (170°) → AP = 5/6.
#   T@60° ranks D@30° (30°), D@100° (40°), T@10° (50°, +), T@0° (60°, +), D@180° (120°): ranks 3, 4
#         → AP = (1/3 + 2/4) / 2 = 5/12.
#   mAP(T) = (5/6 + 5/6 + 5/12) / 3 = 25/36.
ACTIVITY_ROWS = [("T", 1.0, 0), ("T", 1.0, 10), ("T", 1.0, 60), ("DMSO", 0.0, 30), ("DMSO", 0.0, 100),
                 ("DMSO", 0.0, 180)]
# The AP of 2 positives among 5 ranks, for each of the C(5, 2) = 10 equally likely rank pairs (r1, r2):
# (1/r1 + 2/r2) / 2 — (1,2) 1, (1,3) 5/6, (1,4) 3/4, (1,5) 7/10, (2,3) 7/12, (2,4) 1/2, (2,5) 9/20,
# (3,4) 5/12, (3,5) 11/30, (4,5) 13/40.
NULL_2_OF_5 = [Fraction(1), Fraction(5, 6), Fraction(3, 4), Fraction(7, 10), Fraction(7, 12), Fraction(1, 2),
               Fraction(9, 20), Fraction(5, 12), Fraction(11, 30), Fraction(13, 40)]


def activity_wells() -> pd.DataFrame:
    return at_angles(ACTIVITY_ROWS, ["Metadata_Compound", "Metadata_Concentration"])


def test_activity_map_equals_the_hand_computed_value_on_six_profiles() -> None:
    result = phenotypic_activity(activity_wells(), null_size=20000, seed=0)
    assert result.profiles["average_precision"].tolist() == pytest.approx([5 / 6, 5 / 6, 5 / 12])
    assert result.profiles["n_positives"].tolist() == [2, 2, 2]
    assert result.profiles["n_total"].tolist() == [5, 5, 5]
    (query,) = result.queries.itertuples()
    assert query.query == "T@1" and query.n_profiles == 3 and query.n_controls == 3
    assert query.mean_average_precision == pytest.approx(25 / 36)
    # Exact p: the share of the 10³ equally likely triples of null APs whose mean reaches 25/36 — 214 of them.
    exact = sum(sum(t) / 3 >= Fraction(25, 36) for t in itertools.product(NULL_2_OF_5, repeat=3)) / 1000
    assert exact == 0.214
    assert query.p_value == pytest.approx(exact, abs=0.01)  # 20,000 draws: standard error 0.003
    assert result.mean_map == pytest.approx(25 / 36)


def test_p_values_count_ties() -> None:
    # (1 + #{null ≥ 0.5}) / (1 + 4) = (1 + 3) / 5: the two nulls equal to the observed value count.
    assert permutation_p_value(0.5, [1.0, 0.5, 0.5, 0.2]) == pytest.approx(4 / 5)
    assert permutation_p_value(1.0, [1.0, 0.5]) == pytest.approx(2 / 3)
    # Sums of ratios that are equal but differ in the last bit still tie.
    assert permutation_p_value(1 / 3 + 2 / 3 - 1e-15, [1.0]) == pytest.approx(1.0)
    # One positive among 5 ranks: AP ∈ {1, 1/2, 1/3, 1/4, 1/5}, each with probability 1/5. Ranked first
    # (AP 1): p = P(null ≥ 1) = 0.2; second (AP 1/2): P(null ≥ 1/2) = 0.4.
    profiles = pd.DataFrame({"query": ["first", "second"], "n_positives": [1, 1], "n_total": [5, 5],
                             "average_precision": [1.0, 0.5]})
    p = query_p_values(profiles, null_size=20000, seed=1).set_index("query")["p_value"]
    assert p["first"] == pytest.approx(0.2, abs=0.01)
    assert p["second"] == pytest.approx(0.4, abs=0.01)
    null = average_precision_null(1, 5, 20000, np.random.default_rng(1))
    assert set(np.round(null, 6)) == {1.0, 0.5, 0.333333, 0.25, 0.2}


@pytest.mark.skipif(not copairs_available(), reason="copairs not installed")
def test_copairs_counts_only_strictly_greater_null_values() -> None:
    """Why the p-values are ours: copairs 0.5.5 (pinned) ignores ties. If this fails, copairs changed: re-check
    whether cytolens still needs its own p-values."""
    from copairs.map import average_precision, mean_average_precision

    # One treatment of two wells; its positive ranks first among 5 (4 DMSO wells): AP 1, true p = 0.2.
    wells = at_angles([("T", 1.0, 0), ("T", 1.0, 5), ("D", 0.0, 40), ("D", 0.0, 90), ("D", 0.0, 135),
                       ("D", 0.0, 180)], ["compound", "control"])
    wells["control"] = wells["compound"] == "D"
    wells["reference"] = np.where(wells["control"], np.arange(6), -1)
    aps = average_precision(wells, wells[["f0", "f1"]].to_numpy(), ["compound", "reference"], [], [], ["control"],
                            progress_bar=False)
    theirs = mean_average_precision(aps[~aps["control"]].iloc[[0]], ["compound"], null_size=1000, threshold=0.05,
                                    seed=0, progress_bar=False)
    assert theirs["mean_average_precision"].iloc[0] == 1.0
    assert theirs["p_value"].iloc[0] == pytest.approx(1 / 1001)


def test_benjamini_hochberg_by_hand() -> None:
    # Sorted p: .01, .03, .04, .2 (m = 4); p·m/rank: .04, .06, .0533, .2; then the running minimum from the top:
    # .04, .0533, .0533, .2. NaN (no test) stays NaN and does not count in m.
    q = benjamini_hochberg([0.01, 0.04, 0.03, np.nan, 0.2])
    assert q[[0, 1, 2, 4]] == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.2])
    assert np.isnan(q[3])


# Treatments for consistency (angle in degrees): MOA A = compound A1 at two concentrations (0°, 5°) and A2 (40°);
# MOA B = B1 (22°), B2 (90°); a DMSO profile at 1° is never a query nor a candidate.
#   A1@1 (0°): candidates B1 (22°), A2 (40°, +), B2 (90°); A1@2 is the same compound, so neither positive nor
#         negative → AP = 1/2 (were it a positive, at 5° it would rank first: AP (1 + 2/3)/2).
#   A1@2 (5°): B1 (17°), A2 (35°, +), B2 (85°) → 1/2.
#   A2 (40°): B1 (18°), A1@2 (35°, +), A1@1 (40°, +), B2 (50°) → (1/2 + 2/3) / 2 = 7/12.
#   B1 (22°): A1@2 (17°), A2 (18°), A1@1 (22°), B2 (68°, +) → 1/4.
#   B2 (90°): A2 (50°), B1 (68°, +), A1@2, A1@1 → 1/2.
#   mAP(A) = (1/2 + 1/2 + 7/12) / 3 = 19/36; mAP(B) = (1/4 + 1/2) / 2 = 3/8.
CONSISTENCY_ROWS = [("A1", 1.0, "A", 0), ("A1", 2.0, "A", 5), ("A2", 1.0, "A", 40), ("B1", 1.0, "B", 22),
                    ("B2", 1.0, "B", 90), ("DMSO", 0.0, "DMSO", 1)]


def consistency_treatments() -> pd.DataFrame:
    return at_angles(CONSISTENCY_ROWS, ["Metadata_Compound", "Metadata_Concentration", "Metadata_MOA"])


def test_consistency_excludes_the_same_compound() -> None:
    result = phenotypic_consistency(consistency_treatments(), null_size=2000)
    ap = dict(zip(result.profiles["Metadata_Compound"] + "@" + result.profiles["Metadata_Concentration"].astype(str),
                  result.profiles["average_precision"], strict=True))
    assert ap == pytest.approx({"A1@1.0": 1 / 2, "A1@2.0": 1 / 2, "A2@1.0": 7 / 12, "B1@1.0": 1 / 4,
                                "B2@1.0": 1 / 2})
    # A1's rank lists hold 3 candidates (A2, B1, B2), not 4: its other concentration is left out.
    assert result.profiles["n_total"].tolist() == [3, 3, 4, 4, 4]
    maps = result.queries.set_index("query")["mean_average_precision"]
    assert maps.to_dict() == pytest.approx({"A": 19 / 36, "B": 3 / 8})
    assert result.queries.set_index("query").loc["A", "n_compounds"] == 2


def test_consistency_aps_equal_the_nsc_average_precision() -> None:
    """copairs' APs and our NSC ranking agree: the same candidates (other compounds), the same positives."""
    table = consistency_treatments()
    ours = evaluate_moa(table, protocol="NSC", average_precision=True).average_precision.to_numpy()
    theirs = phenotypic_consistency(table, null_size=100).profiles["average_precision"].to_numpy()
    assert theirs == pytest.approx(ours)


def test_fraction_retrieved() -> None:
    rng = np.random.default_rng(0)
    rows = [("DMSO", 0.0, angle) for angle in rng.uniform(0, 360, 20)]
    # Two treatments whose three wells sit together away from the controls' spread; one among them at random.
    rows += [("far", 1.0, 5.0 + d) for d in (0, 0.1, 0.2)] + [("far2", 1.0, 185.0 + d) for d in (0, 0.1, 0.2)]
    rows += [("like DMSO", 1.0, angle) for angle in rng.uniform(0, 360, 3)]
    wells = at_angles(rows, ["Metadata_Compound", "Metadata_Concentration"])
    # The controls must not sit among the tight replicates for the hand claim below.
    wells = wells[~((wells["Metadata_Compound"] == "DMSO") & (np.abs(wells["f1"]) < 0.1))]
    result = phenotypic_activity(wells, null_size=2000, seed=0)
    queries = result.queries.set_index("compound")
    assert queries.loc["far", "mean_average_precision"] == 1.0  # each replicate's two others rank first
    assert queries.loc["far", "p_value"] == pytest.approx(1 / 2001)
    assert bool(queries.loc["far", "retrieved"]) and bool(queries.loc["far2", "retrieved"])
    assert not bool(queries.loc["like DMSO", "retrieved"])
    assert result.fraction_retrieved == pytest.approx(2 / 3)
    assert result.summary()["n_retrieved"] == 2


def test_errors() -> None:
    with pytest.raises(CytolensError, match="DMSO wells"):
        phenotypic_activity(activity_wells().query("Metadata_Compound != 'DMSO'"))
    with pytest.raises(CytolensError, match="missing or infinite"):
        phenotypic_activity(activity_wells().assign(f0=np.nan))
    with pytest.raises(ValueError, match="threshold"):
        phenotypic_consistency(consistency_treatments(), threshold=5)
    # A MOA with a single compound has no positive: noted, and not a query.
    lone = consistency_treatments().query("Metadata_Compound != 'B2'")
    result = phenotypic_consistency(lone, null_size=100)
    assert list(result.queries["query"]) == ["A"] and "B" in result.notes[0]


# ------------------------------------------------------------------------------------------------ the command


def profiles_folder(root: Path) -> Path:
    """A profiles folder with wells.parquet (raw and DMSO-normalised) and treatments.parquet (two aggregations)."""
    folder = root / "profiles"
    folder.mkdir()
    treatments = consistency_treatments().assign(Metadata_Batch="W1")
    pd.concat([treatments.assign(Metadata_Aggregation=a) for a in ("cytogan", "bbbc021")],
              ignore_index=True).to_parquet(folder / "treatments.parquet", index=False)
    wells = activity_wells()
    pd.concat([wells.assign(Metadata_Normalization=n) for n in ("raw", "dmso")],
              ignore_index=True).to_parquet(folder / "wells.parquet", index=False)
    (folder / "profile.json").write_text(json.dumps({"label": "toy", "method": "lsgan"}))
    return folder


def test_cli_evaluate_writes_the_map_tables(tmp_path: Path, cli) -> None:
    folder = profiles_folder(tmp_path)
    result = cli("profile", "evaluate", folder, "--null-size", "500")
    out = folder / "evaluation"
    summary = pd.read_csv(out / "map_summary.csv")
    assert set(summary["aggregation"]) == {"cytogan", "bbbc021"}
    activity = summary[summary["measure"].str.contains("activity")]
    assert activity["mean_map"].tolist() == pytest.approx([25 / 36, 25 / 36])
    assert set(activity["profiled"]) == {"wells (raw)", "wells (dmso)"}
    per_query = pd.read_csv(out / "map.csv")
    consistency = per_query[per_query["measure"].str.contains("consistency")]
    assert consistency.set_index(["aggregation", "query"]).loc[("bbbc021", "A"), "mean_average_precision"] == \
        pytest.approx(19 / 36)
    assert {"p_value", "q_value", "retrieved"} <= set(per_query.columns)
    text = (out / "map.md").read_text()
    assert "phenotypic activity" in text and "fraction retrieved" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["profiles"][0]["map"]["bbbc021"]["activity"]["mean_map"] == pytest.approx(25 / 36)
    assert "mean mAP 0.694" in result.out
    # Every table names its measure.
    assert "accuracy over treatments" in (out / "moa_accuracy.md").read_text()


def without_copairs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import copairs`` fail as in a base install (None in sys.modules raises ImportError)."""
    for name in [name for name in sys.modules if name == "copairs" or name.startswith("copairs.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "copairs", None)
    monkeypatch.setitem(sys.modules, "copairs.map", None)


def test_cli_evaluate_without_copairs(tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = profiles_folder(tmp_path)
    without_copairs(monkeypatch)
    assert not copairs_available()
    result = cli("profile", "evaluate", folder)
    out = folder / "evaluation"
    assert (out / "moa_accuracy.csv").is_file() and not (out / "map.csv").exists()
    assert (result.out + result.err).count("pip install 'cytolens[eval]'") == 1
    assert json.loads((out / "metrics.json").read_text())["map"] == MISSING_COPAIRS
    # Asked for explicitly: one line, status 2, nothing evaluated.
    failed = cli("profile", "evaluate", folder, "--map", "--out", tmp_path / "other", code=2)
    assert "pip install 'cytolens[eval]'" in failed.error
    assert not (tmp_path / "other").exists()
    # --no-map: no mAP, no message.
    quiet = cli("profile", "evaluate", folder, "--no-map", "--out", tmp_path / "quiet")
    assert "cytolens[eval]" not in quiet.out + quiet.err
    # The report says why its mAP table is missing, and only where it was wanted.
    from cytolens.profile.report_section import section_for_folder

    assert "Not computed: " + MISSING_COPAIRS in "\n".join(section_for_folder(out).results).replace("&#x27;", "'")
    assert "Not computed" not in "\n".join(section_for_folder(tmp_path / "quiet").results)


def test_report_section_shows_the_map_table(tmp_path: Path, cli) -> None:
    from cytolens.profile.report_section import section_for_folder

    folder = profiles_folder(tmp_path)
    cli("profile", "evaluate", folder, "--null-size", "200")
    section = section_for_folder(folder / "evaluation")
    assert section is not None
    html = "\n".join(section.results)
    assert "phenotypic activity" in html and "fraction retrieved" in html
    assert "NSC / NSCB accuracy" in html  # the accuracy table names its measure too


def test_a_screen_without_dmso_wells_gets_consistency_and_a_note(tmp_path: Path) -> None:
    from cytolens.profile.evaluate import write_evaluation

    folder = profiles_folder(tmp_path)
    wells = pd.read_parquet(folder / "wells.parquet")
    wells[wells["Metadata_Compound"] != "DMSO"].to_parquet(folder / "wells.parquet", index=False)
    result = write_evaluation([folder], tmp_path / "eval", retrieval=True, null_size=100)
    assert result["map"]["measure"].str.contains("consistency").all()
    text = (tmp_path / "eval" / "map.md").read_text()
    assert "no phenotypic activity" in text and "needs DMSO wells" in text
