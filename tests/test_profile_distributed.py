"""The profile capability on the engine: GAN training on 2 processes, mid-epoch resume, embedding on 2 ranks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from profile_cells import write_store
from typer.testing import CliRunner

from cytolens.cli.app import app
from cytolens.core.config import load_config
from cytolens.engine import EngineOptions, load_checkpoint
from cytolens.profile.gan import training as gan_train
from cytolens.profile.embed import embed
from cytolens.profile.gan.config import GanConfig
from cytolens.profile.gan.training import train

# 24 cells at batch 4: 6 steps an epoch, so step 3 lies inside the first epoch.
QUICK = {"steps": 4, "batch_size": 4, "log_every": 1, "sample_every": 100, "sample_count": 4, "max_minutes": None,
         "checkpoint_every": 100, "num_threads": 1}


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_store(tmp_path_factory.mktemp("cells") / "cells", cells_per_well=2)


def quick(**changes: object) -> GanConfig:
    return load_config("cytogan-quick", GanConfig).model_copy(update={**QUICK, **changes})


def test_two_processes_train_like_one(cells: Path, tmp_path: Path) -> None:
    path = tmp_path / "quick.yaml"
    path.write_text(yaml.safe_dump(quick().model_dump(mode="json")))
    losses = {}
    for devices in (1, 2):
        out = tmp_path / f"run{devices}"
        result = CliRunner().invoke(app, ["profile", "train", str(cells), "--config", str(path), "--out", str(out),
                                          "--devices", str(devices), "--precision", "32-true"])
        assert result.exit_code == 0, result.output
        assert "lsgan: 4/4 steps" in result.output
        assert json.loads((out / "run.json").read_text())["world_size"] == devices
        assert json.loads((out / "done.json").read_text())["world_size"] == devices
        losses[devices] = pd.read_csv(out / "losses.csv")
    assert list(losses[2]["step"]) == [1, 2, 3, 4]
    # The same cells and latent vectors; what differs is each rank's instance noise and soft labels and, most, the
    # generator's BatchNorm statistics over each rank's half batch (2 cells here; SyncBatchNorm has no CPU
    # kernel): the losses of the first steps agree within 0.15 (measured: ≤ 0.12, on g_loss at step 1).
    for column in ("d_loss", "g_loss", "d_real", "d_fake"):
        np.testing.assert_allclose(losses[2][column], losses[1][column], rtol=0, atol=0.15, err_msg=column)


def test_wgan_gp_penalty_trains_on_two_processes(cells: Path, tmp_path: Path) -> None:
    settings = quick(model="wgan-gp", steps=2)
    train(cells, settings, tmp_path / "run", options=EngineOptions(devices=2, precision="32-true"))
    losses = pd.read_csv(tmp_path / "run" / "losses.csv")
    assert list(losses["step"]) == [1, 2] and np.isfinite(losses["gradient_penalty"]).all()


def test_interrupted_run_resumes_mid_epoch_with_the_same_losses(
    cells: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = EngineOptions(precision="32-true", deterministic=True)
    settings = quick(steps=5)
    train(cells, settings, tmp_path / "whole", options=options)

    real_step = gan_train.GanTask.train_step

    def dies_at_step_3(self: gan_train.GanTask, position):  # noqa: ANN001
        if position.step == 3:
            raise KeyboardInterrupt
        return real_step(self, position)

    monkeypatch.setattr(gan_train.GanTask, "train_step", dies_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train(cells, settings, tmp_path / "cut", options=options)
    payload = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert payload["loop"]["step"] == 2 and payload["loop"]["epoch"] == 1  # saved mid-epoch on the interrupt
    assert not (tmp_path / "cut" / "done.json").exists()
    monkeypatch.setattr(gan_train.GanTask, "train_step", real_step)
    train(cells, settings, tmp_path / "cut", options=options)

    whole, cut = (pd.read_csv(tmp_path / name / "losses.csv") for name in ("whole", "cut"))
    columns = ["step", "epoch", "d_loss", "g_loss", "d_real", "d_fake"]
    pd.testing.assert_frame_equal(cut[columns], whole[columns], check_exact=True)
    straight, resumed = (load_checkpoint(tmp_path / name / "checkpoints" / "last.pt")["task"]
                         for name in ("whole", "cut"))
    for part in ("generator", "discriminator"):
        for key, value in straight[part].items():
            assert torch.equal(resumed[part][key], value), f"{part}.{key}"
    done = json.loads((tmp_path / "cut" / "done.json").read_text())
    assert (done["steps"], done["steps_this_session"], done["stopped"]) == (5, 3, "steps")


def test_embedding_on_two_ranks_writes_the_files_of_one(cells: Path, tmp_path: Path) -> None:
    tables = {}
    for devices in (1, 2):
        out = tmp_path / f"p{devices}"
        # Chunks of 10, 10 and 4 cells: uneven shares, and the last chunk is smaller than a share of the first.
        embed(cells, out, features="random:cytogan-quick", batch_size=10,
              options=EngineOptions(devices=devices, precision="32-true"))
        tables[devices] = pd.read_parquet(out / "single_cells.parquet")
        assert not (out / ".embed_chunks").exists()
    one, two = tables[1], tables[2]
    assert list(two.columns) == list(one.columns) and len(two) == len(one) == 24
    meta = [c for c in one.columns if c.startswith("Metadata_")]
    pd.testing.assert_frame_equal(two[meta], one[meta])
    features = [c for c in one.columns if c.startswith("GAN_")]
    np.testing.assert_allclose(two[features].to_numpy(), one[features].to_numpy(), rtol=0, atol=1e-5)


def test_cropping_on_two_ranks_writes_the_store_of_one(tmp_path: Path) -> None:
    from cytolens.profile.crops.cell_store import CellStore
    from cytolens.profile.crops.crop import crop_dataset
    from cytolens.synthetic.cellpainting.simulate import simulate_cellpainting_dataset

    data = tmp_path / "data"
    simulate_cellpainting_dataset(data, scale="tiny", seed=1)
    one = CellStore(crop_dataset(data, tmp_path / "one"))
    two = CellStore(crop_dataset(data, tmp_path / "two", options=EngineOptions(devices=2, precision="32-true")))
    assert len(set(one.index["Metadata_Plate"])) >= 2  # each rank had a plate to crop
    pd.testing.assert_frame_equal(two.index, one.index)
    np.testing.assert_array_equal(two.crops(), one.crops())
    assert two.metadata == one.metadata
    assert not (tmp_path / "two" / "parts").exists()
