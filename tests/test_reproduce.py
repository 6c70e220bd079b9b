"""`cytolens reproduce`: each paper's protocol end to end on tiny data, resumable step by step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cytolens.reproduce import reproduce

# Tiny data and runs: the steps and files of the quick scale, in seconds instead of minutes.
TINY: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "shpilman2017": (
        {"per_class": 6, "size": 64},
        {"test_per_class": 2, "input_size": 32, "folds": 2, "training": {"max_epochs": 1, "batch_size": 8},
         "xgboost": {"n_estimators": 5}, "gradcam_examples": 1},
    ),
    "midl2019": (
        {"fields": 4, "field_shape": (96, 128)},
        {"patch_size": 32, "patches_per_epoch": 2, "batch_size": 2, "epochs": 1, "validate_every": 1,
         "inference": {"tile": 64, "overlap": 8, "batch_size": 2}, "checkpoint_every": None, "max_minutes": None},
    ),
    "cytogan": (
        {"scale": "tiny"},
        {"steps": 2, "batch_size": 8, "sample_every": 1, "checkpoint_every": 1, "log_every": 1, "max_minutes": None},
    ),
}

#: What each paper's run folder must hold afterwards, besides report.html.
OUTPUTS = {
    "shpilman2017": ["classify/table_iv.md", "classify/done.json", "data_check.json", "data/microtubules/0"],
    "midl2019": ["segment/unet/done.json", "segment/tiramisu/done.json", "segment/deeplab/done.json",
                 "segment/evaluation/table1.csv", "segment/figures/training_curves.png", "data/brightfield/labels"],
    "cytogan": ["profile/gans/dcgan/done.json", "profile/gans/lsgan/done.json", "profile/gans/wgan/done.json",
                "profile/profiles/classical/treatments.parquet", "profile/profiles/random/treatments.parquet",
                "profile/evaluation/moa_accuracy.csv", "profile/figures/LSGAN_real_vs_generated.png"],
}


def _files(folder: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize("paper", ["shpilman2017", "midl2019", "cytogan"])
def test_quick_scale_runs_end_to_end_and_a_rerun_skips_every_step(
    paper: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    simulation, overrides = TINY[paper]
    out = tmp_path / "run"
    result = reproduce(paper, out=out, scale="quick", seed=0, simulation=simulation, overrides=overrides)
    assert [step.status for step in result.steps] == ["ran"] * len(result.steps)
    for name in OUTPUTS[paper]:
        assert (out / name).exists(), name
    assert all(table.is_file() for table in result.tables)
    page = result.report.read_text(encoding="utf-8")
    section = {"shpilman2017": "classify", "midl2019": "segment", "cytogan": "profile"}[paper]
    assert page.startswith("<!DOCTYPE html>") and f'id="{section}' in page
    first = capsys.readouterr().err
    total = len(result.steps)
    assert all(f"step {n}/{total} " in first for n in range(1, total + 1))

    before = _files(out)
    again = reproduce(paper, out=out, scale="quick", seed=0, simulation=simulation, overrides=overrides)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("step ")]
    assert len(lines) == total and all(line.endswith(": done, skipped") for line in lines), lines
    assert [step.status for step in again.steps] == ["skipped"] * total
    after = _files(out)
    changed = {path for path in before if after.get(path) != before[path]}
    assert changed == {out / "steps.json"}  # the ledger is rewritten; nothing the steps made is touched


def test_real_data_replaces_the_simulation_and_a_deleted_output_reruns_its_step(tmp_path: Path) -> None:
    from cytolens.core.errors import CytolensError
    from cytolens.synthetic import simulate_microtubule_dataset

    data, out = tmp_path / "cells", tmp_path / "run"
    simulate_microtubule_dataset(data, per_class=6, size=64, seed=2)
    smallest = {**TINY["shpilman2017"][1], "tasks": ["all"], "variants": ["CNN"],
                "predict_variant": "CNN"}
    result = reproduce("shpilman2017", out=out, data=data, overrides=smallest)
    assert [step.status for step in result.steps] == ["not needed", "ran", "ran", "ran"]
    assert not (out / "data").exists() and (out / "classify" / "table_iv.csv").is_file()
    (out / "report.html").unlink()
    again = reproduce("shpilman2017", out=out, data=data, overrides=smallest)
    assert [step.status for step in again.steps] == ["not needed", "skipped", "skipped", "ran"]
    assert (out / "report.html").is_file()
    with pytest.raises(CytolensError, match="another reproduction.*seed 0"):
        reproduce("shpilman2017", out=out, data=data, seed=1, overrides=smallest)


def test_cli_bad_paper_name_is_one_line_with_a_suggestion(tmp_path: Path, cli) -> None:
    result = cli("reproduce", "midl2018", "--out", tmp_path / "run", code=2)
    assert "Did you mean 'midl2019'?" in result.error
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("paper", ["shpilman2017", "midl2019", "cytogan"])
def test_cli_data_without_the_papers_layout_is_one_line_naming_the_folder(paper: str, tmp_path: Path, cli) -> None:
    data = tmp_path / "not-a-dataset"
    (data / "misc").mkdir(parents=True)
    result = cli("reproduce", paper, "--data", data, "--out", tmp_path / "run", code=2)
    assert str(data) in result.error and f"not a {paper} dataset" in result.error
    assert not (tmp_path / "run").exists()


def test_cli_out_must_be_a_folder(tmp_path: Path, cli) -> None:
    (tmp_path / "file").write_text("x")
    assert "must be a folder" in cli("reproduce", "cytogan", "--out", tmp_path / "file", code=2).error
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    assert "not a reproduce run folder" in cli("reproduce", "cytogan", "--out", tmp_path / "other", code=2).error
    assert (tmp_path / "other" / "notes.txt").read_text() == "keep me"
