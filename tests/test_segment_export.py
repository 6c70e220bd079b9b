"""bioimage.io export of a trained segmentation run: the package validates offline with bioimageio.spec, its
TorchScript reproduces its test output from its own RDF's preprocessing, and that output is what
``segment predict --prob`` writes for the same crop."""

from __future__ import annotations

import io
import shutil
import socket
import sys
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from segment_runs import train_tiny_run

from cytolens.core.errors import CytolensError, OptionError
from cytolens.data.io import normalize_intensity, read_image, write_tiff
from cytolens.segment.config import SegmentConfig
from cytolens.segment.export import MIDL2019_URL, ExportedModel, export_bioimageio, preprocessing_ops
from cytolens.segment.evaluate import evaluate_run

pytest.importorskip("bioimageio.spec")
# TorchScript is what bioimage.io's consumers load; torch 2.13 deprecates it in favour of torch.export.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")

# 80-px fields and 64-px tiles: the test crop is 64×64, one tile, so tiled prediction is one forward pass.
TINY = {
    "name": "tiny-export", "deviations": ["test size"], "model": "unet",
    "model_options": {"filters": [4, 8], "bottleneck": 8, "batch_norm": "all"}, "patch_size": 32,
    "patches_per_epoch": 8, "batch_size": 4, "epochs": 1, "folds": 2, "precision": "32-true",
    "intensity": {"method": "percentile", "percentiles": [0.5, 99.8]},
    "inference": {"tile": 64, "overlap": 16, "batch_size": 2},
}
PACKAGE_FILES = {"rdf.yaml", "weights.pt", "test_input.npy", "test_output.npy", "sample_input.tif",
                 "sample_output.tif", "cover.png", "README.md", "config.yaml"}


def _no_network(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("the bioimage.io export must not touch the network")


@pytest.fixture(scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No sockets, and bioimageio.spec's download cache in tmp (never the user's home)."""
    from bioimageio.spec._internal._settings import settings

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _no_network)
        patch.setattr(socket, "create_connection", _no_network)
        patch.setattr(settings, "cache_path", tmp_path_factory.mktemp("bioimageio-cache"))
        yield


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("export")
    run = train_tiny_run(base, TINY, size=(80, 80), cells=6, radii=(4, 9))
    evaluate_run(run, base / "data")  # RUN/evaluation/metrics.json, whose dice the package's README quotes
    return run


@pytest.fixture(scope="module")
def exported(run: Path, offline: None, tmp_path_factory: pytest.TempPathFactory) -> ExportedModel:
    return export_bioimageio(run, tmp_path_factory.mktemp("package") / "model.zip")


def _member(package: Path, name: str) -> bytes:
    with zipfile.ZipFile(package) as archive:
        return archive.read(name)


def _array(package: Path, name: str) -> np.ndarray:
    return np.load(io.BytesIO(_member(package, name)))


def _rdf(package: Path) -> dict[str, Any]:
    return yaml.safe_load(_member(package, "rdf.yaml"))


def _preprocess(tensor: np.ndarray, steps: list[dict[str, Any]], axes: list[str]) -> np.ndarray:
    """A consumer's reading of the RDF's preprocessing: bioimage.io 0.5's operations, in numpy."""
    data = tensor.astype(np.float64)
    for step in steps:
        kwargs = step.get("kwargs", {})
        if step["id"] == "ensure_dtype":
            data = data.astype(kwargs["dtype"]).astype(np.float64)
        elif step["id"] == "scale_range":
            reduce = tuple(axes.index(a) for a in kwargs["axes"])
            low = np.percentile(data, kwargs["min_percentile"], axis=reduce, keepdims=True)
            high = np.percentile(data, kwargs["max_percentile"], axis=reduce, keepdims=True)
            data = (data - low) / (high - low + float(kwargs["eps"]))  # PyYAML reads YAML 1.2's 1e-06 as text
        elif step["id"] == "scale_linear":
            data = data * float(kwargs["gain"]) + float(kwargs["offset"])
        elif step["id"] == "clip":
            data = np.clip(data, float(kwargs["min"]), float(kwargs["max"]))
        else:
            raise AssertionError(f"unexpected preprocessing step {step['id']}")
    return data.astype(np.float32)


def test_package_validates_offline_with_bioimageio_spec(exported: ExportedModel, offline: None) -> None:
    from bioimageio.spec import load_description
    from bioimageio.spec.model.v0_5 import ModelDescr

    with zipfile.ZipFile(exported.path) as archive:
        assert set(archive.namelist()) == PACKAGE_FILES
    with warnings.catch_warnings():
        # bioimageio.spec's own scan of a zipped description warns about each packaged file name; not ours.
        warnings.filterwarnings("ignore", message="Found mapping with 'source'", category=UserWarning)
        description = load_description(exported.path, perform_io_checks=True, known_files={MIDL2019_URL: None})
    summary = description.validation_summary
    assert isinstance(description, ModelDescr), summary.format()
    assert summary.status == "valid-format", summary.format()
    assert not [d for d in summary.details if d.errors]
    assert description.weights.torchscript is not None and description.weights.pytorch_state_dict is None
    [inputs], [outputs] = description.inputs, description.outputs
    assert [a.id for a in inputs.axes] == ["batch", "channel", "y", "x"]
    assert inputs.axes[2].size.step == 4 and inputs.axes[2].size.min >= 2 * outputs.axes[2].halo + 1
    assert [p.id for p in inputs.preprocessing] == ["ensure_dtype", "scale_range", "clip", "ensure_dtype"]
    assert list(outputs.axes[1].channel_names) == ["background", "nucleus", "cytoplasm"]
    assert outputs.axes[2].halo == TINY["inference"]["overlap"] // 2
    assert {c.doi for c in description.cite if c.doi} == {"10.1007/978-3-319-24574-4_28"}
    assert str(description.license) == "BSD-3-Clause" and description.covers
    readme = _member(exported.path, "README.md").decode()
    assert "## Validation" in readme and "validation mean dice" in readme and "Mean over the trained folds" in readme
    assert "`cytolens segment evaluate`" in readme and "dice nucleus" in readme
    assert yaml.safe_load(_member(exported.path, "config.yaml"))["name"] == "tiny-export"


def test_torchscript_reproduces_the_test_output_from_the_rdf(exported: ExportedModel) -> None:
    rdf = _rdf(exported.path)
    network = torch.jit.load(io.BytesIO(_member(exported.path, "weights.pt")))
    test_input, test_output = _array(exported.path, "test_input.npy"), _array(exported.path, "test_output.npy")
    assert test_input.dtype == test_output.dtype == np.float32
    assert test_input.shape == (1, 1, 64, 64) and test_output.shape == (1, 3, 64, 64)
    steps = rdf["inputs"][0]["preprocessing"]
    with torch.no_grad():
        got = network(torch.from_numpy(_preprocess(test_input, steps, ["batch", "channel", "y", "x"]))).numpy()
    np.testing.assert_allclose(got, test_output, atol=1e-5)
    np.testing.assert_allclose(test_output.sum(axis=1), 1.0, atol=1e-5)
    # Any size the RDF allows (min + n·step), not only the traced one; y and x differ.
    size = rdf["inputs"][0]["axes"][2]["size"]
    other = np.random.default_rng(0).random((2, 1, size["min"] + 2 * size["step"], size["min"]), np.float32)
    with torch.no_grad():
        assert tuple(network(torch.from_numpy(other)).shape) == (2, 3, *other.shape[2:])


def test_test_output_equals_segment_predict_on_the_test_input(exported: ExportedModel, run: Path, cli,
                                                               tmp_path: Path) -> None:
    test_input = _array(exported.path, "test_input.npy")[0, 0]
    assert np.array_equal(test_input, np.round(test_input))  # raw 16-bit intensities, exact in float32
    image = write_tiff(tmp_path / "crop.tif", test_input.astype(np.uint16))
    y, x, height, width = exported.crop
    np.testing.assert_array_equal(read_image(image), read_image(exported.test_image)[y : y + height, x : x + width])
    np.testing.assert_array_equal(read_image(image), tifffile_read(_member(exported.path, "sample_input.tif")))
    cli("segment", "predict", run, image, "--out", tmp_path / "predicted", "--prob")
    predicted = read_image(tmp_path / "predicted" / "crop_prob.tif")  # (H, W, K)
    np.testing.assert_allclose(predicted.transpose(2, 0, 1)[None], _array(exported.path, "test_output.npy"),
                               atol=1e-5)


def tifffile_read(data: bytes) -> np.ndarray:
    import tifffile

    return tifffile.imread(io.BytesIO(data))


def test_best_fold_export_from_the_cli_holds_one_fold(run: Path, offline: None, tmp_path: Path, cli) -> None:
    package = tmp_path / "best.zip"
    shown = cli("segment", "export", run, "--out", package, "--final-model", "best_fold", "--crop", "32",
                "--test-image", run.parent / "data" / "images" / "field_3.tif", "--name", "tiny best fold",
                "--author", "A. Person").out
    assert f"wrote {package}" in shown and "field_3.tif" in shown
    rdf = _rdf(package)
    assert rdf["config"]["cytolens"]["final_model"].startswith("fold ")
    assert rdf["name"] == "tiny best fold" and rdf["authors"] == [{"name": "A. Person"}]
    assert _array(package, "test_input.npy").shape == (1, 1, 32, 32)
    network = torch.jit.load(io.BytesIO(_member(package, "weights.pt")))
    assert len(list(network.members.children())) == 1


@pytest.mark.parametrize("intensity", [
    {"method": "percentile", "percentiles": [0.5, 99.8]},
    {"method": "percentile", "percentiles": [2.0, 98.0]},
    {"method": "bit_depth", "bit_depth": 14},
    {"method": "dtype"},
])
@pytest.mark.parametrize("channels", [1, 3])
def test_preprocessing_ops_equal_cytolens_normalisation(intensity: dict[str, Any], channels: int) -> None:
    config = SegmentConfig(intensity=intensity, in_chans=channels)
    rng = np.random.default_rng(channels)
    shape = (40, 56) if channels == 1 else (40, 56, channels)
    ramp = np.linspace(0.5, 1.5, shape[1]).reshape((1, -1) + (1,) * (len(shape) - 2))  # uneven illumination
    raw = (rng.gamma(2.0, 600.0, shape) * ramp).clip(0, 16383)
    raw = raw.astype(np.uint16)
    expected = normalize_intensity(raw, method=config.intensity.method, bit_depth=config.intensity.bit_depth,
                                   percentiles=tuple(config.intensity.percentiles))
    tensor = (raw if raw.ndim == 3 else raw[..., None]).transpose(2, 0, 1)[None]
    got = _preprocess(tensor, preprocessing_ops(config, raw.dtype), ["batch", "channel", "y", "x"])
    expected = (expected if expected.ndim == 3 else expected[..., None]).transpose(2, 0, 1)[None]
    np.testing.assert_allclose(got, expected, atol=2e-6)


def _unfinished(run: Path, tmp_path: Path) -> Path:
    copy = shutil.copytree(run, tmp_path / "unfinished")
    (copy / "done.json").unlink()
    return copy


@pytest.mark.parametrize(("case", "error", "message"), [
    ("out_not_zip", OptionError, "must be a .zip file"),
    ("not_a_run", CytolensError, ""),
    ("unfinished", CytolensError, "has not finished"),
    ("final_model", OptionError, "best_fold"),
    ("tiny_image", CytolensError, "the test crop needs at least 4×4"),
    ("missing_image", CytolensError, ""),
    ("without_the_extra", CytolensError, "pip install 'cytolens[export]'"),
])
def test_bad_input_is_one_clear_line(run: Path, tmp_path: Path, case: str, error: type[Exception],
                                     message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    out, kwargs = tmp_path / "model.zip", {}
    if case == "without_the_extra":  # an install without bioimageio.spec: the import fails
        monkeypatch.setitem(sys.modules, "bioimageio.spec", None)
    source: Path = run
    if case == "out_not_zip":
        out = tmp_path / "model.yaml"
    elif case == "not_a_run":
        source = tmp_path / "empty"
        source.mkdir()
    elif case == "unfinished":
        source = _unfinished(run, tmp_path)
    elif case == "final_model":
        kwargs = {"final_model": "best"}
    elif case == "tiny_image":
        kwargs = {"test_image": write_tiff(tmp_path / "tiny.tif", np.ones((3, 40), np.uint16))}
    elif case == "missing_image":
        kwargs = {"test_image": tmp_path / "absent.tif"}
    with pytest.raises(error) as info:
        export_bioimageio(source, out, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)
    if case in ("tiny_image", "missing_image"):
        assert str(kwargs["test_image"]) in str(info.value)
    assert not out.exists()
