"""OME-Zarr (NGFF 0.5) output of whole-image segmentation: equal to the TIFF output pixel for pixel, valid
metadata, pixel sizes carried from the input, pyramids built band by band, atomic folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import zarr
from ome_zarr_models.v05 import Image, Labels
from segment_runs import blob_field
from test_segment_predict_stream import _large_tiff, run  # noqa: F401 (run is a fixture)

import cytolens.data.tiles as tiles
import cytolens.segment.ome_zarr as ome_zarr
from cytolens.core.errors import OptionError
from cytolens.data.io import read_image
from cytolens.data.pixel_size import PixelSize
from cytolens.engine import EngineOptions
from cytolens.segment.ome_zarr import OmeZarrSegmentationWriter
from cytolens.segment.pyramid import PyramidWriter, downsample, pyramid_shapes
from cytolens.segment.predict import predict_images

NAMES = ["background", "nucleus", "cytoplasm"]


def _reference_pyramid(level0: np.ndarray, levels: int, method: str) -> list[np.ndarray]:
    """Each level from the whole level above (an odd last row paired with itself): what streaming must equal."""
    pyramid = [level0]
    for _ in range(levels - 1):
        above = pyramid[-1]
        if above.shape[-2] % 2:
            above = np.concatenate([above, above[..., -1:, :]], axis=-2)
        pyramid.append(downsample(above, method))
    return pyramid


def test_ome_zarr_of_a_tiled_prediction_equals_the_tiff_output_and_validates(
        run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    image = _large_tiff(tmp_path / "in" / "large.tif")
    monkeypatch.setattr(tiles, "WHOLE_BELOW", 0)  # read and predicted in bands of rows
    monkeypatch.setattr(ome_zarr, "OME_ZARR_CHUNK", 32)  # 100 × 75: chunks 32², levels 100, 50, 25 rows
    options = EngineOptions(precision="32-true")
    tiff = predict_images(run, image, tmp_path / "tiff", probabilities=True, cells=True, options=options)
    zarr_run = predict_images(run, image, tmp_path / "zarr", probabilities=True, cells=True,
                              output_format="ome-zarr", options=options)
    out = tmp_path / "zarr"
    assert sorted(p.name for p in out.iterdir()) == ["cells.csv", "images.csv", "large.ome.zarr", "large_overlay.png",
                                                     "large_prob.ome.zarr", "prediction.json"]
    root = zarr.open_group(out / "large.ome.zarr", mode="r")
    np.testing.assert_array_equal(root["0"][:], read_image(image))
    np.testing.assert_array_equal(root["labels/classes/0"][:], read_image(tmp_path / "tiff" / "large.tif"))
    np.testing.assert_array_equal(root["labels/cells/0"][:], read_image(tmp_path / "tiff" / "large_cells.tif"))
    probabilities = zarr.open_group(out / "large_prob.ome.zarr", mode="r")["0"][:]
    np.testing.assert_allclose(np.moveaxis(probabilities, 0, -1), read_image(tmp_path / "tiff" / "large_prob.tif"),
                               atol=1e-6)
    np.testing.assert_array_equal(read_image(out / "large_overlay.png"),
                                  read_image(tmp_path / "tiff" / "large_overlay.png"))
    assert root["labels/classes/0"].chunks == (32, 32) and root["labels/classes/0"].dtype == np.uint8
    for name, method in (("0", "mean"), ("labels/classes/0", "nearest"), ("labels/cells/0", "nearest")):
        group = root[name.rsplit("/", 1)[0]] if "/" in name else root
        expected = _reference_pyramid(root[name][:], 3, method)
        for level in range(3):
            np.testing.assert_array_equal(group[str(level)][:], expected[level])
    assert [root[str(k)].shape for k in range(3)] == [(100, 75), (50, 38), (25, 19)]

    # The metadata validates against the NGFF 0.5 models (image, its labels group and both label images).
    model = Image.from_zarr(root)
    assert model.ome_attributes.version == "0.5" and root.metadata.zarr_format == 3
    assert Labels.from_zarr(root["labels"]).label_paths == ["classes", "cells"]
    classes = Labels.from_zarr(root["labels"]).get_image_labels_group("classes")
    label = classes.attributes.ome.image_label
    assert [p.model_extra["class"] for p in label.properties] == NAMES
    assert label.colors[0].rgba == (0, 0, 0, 0) and label.source.image == "../../"
    prob_model = Image.from_zarr(zarr.open_group(out / "large_prob.ome.zarr", mode="r"))
    assert [a.name for a in prob_model.ome_attributes.multiscales[0].axes] == ["c", "y", "x"]
    omero = zarr.open_group(out / "large_prob.ome.zarr", mode="r").attrs["ome"]["omero"]
    assert [c["label"] for c in omero["channels"]] == NAMES
    assert root["0"].metadata.dimension_names == ("y", "x")

    # The summaries name the files written, relative to the output folder.
    row = pd.read_csv(out / "images.csv").iloc[0]
    assert (row["image_file"], row["labels_file"], row["cells_file"], row["probabilities_file"]) == (
        "large.ome.zarr", "large.ome.zarr/labels/classes", "large.ome.zarr/labels/cells", "large_prob.ome.zarr")
    assert pd.read_csv(tmp_path / "tiff" / "images.csv").iloc[0]["cells_file"] == "large_cells.tif"
    assert set(pd.read_csv(out / "cells.csv")["Metadata_cells_file"]) == {"large.ome.zarr/labels/cells"}
    pd.testing.assert_frame_equal(zarr_run.cells.drop(columns="Metadata_cells_file"),
                                  tiff.cells.drop(columns="Metadata_cells_file"))


def _scales(group: zarr.Group) -> list[list[float]]:
    datasets = group.attrs["ome"]["multiscales"][0]["datasets"]
    return [d["coordinateTransformations"][0]["scale"] for d in datasets]


def test_pixel_sizes_and_channel_names_of_an_ome_tiff_reach_the_zarr(
        run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setattr(ome_zarr, "OME_ZARR_CHUNK", 32)
    image, _ = blob_field((60, 48), 5)
    inputs = tmp_path / "in"
    inputs.mkdir()
    tifffile.imwrite(inputs / "calibrated.ome.tif", image, ome=True, metadata={
        "axes": "YX", "PhysicalSizeX": 325.0, "PhysicalSizeY": 500.0, "PhysicalSizeXUnit": "nm",
        "PhysicalSizeYUnit": "nm", "Channel": {"Name": ["Brightfield 20x"]}})
    tifffile.imwrite(inputs / "plain.tif", image)
    options = EngineOptions(precision="32-true")
    predict_images(run, inputs, tmp_path / "out", output_format="ome-zarr", options=options)
    calibrated = zarr.open_group(tmp_path / "out" / "calibrated.ome.zarr", mode="r")
    for group in (calibrated, calibrated["labels/classes"]):
        assert _scales(group) == [pytest.approx([0.5, 0.325]), pytest.approx([1.0, 0.65])]
        axes = group.attrs["ome"]["multiscales"][0]["axes"]
        assert [(a["name"], a["type"], a.get("unit")) for a in axes] == [("y", "space", "micrometer"),
                                                                          ("x", "space", "micrometer")]
    Image.from_zarr(calibrated)
    # The file's own channel name travels too; a plain TIFF's channel is named after the file.
    assert [c["label"] for c in calibrated.attrs["ome"]["omero"]["channels"]] == ["Brightfield 20x"]
    plain = zarr.open_group(tmp_path / "out" / "plain.ome.zarr", mode="r")
    assert [c["label"] for c in plain.attrs["ome"]["omero"]["channels"]] == ["plain"]
    assert _scales(plain) == [[1.0, 1.0], [2.0, 2.0]]
    assert all("unit" not in a for a in plain.attrs["ome"]["multiscales"][0]["axes"])
    table = pd.read_csv(tmp_path / "out" / "images.csv").set_index("stem")
    assert table.loc["calibrated", "pixel_size_from"] == "OME-XML"
    assert table.loc["calibrated", "pixel_size_um"] == pytest.approx((0.5 * 0.325) ** 0.5)

    predict_images(run, inputs / "plain.tif", tmp_path / "override", output_format="ome-zarr", pixel_size_um=0.2,
                   options=options)
    assert _scales(zarr.open_group(tmp_path / "override" / "plain.ome.zarr", mode="r"))[0] == [0.2, 0.2]


@pytest.mark.parametrize(("height", "width", "band"), [(77, 53, 10), (64, 64, 64), (5, 131, 2), (1, 1, 1)])
@pytest.mark.parametrize("channels", [None, 2])
def test_the_pyramid_built_while_streaming_equals_one_built_from_the_whole_image(
        tmp_path: Path, height: int, width: int, band: int, channels: int | None) -> None:
    rng = np.random.default_rng(height * width)
    shape = ((channels,) if channels else ()) + (height, width)
    data = {"mean": rng.integers(0, 60000, shape).astype(np.uint16), "nearest": rng.integers(0, 9, shape)}
    shapes = pyramid_shapes(height, width, top=8)
    group = zarr.open_group(tmp_path / "p.zarr", mode="w", zarr_format=3)
    for method, values in data.items():
        writer = PyramidWriter(group.create_group(method), shapes, dtype=values.dtype, channels=channels,
                               method=method, dimension_names=["c", "y", "x"][-len(shape):], chunk=8)
        for start in range(0, height, band):
            writer.add(values[..., start : start + band, :])
        writer.close()
        expected = _reference_pyramid(values, len(shapes), method)
        for level, (h, w) in enumerate(shapes):
            got = group[method][str(level)][:]
            assert got.shape[-2:] == (h, w)
            np.testing.assert_array_equal(got, expected[level])


def test_mean_downsampling_rounds_and_keeps_the_dtype() -> None:
    rows = np.array([[0, 1, 7], [2, 2, 8]], np.uint8)
    np.testing.assert_array_equal(downsample(rows, "mean"), np.array([[1, 8]], np.uint8))
    np.testing.assert_allclose(downsample(rows.astype(np.float32) / 8, "mean"), [[0.15625, 0.9375]])
    np.testing.assert_array_equal(downsample(rows, "nearest"), [[0, 7]])
    with pytest.raises(OptionError, match="even"):
        downsample(rows[:1], "mean")
    assert pyramid_shapes(10_000, 10_000, top=1024)[-1] == (625, 625)
    assert pyramid_shapes(1440, 1920, top=1024) == [(1440, 1920), (720, 960)]


def test_the_writer_leaves_nothing_on_an_error_and_replaces_an_older_image(tmp_path: Path) -> None:
    labels = np.zeros((10, 8), np.uint8)
    image = np.ones((10, 8), np.uint16)
    with pytest.raises(OptionError, match="only rows 0..5 of 10"):
        with OmeZarrSegmentationWriter(tmp_path, "x", 10, 8, 3, probabilities=True, overlay=False) as writer:
            writer.add(0, labels[:5], np.zeros((3, 5, 8), np.float32), image[:5])
    with pytest.raises(OptionError, match="integers in 0..2"):
        with OmeZarrSegmentationWriter(tmp_path, "y", 10, 8, 3, overlay=False) as writer:
            writer.add(0, labels + 3, None, image)
    assert list(tmp_path.iterdir()) == []  # no temporary folder left behind either

    for value in (1, 2):
        with OmeZarrSegmentationWriter(tmp_path, "x", 10, 8, 3, overlay=False,
                                       pixel_size=PixelSize(0.3, 0.3, "OME-XML")) as writer:
            writer.add(0, labels + value, None, image)
        assert (zarr.open_group(tmp_path / "x.ome.zarr", mode="r")["labels/classes/0"][:] == value).all()
    assert [p.name for p in tmp_path.iterdir()] == ["x.ome.zarr"]


def test_cli_writes_ome_zarr_and_names_a_wrong_format(run: Path, tmp_path: Path, cli) -> None:  # noqa: F811
    image = _large_tiff(tmp_path / "in" / "large.tif")
    cli("segment", "predict", run, image, "--out", tmp_path / "out", "--format", "ome-zarr", "--prob")
    assert (tmp_path / "out" / "large.ome.zarr" / "zarr.json").is_file()
    assert (tmp_path / "out" / "large_prob.ome.zarr" / "zarr.json").is_file()
    assert not list((tmp_path / "out").glob("*.tif"))
    wrong = cli("segment", "predict", run, image, "--out", tmp_path / "bad", "--format", "omezarr", code=2)
    assert "ome-zarr" in wrong.error


def test_the_report_caption_names_the_ome_zarr_images(tmp_path: Path) -> None:
    from cytolens.segment.report_section import overlay_caption

    overlay = tmp_path / "field_overlay.png"
    assert "OME-Zarr" not in overlay_caption(overlay, "ensemble")
    (tmp_path / "field.ome.zarr" / "labels" / "cells").mkdir(parents=True)
    (tmp_path / "field_prob.ome.zarr").mkdir()
    caption = overlay_caption(overlay, "ensemble")
    assert "field.ome.zarr and field_prob.ome.zarr" in caption and "labels/cells" in caption


def test_napari_opens_the_image_its_labels_and_the_probabilities(run: Path, tmp_path: Path) -> None:  # noqa: F811
    """napari-ome-zarr's reader (what ``napari OUT/x.ome.zarr`` runs), and napari's layers built from what it
    reads, without a viewer: names, colours, scales and pyramid levels arrive as written."""
    reader = pytest.importorskip("napari_ome_zarr").napari_get_reader
    layers = pytest.importorskip("napari.layers")
    image, _ = blob_field((60, 48), 7)
    tifffile.imwrite(tmp_path / "field.ome.tif", image, ome=True, metadata={
        "axes": "YX", "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.65, "Channel": {"Name": ["Brightfield"]}})
    predict_images(run, tmp_path / "field.ome.tif", tmp_path / "out", probabilities=True, cells=True,
                   output_format="ome-zarr", options=EngineOptions(precision="32-true"))

    path = str(tmp_path / "out" / "field.ome.zarr")
    # napari names an image "<image>: <channel>" and a label image by its path.
    read = {kind + ":" + str(meta["name"]).rsplit("/", 1)[-1]: (data, meta, kind) for data, meta, kind in
            reader(path)(path)}
    assert set(read) == {"image:field: Brightfield", "labels:classes", "labels:cells"}
    data, meta, _ = read["image:field: Brightfield"]
    assert list(meta["scale"]) == pytest.approx([0.65, 0.65])
    np.testing.assert_array_equal(np.asarray(data[0] if isinstance(data, list) else data), image)
    classes, class_meta, _ = read["labels:classes"]
    assert list(class_meta["properties"]["class"]) == NAMES
    assert class_meta["colormap"][0][3] == 0.0 and class_meta["colormap"][1][:3] == [1.0, 0.0, 1.0]  # magenta
    layers.Image(data, **{k: v for k, v in meta.items() if k in ("name", "scale", "contrast_limits")})
    layers.Labels(classes, **{k: v for k, v in class_meta.items() if k in ("name", "scale", "properties")})

    path = str(tmp_path / "out" / "field_prob.ome.zarr")
    (data, meta, kind), = reader(path)(path)
    assert kind == "image" and list(meta["name"]) == [f"field probabilities: {name}" for name in NAMES]
    assert meta["channel_axis"] == 0
    assert np.asarray(data[0] if isinstance(data, list) else data).shape == (3, 60, 48)
