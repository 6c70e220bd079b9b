"""Embedding a cell store into Parquet profiles: pycytominer round trip, resume, the random control, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from profile_cells import write_store

from cytolens.core.errors import CytolensError, OptionError
from cytolens.profile import embed as embed_module
from cytolens.profile.embed import embed
from cytolens.profile.profiles import write_profiles


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_store(tmp_path_factory.mktemp("cells") / "cells", cells_per_well=2)


@pytest.fixture(scope="module")
def classical(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("profiles") / "classical"
    embed(store, out, features="classical", batch_size=5)
    write_profiles(out)
    return out


def test_single_cells_layout(classical: Path, store: Path) -> None:
    table = pd.read_parquet(classical / "single_cells.parquet")
    assert len(table) == 24
    meta = [c for c in table.columns if c.startswith("Metadata_")]
    assert table.columns[: len(meta)].tolist() == meta  # Metadata_ first
    assert table["Metadata_Cell_Index"].tolist() == list(range(24))
    assert "Cells_AreaShape_Area" in table.columns
    assert table["Cells_AreaShape_Area"].dtype == np.float32
    info = json.loads((classical / "profile.json").read_text())
    assert info["kind"] == "classical" and info["n_cells"] == 24 and info["method"] == "classical"
    assert not (classical / ".embed_chunks").exists()


# pycytominer sets a pandas option that pandas 3 deprecated when it is imported; not ours to fix.
@pytest.mark.filterwarnings("ignore:The 'mode.copy_on_write' option is deprecated")
def test_pycytominer_aggregate_round_trip(classical: Path) -> None:
    from pycytominer import aggregate

    cells = pd.read_parquet(classical / "single_cells.parquet")
    features = [c for c in cells.columns if not c.startswith("Metadata_")]
    theirs = aggregate(cells, strata=["Metadata_Plate", "Metadata_Well"], features=features, operation="mean")
    ours = pd.read_parquet(classical / "wells.parquet")
    ours = ours[ours["Metadata_Normalization"] == "raw"]
    merged = theirs.merge(ours, on=["Metadata_Plate", "Metadata_Well"], suffixes=("_theirs", "_ours"))
    assert len(merged) == len(theirs) == len(ours) == 12
    # The classical features were reduced by feature selection before aggregation: the kept ones are compared.
    kept = [feature for feature in features if feature in ours.columns]
    assert 0 < len(kept) < len(features)
    for feature in kept:
        np.testing.assert_allclose(merged[f"{feature}_ours"], merged[f"{feature}_theirs"], rtol=1e-5, atol=1e-6,
                                   err_msg=feature)  # fmt: skip
    # pycytominer's own feature inference finds the CellProfiler-style names.
    inferred = aggregate(cells, operation="mean")
    assert "Cells_AreaShape_Area" in inferred.columns


def test_classical_profiles_classify_the_toy_moas(classical: Path) -> None:
    from cytolens.profile.evaluate import evaluate_folder

    evaluation = evaluate_folder(classical)
    assert evaluation.results[("bbbc021", "NSC")].accuracy == 1.0  # big vs small cells: easy
    assert evaluation.results[("cytogan", "NSC")].n == 4  # 4 treatments, each on both plates


def test_resume_reuses_finished_chunks(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = embed_module.resolve_embedder

    def counting(*args, **kwargs):
        embedder = real(*args, **kwargs)
        inner = embedder.function

        def function(crops):
            calls.append(len(crops))
            if len(calls) == 3:
                raise KeyboardInterrupt  # the run dies on its third chunk
            return inner(crops)

        embedder.function = function
        return embedder

    monkeypatch.setattr(embed_module, "resolve_embedder", counting)
    out = tmp_path / "p"
    with pytest.raises(KeyboardInterrupt):
        embed(store, out, features="classical", batch_size=10)
    assert sorted(p.name for p in (out / ".embed_chunks").glob("chunk-*.parquet")) == ["chunk-000000.parquet",
                                                                                       "chunk-000001.parquet"]
    calls.clear()
    embed(store, out, features="classical", batch_size=10)
    assert calls == [4]  # only the last chunk (24 cells = 10 + 10 + 4) was computed again
    assert len(pd.read_parquet(out / "single_cells.parquet")) == 24
    calls.clear()
    embed(store, out, features="classical", batch_size=10)
    assert calls == []  # complete and unchanged: nothing to do


def test_random_discriminator_control(store: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "random"
    embed(store, out, features="random:cytogan-quick", batch_size=16)
    table = pd.read_parquet(out / "single_cells.parquet")
    assert [c for c in table.columns if c.startswith("GAN_")] == [f"GAN_{i}" for i in range(100)]
    info = json.loads((out / "profile.json").read_text())
    assert info["method"] == "random" and info["identity"] == {"kind": "random", "config": "cytogan-quick", "seed": 0}
    write_profiles(out, whiten=True)
    treatments = pd.read_parquet(out / "treatments.parquet")
    assert set(treatments["Metadata_Aggregation"]) == {"cytogan", "bbbc021", "cytogan+whiten", "bbbc021+whiten"}


def test_embed_errors(store: Path, tmp_path: Path) -> None:
    with pytest.raises(OptionError, match="classical"):
        embed(store, tmp_path / "x")
    with pytest.raises(OptionError, match="features"):
        embed(store, tmp_path / "x", features="sift")
    with pytest.raises(CytolensError, match="cell store"):
        embed(tmp_path / "nothing", tmp_path / "x", features="classical")


def test_cli_embed_and_evaluate(store: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "cli"
    # The form: the feature choice in place of RUN.
    cli("profile", "embed", "classical", store, "--out", out, "--whiten")
    assert (out / "treatments.parquet").is_file()
    # The same folder again with --features: reused, not recomputed.
    cli("profile", "embed", "--features", "classical", store, "--out", out)
    cli("profile", "aggregate", out, "--normalization", "robust")
    wells = pd.read_parquet(out / "wells.parquet")
    assert set(wells["Metadata_Normalization"]) == {"raw", "dmso_robust"}
    result = cli("profile", "evaluate", out, "--map")
    assert "per-compound mean" in result.out + result.err and "NSCB" in result.out + result.err
    assert (out / "evaluation" / "table1.md").is_file()
    # No RUN and no --features: one line, status 2.
    assert "--features classical" in cli("profile", "embed", store, "--out", tmp_path / "y", code=2).error
