"""Segment bright-field images into background / nucleus / cytoplasm (MIDL 2019, seed 003).

Networks are built by name (:func:`create_model`, :func:`list_models`) and return
logits at the input's size; :func:`count_parameters` reports PyTorch's and Keras' counts so they compare with
the paper's Table 1 (:data:`PAPER_PARAMETERS`). The model API is imported lazily, so the numpy-only modules of
this package (augmentation, labels) load without torch. :func:`cell_segmenter` turns a trained run into a
function from a normalised image to its nuclei and cells (profiling uses it).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "PAPER_PARAMETERS", "SEGMENTATION_MODELS", "CellSegmenter", "SegmentationModel", "cell_segmenter",
    "count_parameters", "create_model", "list_models", "segmentation_model_recipe",
]

_PREDICT_API = ("CellSegmenter", "cell_segmenter")


def __getattr__(name: str) -> Any:
    # PEP 562: resolve the model API on first use; cytolens.segment.models registers every architecture.
    if name in _PREDICT_API:
        return getattr(importlib.import_module("cytolens.segment.predict"), name)
    if name in __all__:
        return getattr(importlib.import_module("cytolens.segment.models"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
