"""GAN training: one tiny step per GAN changes the weights and writes a run folder; resuming continues exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from cytolens.cli.app import app
from cytolens.core.errors import CytolensError, OptionError
from cytolens.profile.crops.cell_store import CellStore, CellStoreWriter
from cytolens.profile.gan.models import GANS, gan_from_config, load_feature_extractor, load_gan
from cytolens.profile.gan.batches import ChunkShuffledBatches
from cytolens.profile.gan.config import GanConfig
from cytolens.profile.gan.training import train
from cytolens.engine import load_checkpoint, seed_everything

# Narrow networks for the tests that are about the loop, not the architecture (the 100-d layer is kept).
SMALL = {"generator_filters": [8, 4, 4, 4], "discriminator_filters": [4, 4, 4, 4]}


def make_store(path: Path, n: int = 6, *, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    rows = pd.DataFrame({
        "Metadata_Plate": ["P1"] * n, "Metadata_Well": [f"B{i % 3 + 2:02d}" for i in range(n)],
        "Metadata_Site": [1] * n, "Metadata_Compound": ["DMSO"] * n, "Metadata_Concentration": [0.0] * n,
        "Metadata_MOA": ["DMSO"] * n, "Metadata_Batch": ["Week1"] * n,
        "Metadata_Cell_X": rng.uniform(0, 500, n), "Metadata_Cell_Y": rng.uniform(0, 500, n),
    })
    writer = CellStoreWriter(path, crop_size=96)
    writer.append(rng.random((n, 96, 96, 3), dtype=np.float32), rows)
    return writer.close()


@pytest.fixture
def cells(tmp_path: Path) -> Path:
    return make_store(tmp_path / "cells")


def task_state(run: Path) -> tuple[int, dict]:
    """The step and the networks of a run's resume checkpoint (the fit loop's format)."""
    payload = load_checkpoint(run / "checkpoints" / "last.pt")
    return int(payload["loop"]["step"]), payload["task"]


def config(**changes: object) -> GanConfig:
    settings = {"batch_size": 2, "steps": 1, "sample_count": 4, "log_every": 1, "num_threads": 1, **changes}
    return GanConfig.model_validate(settings)


@pytest.mark.parametrize("name", GANS.names())
def test_one_tiny_step_of_each_gan_changes_the_weights_and_writes_the_run(
    name: str, cells: Path, tmp_path: Path
) -> None:
    settings = config(model=name)
    run = train(cells, settings, tmp_path / "run")
    seed_everything(settings.seed)
    initial = gan_from_config(settings)
    step, state = task_state(run)
    assert step == 1
    for part in ("generator", "discriminator"):
        before, after = getattr(initial, part).state_dict(), state[part]
        changed = [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])]
        assert changed, f"{part} did not change"
    for file in ("config.yaml", "run.json", "losses.csv", "done.json", "figures/loss_curves.png",
                 "samples/step0000000.png", "samples/step0000001.png"):
        assert (run / file).is_file(), file
    losses = pd.read_csv(run / "losses.csv")
    assert list(losses["step"]) == [1] and np.isfinite(losses[["d_loss", "g_loss"]].to_numpy()).all()
    assert losses["seconds_per_step"].iloc[0] > 0
    done = json.loads((run / "done.json").read_text())
    assert (done["gan"], done["steps"], done["stopped"]) == (name, 1, "steps")
    assert done["samples_per_s"] > 0 and 0 <= done["data_wait_fraction"] <= 1
    assert json.loads((run / "run.json").read_text())["kind"] == "profile-gan"
    extractor = load_feature_extractor(run)
    features = extractor(CellStore(cells).crops([0, 1, 2]))
    assert extractor.dim == 100 and features.shape == (3, 100) and features.dtype == np.float32


def test_resume_continues_the_step_count_exactly(cells: Path, tmp_path: Path) -> None:
    settings = config(model="lsgan", model_options=SMALL, steps=1)
    train(cells, settings, tmp_path / "resumed")
    train(cells, settings.model_copy(update={"steps": 3}), tmp_path / "resumed")
    train(cells, settings.model_copy(update={"steps": 3}), tmp_path / "straight")
    resumed_step, resumed = task_state(tmp_path / "resumed")
    straight_step, straight = task_state(tmp_path / "straight")
    assert resumed_step == straight_step == 3
    for part in ("generator", "discriminator"):
        for key, value in straight[part].items():
            torch.testing.assert_close(resumed[part][key], value, msg=f"{part}.{key}")
    assert list(pd.read_csv(tmp_path / "resumed" / "losses.csv")["step"]) == [1, 2, 3]
    assert yaml.safe_load((tmp_path / "resumed" / "config.yaml").read_text())["steps"] == 3
    # Asking for no more steps than done trains nothing and keeps the checkpoint.
    train(cells, settings.model_copy(update={"steps": 2}), tmp_path / "resumed")
    assert task_state(tmp_path / "resumed")[0] == 3
    _, _, step = load_gan(tmp_path / "resumed")
    assert step == 3


def test_a_run_folder_refuses_another_config_or_other_cells(cells: Path, tmp_path: Path) -> None:
    settings = config(model="lsgan", model_options=SMALL)
    train(cells, settings, tmp_path / "run")
    with pytest.raises(CytolensError, match="different config .*model"):
        train(cells, settings.model_copy(update={"model": "dcgan"}), tmp_path / "run")
    with pytest.raises(CytolensError, match="other images"):
        train(make_store(tmp_path / "other", seed=1), settings, tmp_path / "run")
    with pytest.raises(OptionError, match="larger than the cell store"):
        train(cells, settings.model_copy(update={"batch_size": 7}), tmp_path / "run2")


def test_batches_cover_each_epoch_once_and_read_each_chunk_once(tmp_path: Path) -> None:
    store = CellStore(make_store(tmp_path / "cells", n=10))
    batches = ChunkShuffledBatches(store, batch_size=3, seed=0, buffer_cells=4, chunk_cells=2)
    assert batches.batches_per_epoch == 3
    epoch = np.concatenate([batches.rows(i) for i in range(3)])
    assert len(set(epoch)) == 9  # one remainder cell dropped
    assert not np.array_equal(epoch, np.concatenate([batches.rows(i) for i in range(3, 6)]))  # a new order
    for i in range(3):
        np.testing.assert_array_equal(batches.batch(i), np.round(store.crops(batches.rows(i)) * 255).astype(np.uint8))
    assert batches.chunks_read <= 5  # 10 cells in chunks of 2, each read at most once in the epoch
    again = ChunkShuffledBatches(store, batch_size=3, seed=0, buffer_cells=4, chunk_cells=2)
    np.testing.assert_array_equal(again.rows(4), batches.rows(4))  # the order is a function of (seed, epoch)


def test_cli_trains_with_a_config_file(cells: Path, tmp_path: Path) -> None:
    settings = config(model="wgan-gp", model_options=SMALL)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    result = CliRunner().invoke(
        app, ["profile", "train", str(cells), "--config", str(path), "--out", str(tmp_path / "run"), "--steps", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "wgan-gp: 2/2 steps" in result.output
    assert task_state(tmp_path / "run")[0] == 2


def test_the_time_budget_stops_before_a_step_that_would_not_fit(cells: Path, tmp_path: Path) -> None:
    # 6 ms: any step takes longer than half of it (about 20 ms here), so the second would end past the budget.
    run = train(cells, config(model="lsgan", model_options=SMALL, steps=50, max_minutes=0.0001), tmp_path / "run")
    done = json.loads((run / "done.json").read_text())
    assert (done["steps"], done["steps_planned"], done["stopped"]) == (1, 50, "max_minutes")
    assert list(pd.read_csv(run / "losses.csv")["step"]) == [1]


def test_ctrl_c_saves_the_last_step_and_the_rerun_resumes_from_it(cells: Path, tmp_path: Path) -> None:
    # A real `cytolens profile train` process, started as a script's background job is (SIGINT inherited as
    # ignored), interrupted with SIGINT once it has logged a few steps.
    import signal
    import subprocess
    import sys
    import time

    import yaml

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({"model": "lsgan", "model_options": SMALL, "batch_size": 2, "steps": 100000,
                                   "sample_every": 100000, "checkpoint_every": 100000, "log_every": 1,
                                   "num_threads": 1}))
    run = tmp_path / "run"
    command = [sys.executable, "-m", "cytolens", "profile", "train", str(cells), "--config", str(cfg), "--out",
               str(run), "--precision", "32-true"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    log = ""
    deadline = time.monotonic() + 120
    while "step 3 " not in log and time.monotonic() < deadline:
        log += process.stderr.readline()
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=60)
    log += rest
    assert process.returncode == 130, log
    assert "error: interrupted" in log and "Traceback" not in log
    saved = int(log.split("interrupted; checkpoint at step ")[1].split()[0])
    assert saved >= 3 and task_state(run)[0] == saved  # no step between checkpoints was lost
    again = subprocess.run([*command[:-2], "--precision", "32-true", "--steps", str(saved + 1)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and f"resuming from step {saved}" in again.stderr, again.stderr
