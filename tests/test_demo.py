"""`cytolens demo` writes its run folder from simulated data, checked by the same code as `data check`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cytolens.demo import run_demo


def test_demo_writes_checked_data_manifest_and_figure(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "demo", per_class=3, size=64, seed=1, classify=False)
    out = tmp_path / "demo"
    assert result.check.ok
    summary = json.loads((out / "data_check.json").read_text())
    assert summary["classes"] == ["0", "0.1", "1"]
    assert summary["counts"] == {"0": {"": 3}, "0.1": {"": 3}, "1": {"": 3}}
    assert summary["bits_used_max"] <= 14
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert len(manifest) == 9 and set(manifest["class"]) == {"0", "0.1", "1"}
    figure = out / "figures" / "microtubule_examples.png"
    assert figure.read_bytes().startswith(b"\x89PNG")
    assert set(result.outputs) >= {figure, out / "manifest.parquet"}
