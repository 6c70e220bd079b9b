"""`cytolens synth brightfield` and `cytolens segment labels` from the command line."""

from __future__ import annotations

from pathlib import Path

from cytolens.data.io import read_image


def test_simulate_then_derive_labels(tmp_path: Path, cli) -> None:
    out = tmp_path / "bf"
    cli("synth", "brightfield", out, "--images", "1", "--height", "160", "--width", "192")
    for folder in ("brightfield", "dapi", "cellstain", "truth"):
        assert (out / folder / "field_0000.tif").is_file()
    assert "agreement with truth/ over 1 images" in cli("segment", "labels", out).out
    labels = read_image(out / "labels" / "field_0000.tif")
    assert labels.shape == (160, 192) and set(labels.ravel().tolist()) <= {0, 1, 2}


def test_labels_without_fluorescence_is_one_line(tmp_path: Path, cli) -> None:
    assert "dapi/" in cli("segment", "labels", tmp_path, code=2).error
