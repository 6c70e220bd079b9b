"""`classify predict` on 16-bit and 8-bit folders, pairwise tasks, test-time augmentation; `classify search`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cytolens.classify.config import ClassifyConfig, SharpenConfig
from cytolens.data.intensity import IntensityConfig
from cytolens.classify.data import preprocess_image
from cytolens.classify.predict import predict_images
from cytolens.classify.training import run_protocol
from cytolens.classify.search import run_search
from cytolens.classify.search_space import SearchSpace
from cytolens.core.config import validate_config
from cytolens.core.errors import OptionError
from cytolens.data.io import read_image, write_png
from cytolens.synthetic import simulate_microtubule_dataset

SMALL = {
    "name": "small",
    "test_per_class": 2,
    "input_size": 32,
    "folds": 2,
    "tasks": ["all", "0 vs 1"],
    "variants": ["CNN", "CNN+T+S"],
    "training": {"max_epochs": 1, "batch_size": 8},
    "xgboost": {"enabled": False},
    "gradcam_examples": 0,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mt")
    simulate_microtubule_dataset(root, per_class=5, size=64, seed=5)
    return root


@pytest.fixture(scope="module")
def run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_protocol(data, validate_config(SMALL, ClassifyConfig), tmp_path_factory.mktemp("run") / "run")


@pytest.fixture
def folders(data: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The same five cells as a 16-bit TIFF folder and as an 8-bit PNG folder (in a subfolder)."""
    sixteen = tmp_path / "sixteen"
    eight = tmp_path / "eight" / "nested"
    for i, path in enumerate(sorted((data / "1").glob("*.tif"))):
        image = read_image(path)
        (sixteen).mkdir(exist_ok=True)
        (sixteen / path.name).write_bytes(path.read_bytes())
        write_png(eight / f"cell{i}.png", (image >> 6).astype(np.uint8))  # 14-bit → 8-bit
    return sixteen, eight.parent


def test_predict_16_and_8_bit_folders(run: Path, folders: tuple[Path, Path]) -> None:
    for folder in folders:
        result = predict_images(run, folder)
        table = result.table
        assert not result.problems and len(table) == 5
        assert list(table.columns) == ["path", "predicted", "p_0", "p_0.1", "p_1"]
        assert set(table["predicted"]) <= {"0", "0.1", "1"}
        np.testing.assert_allclose(table[["p_0", "p_0.1", "p_1"]].sum(axis=1), 1, atol=1e-5)


def test_predict_pairwise_task_and_tta(run: Path, folders: tuple[Path, Path]) -> None:
    plain = predict_images(run, folders[0], task="0 vs 1").table
    assert list(plain.columns) == ["path", "predicted", "p_0", "p_1"]
    averaged = predict_images(run, folders[0], task="0 vs 1", tta=True).table
    assert not np.allclose(plain["p_1"], averaged["p_1"])  # eight views average differently from one
    with pytest.raises(OptionError, match="has no model for task .0 vs 0.1.; its tasks: 3 classes, 0 vs 1"):
        predict_images(run, folders[0], task="0 vs 0.1")


def test_predict_matches_the_run_evaluation(run: Path) -> None:
    """A test image predicted anew gets the probabilities the run recorded (same preprocessing, same models)."""
    recorded = pd.read_csv(run / "predictions.csv", dtype={"class": str, "predicted": str})
    recorded = recorded[(recorded["task"] == "3 classes") & (recorded["method"] == "CNN+T+S")]
    first = recorded.iloc[0]
    fresh = predict_images(run, first["path"]).table.iloc[0]
    assert fresh["predicted"] == first["predicted"]
    np.testing.assert_allclose(fresh[["p_0", "p_0.1", "p_1"]].astype(float), first[["p_0", "p_0.1", "p_1"]].astype(float), atol=1e-5)


def test_cli_predict_lists_unreadable_files_and_exits_1(run: Path, folders: tuple[Path, Path], tmp_path: Path,
                                                         cli) -> None:
    (folders[0] / "broken.tif").write_bytes(b"")
    out = tmp_path / "p"
    result = cli("classify", "predict", run, folders[0], "--out", out, code=1)
    assert "broken.tif" in result.err
    assert len(pd.read_csv(out / "predictions.csv")) == 5


def test_cli_predict_out_as_a_csv_path_still_works_with_a_deprecation_warning(run: Path, folders: tuple[Path, Path],
                                                                              tmp_path: Path, cli) -> None:
    out = tmp_path / "p.csv"
    result = cli("classify", "predict", run, folders[0], "--out", out)
    warnings = [line for line in result.err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and f"--out {out}" in warnings[0] and "deprecated" in warnings[0], result.err
    assert len(pd.read_csv(out)) == 5 and not (out / "predictions.csv").exists()


def test_cli_predict_bad_run_folder_is_one_line(tmp_path: Path, cli) -> None:
    assert "not a cytolens run folder" in cli("classify", "predict", tmp_path, tmp_path, code=2).error


def test_sixteen_bit_preprocessing_keeps_its_range() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(20000, 60000, (64, 64)).astype(np.uint16)
    out = preprocess_image(
        image, input_size=32, intensity=IntensityConfig(method="dtype"), sharpening=SharpenConfig()
    )
    assert out.dtype == np.float32 and out.shape == (32, 32)
    assert out.max() > 300 / 65535 * 10  # far above what an 8-bit clip would leave


def test_search_ranks_topologies_by_cross_validation(data: Path, tmp_path: Path) -> None:
    config = validate_config({**SMALL, "input_size": 32}, ClassifyConfig)
    space = SearchSpace(conv_layers=(1, 2), conv_filters=(8, 16), dense_layers=(1, 1), dense_units=(16, 32),
                        input_sizes=(32,))
    ranked = run_search(data, config, tmp_path / "search", trials=3, folds=2, space=space)
    assert len(ranked) == 3 and ranked["cv_accuracy"].is_monotonic_decreasing
    assert ranked["topology"].str.contains("@").all()
    assert "conv16k2-conv64k3-pool/fc32-fc32@300" in set(ranked["topology"])  # the paper's is always tried
    best = (tmp_path / "search" / "best_topology.yaml").read_text()
    assert "model: convnet" in best and "input_size" in best
    manifest = pd.read_parquet(tmp_path / "search" / "manifest.parquet")
    assert (manifest.loc[manifest["split"] == "test", "fold"] == -1).all()
    json.dumps(ranked.to_dict())  # plain values


def _damage(run: Path, target: Path, how: str) -> Path:
    damaged = target / "run"
    shutil.copytree(run, damaged)
    if how == "config.yaml: not YAML":
        (damaged / "config.yaml").write_bytes(b"\x00\xff{{: [")
    elif how == "config.yaml: not a config":
        (damaged / "config.yaml").write_text("folds: many\n")
    elif how == "done.json: corrupt":
        (damaged / "done.json").write_text('{"units": ')
    elif how == "checkpoint: wrong shape":
        checkpoint = damaged / "checkpoints" / "3_classes" / "cnn_t_s" / "fold0.pt"  # what predict loads
        state = torch.load(checkpoint, weights_only=True)
        key = next(k for k, v in _tensors(state) if v.ndim > 1)
        _set(state, key, torch.zeros(3, 3, 3, 3))
        torch.save(state, checkpoint)
    elif how == "checkpoint: unexpected keys":
        checkpoint = damaged / "checkpoints" / "3_classes" / "cnn_t_s" / "fold0.pt"  # what predict loads
        torch.save({"something": torch.zeros(2)}, checkpoint)
    elif how == "fold1.pt: missing":
        (damaged / "checkpoints" / "3_classes" / "cnn_t_s" / "fold1.pt").unlink()
    elif how == "done.json: a fold's, corrupt":
        (damaged / "units" / "3_classes" / "cnn_t_s" / "fold0" / "done.json").write_text("{")
    elif how == "checkpoint: not a checkpoint":
        checkpoint = damaged / "checkpoints" / "3_classes" / "cnn_t_s" / "fold0.pt"  # what predict loads
        checkpoint.write_bytes(b"PK\x03\x04 not really")
    return damaged


def _tensors(state: object, prefix: str = "") -> list[tuple[str, torch.Tensor]]:
    if isinstance(state, torch.Tensor):
        return [(prefix, state)]
    if isinstance(state, dict):
        return [item for key, value in state.items() for item in _tensors(value, f"{prefix}/{key}")]
    return []


def _set(state: dict, key: str, value: torch.Tensor) -> None:
    *parents, last = key.strip("/").split("/")
    for part in parents:
        state = state[part]
    state[last] = value


DAMAGES = ["config.yaml: not YAML", "config.yaml: not a config", "done.json: corrupt",
           "checkpoint: wrong shape", "checkpoint: unexpected keys", "checkpoint: not a checkpoint", "fold1.pt: missing",
           "done.json: a fold's, corrupt"]


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_run_folder_is_one_line_naming_the_file(run: Path, folders: tuple[Path, Path], tmp_path: Path,
                                                          cli, how: str) -> None:
    damaged = _damage(run, tmp_path, how)
    out = tmp_path / "p"
    error = cli("classify", "predict", damaged, folders[0], "--out", out, code=2).error
    named = how.split(":")[0]
    assert (".pt" in error) if named == "checkpoint" else (named in error), error
    assert not out.exists()
