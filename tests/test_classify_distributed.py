"""classify on the engine: units spread over 2 processes, mid-epoch resume of a unit, sharded prediction."""

from __future__ import annotations

import json
from pathlib import Path
from collections.abc import Callable

import pandas as pd
import pytest

from cytolens.classify.config import ClassifyConfig
from cytolens.classify.training import run_protocol
from cytolens.core.config import save_config, validate_config
from cytolens.engine import EngineOptions

# The quick config's layout, shrunk: 2 folds, 24×24 inputs, 2 epochs, two tasks × two variants = 8 units.
TINY = {
    "name": "tiny-distributed",
    "classes": ["0", "1", "2"],
    "test_per_class": 2,
    "input_size": 24,
    "folds": 2,
    "tasks": ["all", "0 vs 1"],
    "variants": ["CNN", "CNN+T+S"],
    "training": {"max_epochs": 2, "batch_size": 4, "patience": 2},
    "xgboost": {"enabled": False},
    "gradcam_examples": 0,
    "precision": "32-true",
    "checkpoint_every": 1,
    # Equal numbers need equal summation orders: one intra-op thread per process, however many processes.
    "num_threads": 1,
}


@pytest.fixture
def data(class_folders: Callable[..., Path]) -> Path:
    return class_folders({"0": 6, "1": 6, "2": 6}, size=32)


def _unit_records(run: Path) -> dict[str, dict[str, object]]:
    """Every unit's done.json (without timings) and history, by unit folder."""
    records = {}
    for done in sorted((run / "units").glob("*/*/fold*/done.json")):
        record = json.loads(done.read_text())
        for key in ("seconds", "samples_per_s", "resumed_from_step"):
            record.pop(key)
        history = pd.read_csv(done.parent / "history.csv")
        records[str(done.parent.relative_to(run))] = {**record, "history": history.to_dict("list")}
    return records


def test_two_processes_train_every_unit_like_one(data: Path, tmp_path: Path, cli) -> None:
    config = validate_config(TINY, ClassifyConfig)
    one = run_protocol(data, config, tmp_path / "one", EngineOptions(deterministic=True))
    two = tmp_path / "two"
    cli("classify", "train", data, "--config", save_config(config, tmp_path / "tiny.yaml"), "--out", two,
        "--devices", "2", "--deterministic")
    assert len(_unit_records(one)) == 8
    assert _unit_records(two) == _unit_records(one)
    info = json.loads((two / "run.json").read_text())
    assert (info["kind"], info["world_size"], info["precision"]) == ("classify", 2, "32-true")
    assert (two / "done.json").is_file() and not list((two / "units").glob("*/*/fold*/resume.pt"))
    assert (two / "predictions.csv").read_text() == (one / "predictions.csv").read_text()


def test_an_interrupted_unit_resumes_mid_epoch_and_ends_like_an_uninterrupted_one(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cytolens.classify import fit

    config = validate_config(TINY, ClassifyConfig)
    options = EngineOptions(deterministic=True)
    whole = run_protocol(data, config, tmp_path / "whole", options)

    steps = {"n": 0}
    original = fit.ClassifierTask.train_step

    def interrupted(self: fit.ClassifierTask, position):  # type: ignore[no-untyped-def]
        steps["n"] += 1
        if steps["n"] == 30:  # inside the unit after the first ones, mid-epoch
            raise KeyboardInterrupt
        return original(self, position)

    monkeypatch.setattr(fit.ClassifierTask, "train_step", interrupted)
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        run_protocol(data, config, cut, options)
    pending = list((cut / "units").glob("*/*/fold*/resume.pt"))
    assert len(pending) == 1 and not (pending[0].parent / "done.json").exists()
    monkeypatch.setattr(fit.ClassifierTask, "train_step", original)
    capsys.readouterr()
    run_protocol(data, config, cut, options)
    printed = capsys.readouterr()
    assert "resuming from step" in printed.out + printed.err
    resumed = json.loads((pending[0].parent / "done.json").read_text())
    assert resumed["resumed_from_step"] > 0 and not pending[0].exists()
    assert _unit_records(cut) == _unit_records(whole)


def test_predict_on_two_ranks_writes_the_csv_of_one(data: Path, tmp_path: Path, cli) -> None:
    config = validate_config({**TINY, "tasks": ["all"], "variants": ["CNN+T+S"], "training": {
        "max_epochs": 1, "batch_size": 4}}, ClassifyConfig)
    run = run_protocol(data, config, tmp_path / "run")
    (data / "2" / "broken.tif").write_bytes(b"II*\x00garbage")
    csvs = []
    for devices in (1, 2):
        out = tmp_path / f"p{devices}"
        # The broken file: listed, exit status 1.
        cli("classify", "predict", run, data, "--out", out, "--devices", str(devices), code=1)
        csvs.append((out / "predictions.csv").read_text())
    assert csvs[0] == csvs[1]
    assert len(pd.read_csv(tmp_path / "p1" / "predictions.csv")) == 18


def test_precision_is_the_configs_unless_one_is_asked_for(data: Path, tmp_path: Path) -> None:
    from cytolens.engine import resolve_precision

    config = validate_config({**TINY, "tasks": ["0 vs 1"], "variants": ["CNN"], "predict_variant": "CNN"},
                             ClassifyConfig)
    run_protocol(data, config, tmp_path / "config")
    assert json.loads((tmp_path / "config" / "run.json").read_text())["precision"] == "32-true"
    # An explicit --precision auto wins over the config's 32-true (it is not read as "not given").
    run_protocol(data, config, tmp_path / "auto", EngineOptions(precision="auto"))
    assert json.loads((tmp_path / "auto" / "run.json").read_text())["precision"] == resolve_precision("auto", "cpu")
