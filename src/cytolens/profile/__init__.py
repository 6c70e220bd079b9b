"""Morphological profiling of single cells with GANs (CytoGAN, Goldsborough et al. 2017) and classical features.

The GANs are built by name like every capability's models (:func:`create_model`, :func:`list_models`); they are
imported on first use, so the numpy-only modules of this package load without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["create_model", "list_models"]


def __getattr__(name: str) -> Any:
    # PEP 562: the GAN registry (and torch) only when asked for.
    if name in __all__:
        return getattr(importlib.import_module("cytolens.profile.gan.models"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
