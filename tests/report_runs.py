"""A tiny demo folder with a real run of each capability, for the report's tests (about 45 s on 2 CPU cores).

The demo's own steps write it: ``run_demo`` without capabilities (the simulated cells, their check and
montage), the classification protocol shrunk to one task and one epoch, and the demo's segment and profile steps
shrunk as tests/test_demo.py shrinks them. Built once per test session and shared read-only: tests write their
pages elsewhere with ``out=``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_CLASSIFY = {
    "name": "tiny",
    "classes": ["0", "0.1", "1"],
    "test_per_class": 2,
    "input_size": 32,
    "folds": 2,
    "tasks": ["all"],
    "training": {"max_epochs": 1, "batch_size": 8},
    "xgboost": {"n_estimators": 5},
    "gradcam_examples": 1,
}
TINY_SEGMENT = {"model_options": {"filters": [4, 8], "bottleneck": 8}, "patch_size": 32, "patches_per_epoch": 8,
                "epochs": 1, "validate_every": 1, "inference": {"tile": 64, "overlap": 8, "batch_size": 2}}
TINY_PROFILE = {"steps": 2, "batch_size": 8, "sample_every": 1, "checkpoint_every": 1, "log_every": 1,
                "max_minutes": None}

_BUILT: dict[Path, Path] = {}


def build_tiny_demo(root: Path) -> Path:
    """Write the tiny demo folder ``root`` (``classify/``, ``segment/``, ``profile/`` and the demo's own files)."""
    from cytolens.classify.config import ClassifyConfig
    from cytolens.classify.training import run_protocol
    from cytolens.core.config import validate_config
    from cytolens.demo import profile_demo, run_demo, segment_demo

    run_demo(root, per_class=6, size=64, seed=3, classify=False, segment=False, profile=False)
    run_protocol(root / "data" / "microtubules", validate_config(TINY_CLASSIFY, ClassifyConfig), root / "classify")
    segment_demo(root, seed=0, fields=4, field_shape=(96, 128), **TINY_SEGMENT)
    profile_demo(root, seed=0, scale="tiny", **TINY_PROFILE)
    return root


@pytest.fixture
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny demo folder, built on first use in this session and shared (read-only) by later tests."""
    base = tmp_path_factory.getbasetemp()
    if base not in _BUILT:
        _BUILT[base] = build_tiny_demo(tmp_path_factory.mktemp("report-demo") / "demo")
    return _BUILT[base]
