"""Blinded scoring of test images by human experts, and the human-versus-CNN statistics (Shpilman et al. 2017).

- :mod:`cytolens.experts.store` — the study's SQLite file (test set, experts, sessions, answers).
- :mod:`cytolens.experts.app` — the local web app experts score in (``cytolens experts serve``).
- :mod:`cytolens.experts.scoring` — Tables I–IV: expert accuracy, majority vote, confusion matrices, and the
  CNN against the best expert and the vote with the paper's t-test and McNemar's exact test.
- :mod:`cytolens.experts.report` — the tables as CSV/markdown and the HTML section of the report.
"""

from cytolens.experts.report import ExpertReport, build_expert_report, render_experts_section, write_expert_report
from cytolens.experts.store import ExpertStore
from cytolens.experts.tasks import ExpertTask, parse_task

__all__ = [
    "ExpertReport", "ExpertStore", "ExpertTask", "build_expert_report", "parse_task", "render_experts_section",
    "write_expert_report",
]
