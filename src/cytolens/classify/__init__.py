"""Classify single-cell images: the CNN of Shpilman et al. 2017 and modern alternatives.

Models are built by name from a registry (:func:`create_model`, :func:`list_models`) and always return raw
logits; :func:`count_parameters` reports both PyTorch's and Keras' counts so numbers compare with the paper.
The topology search space of the paper is in :mod:`cytolens.classify.search_space`, saliency maps in
:mod:`cytolens.classify.gradcam`. :func:`train` runs the paper's protocol on a dataset folder and :func:`predict`
applies a trained run folder to new images (the functions behind ``cytolens classify train`` and ``predict``).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["count_parameters", "create_model", "list_models", "predict", "train"]

# Name -> (module, attribute), imported on first use (PEP 562): ``cytolens classify --help`` needs no torch.
_LAZY: dict[str, tuple[str, str]] = {
    "count_parameters": ("cytolens.engine.parameters", "count_parameters"),
    "create_model": ("cytolens.classify.models", "create_model"),
    "list_models": ("cytolens.classify.models", "list_models"),
    "predict": ("cytolens.classify.predict", "predict_images"),
    "train": ("cytolens.classify.training", "run_protocol"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
