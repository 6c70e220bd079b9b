"""Each capability trains briefly on a CUDA GPU in bf16 (the same code as on the CPU). Skipped without a GPU."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from profile_cells import write_store
from test_classify_distributed import TINY as CLASSIFY_TINY
from test_segment_protocol import make_pairs, write_config

from cytolens.classify.config import ClassifyConfig
from cytolens.classify.training import run_protocol
from cytolens.core.config import load_config, validate_config
from cytolens.engine import EngineOptions
from cytolens.profile.gan.config import GanConfig
from cytolens.profile.gan.training import train as train_gan
from cytolens.segment.config import SegmentConfig
from cytolens.segment.training import run_training

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none visible to torch here)"),
]

GPU = EngineOptions(accelerator="cuda", precision="bf16-mixed")


def _run_json(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def test_classify_trains_on_the_gpu(class_folders: Callable[..., Path], tmp_path: Path) -> None:
    data = class_folders({"0": 6, "1": 6, "2": 6}, size=32)
    config = validate_config({**CLASSIFY_TINY, "precision": "bf16-mixed"}, ClassifyConfig)
    run = run_protocol(data, config, tmp_path / "run", GPU)
    info = _run_json(run)
    assert info["precision"] == "bf16-mixed" and info["sessions"][-1]["accelerator"] == "cuda"
    assert (run / "done.json").is_file()


def test_segment_trains_on_the_gpu(tmp_path: Path) -> None:
    data = make_pairs(tmp_path / "data", images=4)
    config = load_config(write_config(tmp_path / "c.yaml", train_folds=[0]), SegmentConfig)
    run = run_training(data, config, tmp_path / "run", GPU)
    assert _run_json(run)["sessions"][-1]["accelerator"] == "cuda"
    assert json.loads((run / "folds" / "fold0" / "done.json").read_text())["samples_per_s"] > 0


def test_profile_gan_trains_on_the_gpu(tmp_path: Path) -> None:
    cells = write_store(tmp_path / "cells", cells_per_well=2)
    config = load_config("cytogan-quick", GanConfig).model_copy(
        update={"steps": 4, "batch_size": 4, "log_every": 1, "sample_every": 100, "sample_count": 4,
                "max_minutes": None})
    run = train_gan(cells, config, tmp_path / "run", options=GPU)
    assert _run_json(run)["sessions"][-1]["accelerator"] == "cuda"
    assert json.loads((run / "done.json").read_text())["steps"] == 4
