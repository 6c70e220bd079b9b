"""Run folders resume only what they started: the same config and the same data.

Every capability writes one run folder per experiment; a rerun with the same ``--out`` skips finished units.
That is only safe when the config and the images (and their split) are those the finished units used.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from cytolens.atomic import write_text_atomic
from cytolens.config import StrictModel
from cytolens.errors import CytolensError

FINGERPRINT_FILE = "data_fingerprint.txt"


def check_same_config(out: Path, config: StrictModel) -> None:
    """Refuse to resume a run folder whose ``config.yaml`` differs from ``config``."""
    saved = Path(out) / "config.yaml"
    if saved.is_file() and yaml.safe_load(saved.read_text(encoding="utf-8")) != config.model_dump(mode="json"):
        raise CytolensError(
            "run folder holds a run with a different config; choose a new --out or delete the folder", path=out
        )


def check_same_data(out: Path, fingerprint: str) -> None:
    """Refuse to resume on other data; record ``fingerprint`` (a hash of which image is where) otherwise."""
    stamp = Path(out) / FINGERPRINT_FILE
    if stamp.is_file() and stamp.read_text(encoding="utf-8").strip() != fingerprint:
        raise CytolensError(
            "run folder was trained on other images or another split; choose a new --out or delete the folder",
            path=out,
        )
    write_text_atomic(stamp, fingerprint + "\n")
