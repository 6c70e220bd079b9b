"""Blinded scoring of test images by human experts, and the human-versus-CNN statistics (Shpilman et al. 2017).

- :mod:`cytolens.experts.store` — the study's SQLite file (test set, experts, sessions, answers).
- :mod:`cytolens.experts.app` — the local web app experts score in (``cytolens experts serve``).
- :mod:`cytolens.experts.scoring` — Tables I–IV: expert accuracy, majority vote, confusion matrices, and the
  CNN against the best expert and the vote with the paper's t-test and McNemar's exact test.
- :mod:`cytolens.experts.report` — the tables as CSV/markdown and the HTML section of the report.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ExpertReport", "ExpertStore", "Task", "build_expert_report", "parse_task", "render_experts_section",
    "write_expert_report",
]

# Name -> module, imported on first use (PEP 562): ``cytolens experts --help`` needs neither scipy nor pandas.
_LAZY: dict[str, str] = {
    "ExpertReport": "cytolens.experts.report", "build_expert_report": "cytolens.experts.report",
    "render_experts_section": "cytolens.experts.report", "write_expert_report": "cytolens.experts.report",
    "ExpertStore": "cytolens.experts.store", "Task": "cytolens.data.tasks", "parse_task": "cytolens.data.tasks",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
