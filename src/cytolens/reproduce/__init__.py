"""``cytolens reproduce``: a paper's whole protocol in one resumable run folder.

:func:`reproduce` simulates the paper's data (or reads the real dataset in its real layout), trains every model
the paper compares, evaluates them and writes ``RUN/report.html``, as an ordered list of named steps recorded in
``RUN/steps.json`` (:mod:`cytolens.reproduce.steps`); :mod:`cytolens.reproduce.papers` holds each paper's steps
and :mod:`cytolens.reproduce.stages` the work that ``cytolens demo`` shares.
"""

from __future__ import annotations

from cytolens.reproduce.protocol import PAPERS, SCALES, ReproduceResult, check_paper_data, reproduce

__all__ = ["PAPERS", "SCALES", "ReproduceResult", "check_paper_data", "reproduce"]
