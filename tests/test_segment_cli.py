"""`cytolens synth brightfield` and `cytolens segment labels` from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from cytolens.cli.app import main
from cytolens.data.io import read_image


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


def test_simulate_then_derive_labels(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bf"
    code, _, _ = run(["synth", "brightfield", str(out), "--images", "1", "--height", "160", "--width", "192"], capsys)
    assert code == 0
    for folder in ("brightfield", "dapi", "cellstain", "truth"):
        assert (out / folder / "field_0000.tif").is_file()
    code, stdout, _ = run(["segment", "labels", str(out)], capsys)
    assert code == 0 and "agreement with truth/ over 1 images" in stdout
    labels = read_image(out / "labels" / "field_0000.tif")
    assert labels.shape == (160, 192) and set(labels.ravel().tolist()) <= {0, 1, 2}


def test_labels_without_fluorescence_is_one_line(tmp_path: Path, capsys) -> None:
    code, _, err = run(["segment", "labels", str(tmp_path)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "dapi/" in err
