"""Streamed whole-image segmentation: band-wise reading, prediction and writing equal the whole-image path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from segment_runs import blob_field, train_tiny_run
from torch import nn

import cytolens.data.tiles as tiles
from cytolens.core.config import load_config
from cytolens.core.errors import OptionError
from cytolens.data.io import read_image
from cytolens.data.tiles import open_image_rows
from cytolens.engine import EngineOptions
from cytolens.segment.config import SegmentConfig
from cytolens.segment.inference import fold_batch_norm, predict_bands, predict_tiled, prepare_for_inference
from cytolens.segment.outputs import SegmentationWriter, write_segmentation
from cytolens.segment.predict import normalised_rows, predict_images
from cytolens.segment.training import read_input

TINY = {
    "name": "tiny", "deviations": ["test size"], "model": "unet",
    "model_options": {"filters": [4, 8], "bottleneck": 8, "batch_norm": "all"}, "patch_size": 32,
    "patches_per_epoch": 8, "batch_size": 4, "epochs": 1, "folds": 2, "precision": "32-true",
    "intensity": {"method": "percentile", "percentiles": [0.5, 99.8]},
    "inference": {"tile": 32, "overlap": 8, "batch_size": 2},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("stream"), TINY, size=(48, 48))


def _large_tiff(path: Path) -> Path:
    image, _ = blob_field((100, 75), 11)
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, image, compression="zlib", tile=(16, 16))
    return path


def _outputs(folder: Path, stem: str) -> dict[str, np.ndarray]:
    return {name: read_image(folder / f"{stem}{name}") for name in (".tif", "_prob.tif", "_overlay.png")}


def test_streamed_prediction_equals_the_whole_image_path(run: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    image = _large_tiff(tmp_path / "in" / "large.tif")
    options = EngineOptions(precision="32-true")
    whole = predict_images(run, image, tmp_path / "whole", probabilities=True, options=options)
    monkeypatch.setattr(tiles, "WHOLE_BELOW", 0)  # every TIFF is now read in bands of 32 rows (4 bands)
    with open_image_rows(image) as opened:
        assert opened.streamed
    streamed = predict_images(run, image, tmp_path / "streamed", probabilities=True, options=options)
    pd.testing.assert_frame_equal(whole.table, streamed.table)
    expected, got = _outputs(tmp_path / "whole", "large"), _outputs(tmp_path / "streamed", "large")
    np.testing.assert_array_equal(got[".tif"], expected[".tif"])
    np.testing.assert_allclose(got["_prob.tif"], expected["_prob.tif"], atol=1e-6)
    np.testing.assert_array_equal(got["_overlay.png"], expected["_overlay.png"])
    assert got["_prob.tif"].shape == (100, 75, 3) and got[".tif"].dtype == np.uint8


def test_band_input_and_prediction_equal_the_whole_image(run: Path, tmp_path: Path) -> None:
    path = _large_tiff(tmp_path / "large.tif")
    config = load_config(run / "config.yaml", SegmentConfig)
    _, normalised = read_input(path, config)
    with open_image_rows(path, grayscale=True, whole_below=0) as image:
        reader = normalised_rows(image, config)
        np.testing.assert_array_equal(np.concatenate([reader(y, y + 30) for y in range(0, 100, 30)])[..., 0],
                                      normalised)
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                              nn.Conv2d(6, 3, 3, padding=1))
        model[1].running_mean.uniform_(-0.2, 0.2)
        model[1].running_var.uniform_(0.5, 2.0)
        model.eval()
        expected = predict_tiled(model, normalised, num_classes=3, tile=32, overlap=16, input_multiple=1)
        # Bands are views into a reused buffer, valid until the next one: copy each.
        bands = [(start, stop, band.copy()) for start, stop, band in predict_bands(
            prepare_for_inference(model), (reader, (100, 75, 1)), num_classes=3, tile=32, overlap=16,
            batch_size=3, input_multiple=1)]
    assert len(bands) > 3 and bands[0][0] == 0 and bands[-1][1] == 100
    assert all(stop == next_start for (_, stop, _), (next_start, _, _) in zip(bands, bands[1:]))
    got = np.concatenate([band for _, _, band in bands], axis=1)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_folding_batch_norm_keeps_the_function() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(),
                          nn.ConvTranspose2d(5, 4, 2, stride=2), nn.BatchNorm2d(4),
                          nn.Conv2d(4, 3, 1, bias=False), nn.BatchNorm2d(3, affine=False))
    for module in model:
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.3, 3)
            if module.affine:
                module.weight.data.uniform_(0.5, 1.5)
                module.bias.data.uniform_(-0.5, 0.5)
    model.eval()
    folded = fold_batch_norm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 3  # the original is untouched
    images = torch.rand(2, 2, 12, 10)
    with torch.no_grad():
        np.testing.assert_allclose(folded(images).numpy(), model(images).numpy(), atol=1e-5)


def test_writer_files_equal_write_segmentation_and_the_preview_is_bounded(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, (100, 70)).astype(np.uint8)
    probabilities = rng.random((3, 100, 70)).astype(np.float32)
    image = rng.integers(0, 4000, (100, 70)).astype(np.uint16)
    names = ["background", "nucleus", "cytoplasm"]
    write_segmentation(tmp_path / "whole", "x", labels, probabilities=probabilities, image=image, class_names=names)
    for max_side, step in ((100, 1), (32, 4)):
        with SegmentationWriter(tmp_path / str(max_side), "x", 100, 70, 3, probabilities=True, class_names=names,
                                overlay_max_side=max_side) as writer:
            for start in range(0, 100, 23):
                stop = min(start + 23, 100)
                writer.add(start, labels[start:stop], probabilities[:, start:stop], image[start:stop])
        assert writer.preview.step == step
        for suffix in (".tif", "_prob.tif"):
            np.testing.assert_array_equal(read_image(tmp_path / str(max_side) / f"x{suffix}"),
                                          read_image(tmp_path / "whole" / f"x{suffix}"))
        with tifffile.TiffFile(tmp_path / str(max_side) / "x_prob.tif") as tif:
            assert tif.is_ome and "nucleus" in tif.ome_metadata
    np.testing.assert_array_equal(read_image(tmp_path / "100" / "x_overlay.png"),
                                  read_image(tmp_path / "whole" / "x_overlay.png"))
    preview = read_image(tmp_path / "32" / "x_overlay.png")
    assert preview.shape == (25, 18, 3) and max(preview.shape[:2]) <= 32


def test_writer_leaves_no_file_when_a_band_is_missing_or_wrong(tmp_path: Path) -> None:
    labels = np.zeros((10, 8), np.uint8)
    with pytest.raises(OptionError, match="only rows 0..5 of 10"):
        with SegmentationWriter(tmp_path, "x", 10, 8, 3, overlay=False) as writer:
            writer.add(0, labels[:5])
    with pytest.raises(OptionError, match="does not continue"):
        with SegmentationWriter(tmp_path, "y", 10, 8, 3, overlay=False) as writer:
            writer.add(5, labels[:5])
    with pytest.raises(OptionError, match="integers in 0..2"):
        with SegmentationWriter(tmp_path, "z", 10, 8, 3, overlay=False) as writer:
            writer.add(0, labels + 3)
    assert list(tmp_path.iterdir()) == []


def test_the_overlay_preview_keeps_no_band_alive(tmp_path: Path) -> None:
    # A strided view of each band in the preview kept every band in memory: RSS grew with the image's height.
    from cytolens.segment.outputs import SegmentationWriter

    height, width = 64, 6000  # wide enough that the preview takes every 3rd pixel
    with SegmentationWriter(tmp_path, "field", height, width, 3, overlay_max_side=2048) as writer:
        for start in range(0, height, 16):
            writer.add(start, np.zeros((16, width), np.uint8), None, np.ones((16, width), np.uint16))
        kept = writer.preview.gray + writer.preview.labels
        assert writer.preview.step > 1 and kept and all(part.base is None for part in kept)
    assert (tmp_path / "field_overlay.png").is_file()
