"""``cytolens segment`` on several processes: DDP training, sharded prediction, and exact mid-epoch resume.

Tiny data (64 × 64 images), the tiny test config, one epoch of a few patches; each 2-process run spawns two CPU
ranks (gloo), a few seconds each.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

from cytolens.core.config import load_config
from cytolens.engine import EngineOptions
from cytolens.segment.config import SegmentConfig
from cytolens.segment.training import SegmentTask, run_training
from test_segment_protocol import make_pairs, write_config

#: 1 epoch of 8 patches in batches of 4 trains the tiny U-Net only a little: 2 ranks (BatchNorm statistics over
#: 2 patches each instead of 4) may end a few hundredths of mean dice away from 1 process, not further.
DICE_TOLERANCE = 0.1


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pairs(tmp_path_factory.mktemp("distributed") / "data", images=4)


def _done(run: Path, fold: int = 0) -> dict:
    return json.loads((run / "folds" / f"fold{fold}" / "done.json").read_text())


def test_two_processes_train_like_one(data: Path, tmp_path: Path, cli) -> None:
    config = write_config(tmp_path / "c.yaml", train_folds=[0])
    runs = {}
    for devices in (1, 2):
        runs[devices] = tmp_path / f"run{devices}"
        cli("segment", "train", data, "--config", config, "--out", runs[devices], "--devices", devices,
            "--precision", "32-true")
    info = json.loads((runs[2] / "run.json").read_text())
    assert info["world_size"] == 2 and info["precision"] == "32-true"
    one, two = _done(runs[1]), _done(runs[2])
    assert two["world_size"] == 2 and two["epochs_run"] == one["epochs_run"] == 1
    assert abs(two["best_val_mean_dice"] - one["best_val_mean_dice"]) <= DICE_TOLERANCE
    # The validation pixels are counted once over both ranks: no image is missed or doubled.
    assert np.sum(two["val_confusion"]) == np.sum(one["val_confusion"]) == 2 * 64 * 64
    assert (runs[2] / "done.json").is_file() and not (runs[2] / "folds" / "fold0" / "resume.pt").exists()


def test_two_ranks_predict_the_files_of_one(data: Path, tmp_path: Path, cli) -> None:
    # Trained long enough (6 epochs of 32 patches) to find cells, so cells.csv has rows to merge.
    config = load_config(write_config(tmp_path / "c.yaml", train_folds=[0], epochs=6, patches_per_epoch=32,
                                      lr=0.01, validate_every=6), SegmentConfig)
    run = run_training(data, config, tmp_path / "run", EngineOptions(precision="32-true"))
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted((data / "images").iterdir())[:3]:  # 3 images over 2 ranks: unequal shares
        shutil.copy(path, images / path.name)
    outs = {}
    for devices in (1, 2):
        outs[devices] = tmp_path / f"pred{devices}"
        cli("segment", "predict", run, images, "--out", outs[devices], "--cells", "--prob", "--devices", devices)
    names = sorted(p.name for p in outs[1].iterdir())
    assert names == sorted(p.name for p in outs[2].iterdir())  # no rank's scratch file is left behind
    for name in names:
        if name.endswith("_prob.tif"):
            np.testing.assert_allclose(tifffile.imread(outs[2] / name), tifffile.imread(outs[1] / name), atol=1e-5)
        elif name.endswith(".tif"):
            np.testing.assert_array_equal(tifffile.imread(outs[2] / name), tifffile.imread(outs[1] / name))
    for table in ("images.csv", "cells.csv"):
        one, two = pd.read_csv(outs[1] / table), pd.read_csv(outs[2] / table)
        assert len(one) and one.equals(two), table
    assert list(pd.read_csv(outs[2] / "images.csv")["stem"]) == [f"field_{i:02d}" for i in range(3)]
    assert json.loads((outs[2] / "prediction.json").read_text()) == json.loads((outs[1] / "prediction.json").read_text())


def test_a_fold_interrupted_mid_epoch_resumes_exactly(data: Path, tmp_path: Path, monkeypatch) -> None:
    # 2 epochs of 4 steps, a resume checkpoint after every step; the interruption comes inside epoch 2.
    config = load_config(write_config(tmp_path / "c.yaml", train_folds=[0], epochs=2, patches_per_epoch=16,
                                      checkpoint_every=1), SegmentConfig)
    options = EngineOptions(precision="32-true", deterministic=True)
    whole = run_training(data, config, tmp_path / "whole", options)

    original = SegmentTask.train_step

    def interrupted(self: SegmentTask, position):  # type: ignore[no-untyped-def]
        if position.step == 6:
            raise KeyboardInterrupt
        return original(self, position)

    monkeypatch.setattr(SegmentTask, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_training(data, config, tmp_path / "resumed", options)
    assert (tmp_path / "resumed" / "folds" / "fold0" / "resume.pt").is_file()
    assert not (tmp_path / "resumed" / "folds" / "fold0" / "done.json").exists()
    monkeypatch.setattr(SegmentTask, "train_step", original)
    resumed = run_training(data, config, tmp_path / "resumed", options)

    a, b = _done(whole), _done(resumed)
    assert b["resumed_from_step"] == 5 and a["resumed_from_step"] == 0
    for key in ("best_epoch", "best_val_mean_dice", "best_val_loss", "val_confusion", "epochs_run", "stopped"):
        assert a[key] == b[key], key
    history = [pd.read_csv(run / "folds" / "fold0" / "history.csv").drop(columns="seconds") for run in (whole, resumed)]
    pd.testing.assert_frame_equal(history[0], history[1])
    weights = [torch.load(run / "checkpoints" / "fold0.pt", weights_only=True) for run in (whole, resumed)]
    for name, value in weights[0].items():
        assert torch.equal(value, weights[1][name]), name
