"""The HTML report shows each capability's tables from its files and embeds its figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cytolens.cli.app import main
from cytolens.report.html import collect_sections, write_report


def _png(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), value, dtype=np.uint8)).save(path)
    return path


def _demo_like_folder(root: Path) -> Path:
    classify = root / "classify"
    classify.mkdir(parents=True)
    pd.DataFrame({"task": ["3 classes"], "paper CNN+T+S": [66.0], "CNN+T+S": [73.25]}).to_csv(
        classify / "table_iv.csv", index=False)
    _png(classify / "figures" / "accuracy.png", 10)
    segment = root / "segment" / "evaluation"
    segment.mkdir(parents=True)
    pd.DataFrame({"row": ["validation dice"], "paper: U-Net": [0.9102], "ours: unet": [0.8765]}).to_csv(
        segment / "table1.csv", index=False)
    metrics = {"images": 3, "mode": "out-of-fold", "dice": {"background": 0.9, "nucleus": 0.8, "cytoplasm": 0.85},
               "mean_dice": 0.85, "pixel_accuracy": 0.91, "definition": "dice = 2TP / (2TP + FP + FN)"}
    (segment / "metrics.json").write_text(json.dumps(metrics))
    _png(root / "segment" / "predictions" / "field_0003_overlay.png", 200)
    return root


def test_sections_come_from_the_files_and_figures_are_embedded(tmp_path: Path) -> None:
    root = _demo_like_folder(tmp_path / "demo")
    assert [section.key for section in collect_sections(root)] == ["classify", "segment"]
    page = write_report(root).read_text()
    assert "73.25" in page and "0.8765" in page and "mean dice 0.850" in page
    assert page.count("data:image/png;base64,") == 2 and "field_0003" in page
    assert 'id="profile"' not in page  # no profile outputs, no empty section


def test_a_single_capability_run_folder_is_a_report_too(tmp_path: Path) -> None:
    root = _demo_like_folder(tmp_path / "demo")
    assert [section.key for section in collect_sections(root / "segment")] == ["segment"]


def test_report_command_writes_the_page_and_names_a_bad_folder(tmp_path: Path, capsys) -> None:
    root = _demo_like_folder(tmp_path / "demo")
    try:
        main(["report", str(root), "--out", str(tmp_path / "page.html")])
    except SystemExit as exit_:
        assert exit_.code in (0, None)
    assert (tmp_path / "page.html").read_text().startswith("<!DOCTYPE html>")
    assert "classify, segment" in capsys.readouterr().err
    try:
        main(["report", str(tmp_path / "missing")])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "missing" in err


def test_a_run_folder_shows_the_section_its_run_json_names(tmp_path: Path) -> None:
    root = _demo_like_folder(tmp_path / "demo")
    # A segment run that also holds a table_iv.csv (copied in by hand) is still a segment run, not a classify one.
    (root / "segment" / "table_iv.csv").write_text((root / "classify" / "table_iv.csv").read_text())
    (root / "segment" / "run.json").write_text(json.dumps({"kind": "segment"}))
    assert [section.key for section in collect_sections(root / "segment")] == ["segment"]
    (root / "segment" / "run.json").write_text(json.dumps({"kind": "classify"}))
    assert [section.key for section in collect_sections(root / "segment")] == ["classify"]
