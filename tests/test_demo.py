"""`cytolens demo` writes its run folder from simulated data, checked by the same code as `data check`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cytolens.demo import run_demo


def test_demo_writes_checked_data_manifest_and_figure(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "demo", per_class=3, size=64, seed=1, classify=False, segment=False, profile=False)
    out = tmp_path / "demo"
    assert result.check.ok
    summary = json.loads((out / "data_check.json").read_text())
    assert summary["classes"] == ["0", "0.1", "1"]
    assert summary["counts"] == {"0": {"": 3}, "0.1": {"": 3}, "1": {"": 3}}
    assert summary["bits_used_max"] <= 14
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert len(manifest) == 9 and set(manifest["class"]) == {"0", "0.1", "1"}
    figure = out / "figures" / "microtubule_examples.png"
    assert figure.read_bytes().startswith(b"\x89PNG")
    assert set(result.outputs) >= {figure, out / "manifest.parquet"}


def test_demo_segment_step_trains_evaluates_and_overlays_held_out_fields(tmp_path: Path) -> None:
    from cytolens.demo import segment_demo

    tiny = {"model_options": {"filters": [4, 8], "bottleneck": 8}, "patch_size": 32, "patches_per_epoch": 8,
            "epochs": 1, "validate_every": 1, "inference": {"tile": 64, "overlap": 8, "batch_size": 2}}
    outputs = segment_demo(tmp_path / "demo", seed=0, fields=4, field_shape=(96, 128), **tiny)
    run = tmp_path / "demo" / "segment"
    assert (run / "evaluation" / "table1.md") in outputs
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert 0.0 <= metrics["mean_dice"] <= 1.0 and metrics["images"] == 2  # fold 0's validation fields only
    # Overlays only for the fields fold 0 did not train on.
    manifest = pd.read_parquet(run / "manifest.parquet")
    held_out = set(manifest.loc[manifest["fold"] == 0, "stem"])
    overlays = {path.name.removesuffix("_overlay.png") for path in (run / "predictions").glob("*_overlay.png")}
    assert overlays == held_out
    assert (run / "predictions" / "cells.csv").is_file()


def test_demo_report_shows_the_sections_it_finds(tmp_path: Path) -> None:
    run_demo(tmp_path / "demo", per_class=2, size=64, seed=0, classify=False, segment=False, profile=False)
    page = (tmp_path / "demo" / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "No results found" in page


def test_demo_profile_step_compares_gan_classical_and_random_profiles(tmp_path: Path) -> None:
    from cytolens.demo import profile_demo
    from cytolens.run_report import write_run_report

    tiny = {"steps": 2, "batch_size": 8, "sample_every": 1, "checkpoint_every": 1, "log_every": 1,
            "max_minutes": None}
    outputs = profile_demo(tmp_path / "demo", seed=0, scale="tiny", **tiny)
    folder = tmp_path / "demo" / "profile"
    assert folder / "evaluation" / "table1.md" in outputs
    accuracy = pd.read_csv(folder / "evaluation" / "moa_accuracy.csv")
    # The three profiles of the same cells, each evaluated with both protocols on the same treatments.
    assert set(accuracy["profiles"]) == {"lsgan", "classical", "random D (control)"}
    assert set(accuracy["protocol"]) == {"NSC", "NSCB"}
    nsc = accuracy[accuracy["protocol"] == "NSC"]
    assert nsc.groupby("profiles")["n_treatments"].nunique().eq(1).all()
    assert nsc["accuracy_over_treatments"].between(0, 1).all()
    gan = pd.read_parquet(folder / "profiles" / "lsgan" / "treatments.parquet")
    assert sum(not c.startswith("Metadata_") for c in gan.columns) == 100  # the discriminator's 100-d layer
    figures = {path.name for path in (folder / "figures").glob("*.png")}
    assert {"cell_crops.png", "gan_loss_curves.png", "gan_real_vs_generated.png", "treatment_map.png"} <= figures
    page = write_run_report(tmp_path / "demo")[0].read_text()
    assert 'id="profile"' in page and "random D (control)" in page and page.count("data:image/png") >= 4
    assert "trained 2 of 2 planned steps" in page  # the report says how long the GAN trained
    assert 'id="segment"' not in page  # its evaluation/table1.csv is not taken for a segmentation table
