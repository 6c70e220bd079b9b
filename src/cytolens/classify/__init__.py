"""Classify single-cell images: the CNN of Shpilman et al. 2017 and modern alternatives.

Models are built by name from a registry (:func:`create_model`, :func:`list_models`) and always return raw
logits; :func:`count_parameters` reports both PyTorch's and Keras' counts so numbers compare with the paper.
The topology search space of the paper is in :mod:`cytolens.classify.search_space`, saliency maps in
:mod:`cytolens.classify.gradcam`. :func:`train` runs the paper's protocol on a dataset folder and :func:`predict`
applies a trained run folder to new images (the functions behind ``cytolens classify train`` and ``predict``).
"""

from __future__ import annotations

from cytolens.classify import resnet as _resnet  # noqa: F401 - registers resnet18
from cytolens.classify.models import create_model, list_models
from cytolens.engine.parameters import count_parameters
from cytolens.classify.predict import predict_images as predict
from cytolens.classify.training import run_protocol as train

__all__ = ["count_parameters", "create_model", "list_models", "predict", "train"]
