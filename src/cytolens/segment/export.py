"""``cytolens segment export``: a trained run as a bioimage.io model package (``MODEL.zip``).

The package follows the bioimage.io model description format 0.5 (:mod:`bioimageio.spec`, the ``export`` extra),
so deepImageJ, ilastik, QuPath and napari (through ``bioimageio.core``) run the network without cytolens:

* ``weights.pt`` — TorchScript (traced) of the run's final model (:func:`~cytolens.segment.predict.final_model`)
  **with its softmax**: the output is class probabilities. An ensemble's fold networks sit inside the one module
  and their probabilities are averaged, as ``segment predict`` does; eval-mode BatchNorm is folded into the
  convolutions (:func:`~cytolens.segment.inference.fold_batch_norm`), as for prediction.
* ``rdf.yaml`` — input ``(batch, channel, y, x)`` float32 with a size of ``min + n·step`` (``step`` = the
  network's ``input_multiple``), the run's intensity scaling written as bioimage.io operations
  (:func:`preprocessing_ops`), output ``(batch, class, y, x)`` probabilities with the class names as channel
  names and a halo of half the run's tile overlap for consumers that tile.
* ``test_input.npy`` / ``test_output.npy`` — a square crop of a training image (raw intensities as float32,
  ``(1, C, h, w)``) and the model's probabilities on it (``(1, K, h, w)``). The crop fits in one of the run's
  inference tiles, so ``segment predict --prob`` on the same crop gives the same probabilities.
* ``cover.png`` (the crop and its predicted classes side by side), ``README.md`` (classes, preprocessing, the
  final model, per-fold validation dice, the run's evaluation if any, the training config) and the run's
  ``config.yaml``.

Nothing touches the network: the one web address in the description (the MIDL 2019 citation) is declared known
to bioimageio.spec's validation, which would otherwise check that it resolves.
"""

from __future__ import annotations

import importlib.metadata
import re
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cytolens.core.atomic import atomic_path
from cytolens.core.errors import CytolensError, OptionError, check_choice
from cytolens.segment.config import SegmentConfig
from cytolens.segment.export_readme import package_readme
from cytolens.segment.predict import SegmentRun, load_segment_run

__all__ = ["ExportedModel", "ProbabilityNetwork", "export_bioimageio", "preprocessing_ops", "square_test_crop"]

#: Side of the test crop unless the run's tiles or images are smaller.
DEFAULT_CROP = 256

MIDL2019_CITATION = ("Semantic segmentation of cell nuclei and cytoplasms in microscopy images. Medical Imaging "
                     "with Deep Learning (MIDL) 2019, extended abstract. The method this model's training follows.")
MIDL2019_URL = "https://openreview.net/group?id=MIDL.io/2019/Conference"
#: The architectures' own papers (DOIs, which bioimageio.spec checks by pattern only).
ARCHITECTURE_CITATIONS: dict[str, tuple[str, str]] = {
    "unet": ("Ronneberger O, Fischer P, Brox T. U-Net: Convolutional networks for biomedical image segmentation. "
             "MICCAI 2015.", "10.1007/978-3-319-24574-4_28"),
    "fcdensenet103": ("Jégou S, Drozdzal M, Vazquez D, Romero A, Bengio Y. The one hundred layers tiramisu: fully "
                      "convolutional DenseNets for semantic segmentation. CVPR Workshops 2017.",
                      "10.1109/CVPRW.2017.156"),
    "deeplabv3plus_xception65": ("Chen LC, Zhu Y, Papandreou G, Schroff F, Adam H. Encoder-decoder with atrous "
                                 "separable convolution for semantic image segmentation. ECCV 2018.",
                                 "10.1007/978-3-030-01234-2_49"),
}


class ProbabilityNetwork(nn.Module):
    """Fold networks as one module returning class probabilities: the mean of their softmax outputs.

    The same function as ``segment predict``'s :class:`~cytolens.segment.predict.FoldEnsemble` followed by the
    tiled predictor's softmax, without its ``log``/``softmax`` round trip (equal up to float rounding).
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise CytolensError("an exported model needs at least one fold network")
        self.members = nn.ModuleList(members)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        total = torch.softmax(self.members[0](images).float(), dim=1)
        for member in self.members[1:]:
            total = total + torch.softmax(member(images).float(), dim=1)
        return total / len(self.members) if len(self.members) > 1 else total


@dataclass(frozen=True)
class ExportedModel:
    """What :func:`export_bioimageio` wrote: the package and the facts its report line needs."""

    path: Path
    model: str  # the final model, in words
    test_image: Path
    crop: tuple[int, int, int, int]  # y, x, height, width of the test crop in test_image
    seconds: float
    size_bytes: int


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def preprocessing_ops(config: SegmentConfig, raw_dtype: np.dtype) -> list[dict[str, Any]]:
    """The run's intensity scaling (:func:`~cytolens.data.io.normalize_intensity`) as bioimage.io 0.5
    preprocessing, as plain ``{"id": ..., "kwargs": ...}`` dicts.

    ``percentile``: ``scale_range`` over ``y, x`` of each channel of each image with the config's percentiles,
    then ``clip`` to [0, 1]. bioimage.io divides by ``high - low + eps`` (``eps`` 1e-6) where cytolens divides by
    ``high - low``: a relative difference of ``eps / (high - low)``, below 1e-8 for 16-bit images. ``bit_depth``
    and ``dtype``: ``scale_linear`` by ``1 / (2**bit_depth - 1)`` or ``1 / max(raw_dtype)``, then ``clip``; a
    ``dtype`` run thus assumes every input has the training images' dtype (``raw_dtype``).

    Raises
    ------
    CytolensError
        If the scaling has no bioimage.io equivalent (a high percentile of 1 or less, a float ``dtype`` run).
    """
    intensity = config.intensity
    clip = {"id": "clip", "kwargs": {"min": 0.0, "max": 1.0}}
    if intensity.method == "percentile":
        low, high = (float(p) for p in intensity.percentiles)
        if high <= 1:
            raise CytolensError(f"bioimage.io's scale_range needs a high percentile above 1, the run has {high}")
        return [{"id": "scale_range", "kwargs": {"axes": ["y", "x"], "min_percentile": low,
                                                 "max_percentile": high, "eps": 1e-6}}, clip]
    if intensity.method == "bit_depth":
        assert intensity.bit_depth is not None  # the config requires it
        maximum = float(2**intensity.bit_depth - 1)
    else:
        if not np.issubdtype(raw_dtype, np.integer):
            raise CytolensError(f"intensity method 'dtype' needs integer images, the test image is {raw_dtype}")
        maximum = float(np.iinfo(raw_dtype).max)
    return [{"id": "scale_linear", "kwargs": {"gain": 1.0 / maximum, "offset": 0.0}}, clip]


def square_test_crop(shape: tuple[int, ...], *, tile: int, multiple: int, size: int = DEFAULT_CROP
              ) -> tuple[int, int, int]:
    """``(y, x, side)`` of the centred square test crop of an image of ``shape`` ``(H, W[, C])``.

    The side is at most ``size``, the run's inference ``tile`` and the image, rounded down to the network's
    ``multiple``: one tile then covers the crop, so tiled prediction is a single forward pass on it.

    Raises
    ------
    CytolensError
        If the image is smaller than ``multiple`` on a side.
    """
    height, width = shape[:2]
    side = min(size, tile, height, width) // multiple * multiple
    if side < multiple:
        raise CytolensError(f"is {height}×{width} px; the test crop needs at least {multiple}×{multiple} "
                            f"(the network's input multiple)")
    return (height - side) // 2, (width - side) // 2, side


def _default_test_image(run: SegmentRun) -> Path:
    """The first validation image of the lowest finished fold (a training image of the run, never seen by it)."""
    record = min(run.folds, key=lambda r: r["fold"])
    stems = record.get("val_images") or list(run.manifest["stem"])
    rows = run.manifest[run.manifest["stem"] == stems[0]]
    path = Path(str(rows["path"].iloc[0])) if len(rows) else Path(stems[0])
    if not path.is_file():
        raise CytolensError("the run's image for the test input is gone; pass a bright-field image as test_image "
                            "(--test-image)", path=path)
    return path


def _model_text(run: SegmentRun, which: str) -> tuple[list[int], str]:
    if which == "best_fold":
        record = max(run.folds, key=lambda r: r["best_val_mean_dice"])
        return [record["fold"]], (f"fold {record['fold']} (best validation mean dice "
                                  f"{record['best_val_mean_dice']:.4f})")
    folds = [r["fold"] for r in run.folds]
    if len(folds) == 1:
        return folds, f"fold {folds[0]} (the run's only trained fold)"
    return folds, f"ensemble of folds {', '.join(map(str, folds))} (mean of their softmax probabilities)"


def _network(run: SegmentRun, folds: list[int]) -> ProbabilityNetwork:
    from cytolens.segment.inference import fold_batch_norm
    from cytolens.segment.predict import load_models

    members = [fold_batch_norm(m).float() for m in load_models(run, folds, torch.device("cpu"))]
    return ProbabilityNetwork(members).eval()


def _trace(network: ProbabilityNetwork, example: torch.Tensor, multiple: int) -> torch.jit.ScriptModule:
    """TorchScript of ``network`` traced on ``example``, checked against it on a second, non-square size."""
    with torch.no_grad(), warnings.catch_warnings():
        # The input-size checks run once at trace time (Python conditions); sizes stay symbolic otherwise.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # torch 2.13 deprecates TorchScript for torch.export, but bioimage.io's consumers (deepImageJ and
        # QuPath through the Deep Java Library, ilastik and napari through bioimageio.core) load TorchScript.
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(network, example, check_trace=False)
        other = torch.nn.functional.pad(example, (0, multiple, 0, 0), mode="reflect") \
            if example.shape[-1] > multiple else example.repeat(1, 1, 1, 2)
        expected, got = network(other), traced(other)
    if expected.shape != got.shape or not torch.allclose(expected, got, atol=1e-5):
        raise CytolensError(f"the traced network does not generalise to other input sizes (it differs on "
                            f"{tuple(other.shape)}); this model cannot be exported as TorchScript")
    return traced


def _cover(normalised: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """RGB ``(s, 2s, 3)`` uint8: the normalised input (first channel) beside its predicted classes, at least 256
    px high (nearest-neighbour enlarged), 2:1 as bioimage.io recommends."""
    from cytolens.segment.outputs import DEFAULT_CLASS_COLORS

    gray = np.round(np.clip(normalised, 0, 1) * 255).astype(np.uint8)
    left = np.repeat(gray[..., None], 3, axis=2)
    right = np.zeros_like(left)
    for k in range(int(labels.max()) + 1):
        color = DEFAULT_CLASS_COLORS[k % len(DEFAULT_CLASS_COLORS)] or (0, 0, 0)
        right[labels == k] = color
    cover = np.concatenate([left, right], axis=1)
    factor = -(-256 // cover.shape[0])
    return np.repeat(np.repeat(cover, factor, axis=0), factor, axis=1) if factor > 1 else cover


def _safe_name(text: str) -> str:
    """``text`` in bioimage.io's name alphabet (letters, digits, ``_+- ()``), 5 to 64 characters."""
    name = re.sub(r"[^A-Za-z0-9_+\- ()]+", "-", text).strip("- ")
    return (name or "cytolens segmentation")[:64].ljust(5, "_")


def _cytolens_version() -> str:
    try:
        return importlib.metadata.version("cytolens")
    except importlib.metadata.PackageNotFoundError:  # a source checkout that is not installed
        return "unknown"


def export_bioimageio(
    run: str | Path,
    out: str | Path,
    *,
    final_model: str | None = None,
    test_image: str | Path | None = None,
    crop_size: int = DEFAULT_CROP,
    authors: Sequence[str] = (),
    name: str | None = None,
) -> ExportedModel:
    """Write a trained segmentation run as a bioimage.io model package (format 0.5, TorchScript weights).

    Parameters
    ----------
    run : str or Path
        A finished run folder written by ``cytolens segment train`` (``done.json`` present).
    out : str or Path
        The package to write; must end in ``.zip``. Written atomically (replaced if it exists).
    final_model : {"ensemble", "best_fold"}, optional
        Which network to export; default the run config's ``final_model``.
    test_image : str or Path, optional
        Bright-field image whose centred square crop becomes the test input; default the first validation
        image of the run's lowest finished fold.
    crop_size : int, default 256
        Largest side of the test crop (also limited by the run's inference tile and the image).
    authors : sequence of str, optional
        Names for the description's ``authors`` (who trained the model); default ``["cytolens"]``.
    name : str, optional
        The model's name; default derived from the run's config name and architecture.

    Returns
    -------
    ExportedModel
        The package path, the final model in words, the test image and crop, seconds taken and size in bytes.

    Raises
    ------
    OptionError
        If ``out`` does not end in ``.zip``, ``final_model`` is unknown or ``crop_size`` is not positive.
    CytolensError
        If ``run`` is not a finished segmentation run, the test image is missing or too small, bioimageio.spec
        is not installed, or the package does not validate.
    """
    import tifffile

    from cytolens.data.io import normalize_intensity, read_image, write_png
    from cytolens.engine import load_run
    from cytolens.segment.models import create_model

    started = time.perf_counter()
    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise OptionError(f"`out` must be a .zip file (a bioimage.io package), got {str(out)!r}")
    if isinstance(crop_size, bool) or not isinstance(crop_size, int) or crop_size < 1:
        raise OptionError(f"`crop_size` must be a positive integer, got {crop_size!r}")
    if final_model is not None:
        check_choice("final_model", final_model, ("ensemble", "best_fold"))
    try:
        import bioimageio.spec  # noqa: F401  # the optional dependency, checked before any work
    except ImportError:
        raise CytolensError("bioimage.io export needs the `export` extra (bioimageio.spec): "
                            "pip install 'cytolens[export]'") from None
    load_run(run, "segment", SegmentConfig, require_done=True)
    loaded = load_segment_run(run)
    config = loaded.config
    which = final_model or config.final_model
    folds, model_text = _model_text(loaded, which)
    # The network's size rule, from a fresh instance (the checkpoints hold only weights).
    multiple = int(create_model(config.model, num_classes=len(config.classes), in_chans=config.in_chans,
                                **config.model_options).input_multiple)

    image_path = Path(test_image) if test_image is not None else _default_test_image(loaded)
    raw = read_image(image_path, grayscale=config.in_chans == 1)
    channels = 1 if raw.ndim == 2 else raw.shape[2]
    if channels != config.in_chans:
        raise CytolensError(f"has {channels} channel(s); the run expects in_chans={config.in_chans}", path=image_path)
    try:
        y, x, side = square_test_crop(raw.shape, tile=config.inference.tile, multiple=multiple, size=crop_size)
    except CytolensError as exc:
        raise CytolensError(exc.message, path=image_path) from None
    crop = raw[y : y + side, x : x + side]
    intensity = config.intensity
    normalised = normalize_intensity(crop, method=intensity.method, bit_depth=intensity.bit_depth,
                                     percentiles=tuple(intensity.percentiles))
    preprocessing = preprocessing_ops(config, crop.dtype)

    network = _network(loaded, folds)
    as_tensor = (normalised if normalised.ndim == 3 else normalised[..., None]).transpose(2, 0, 1)[None]
    example = torch.from_numpy(np.ascontiguousarray(as_tensor, dtype=np.float32))
    traced = _trace(network, example, multiple)
    with torch.no_grad():
        probabilities = traced(example).numpy().astype(np.float32)
    test_input = np.ascontiguousarray(
        (crop if crop.ndim == 3 else crop[..., None]).transpose(2, 0, 1)[None], dtype=np.float32)

    halo = config.inference.overlap // 2
    minimum = max(multiple, _round_up(2 * halo + 1, multiple))
    with tempfile.TemporaryDirectory(prefix="cytolens-bioimageio-") as folder:
        work = Path(folder)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # see _trace
            torch.jit.save(traced, str(work / "weights.pt"))
        np.save(work / "test_input.npy", test_input)
        np.save(work / "test_output.npy", probabilities)
        write_png(work / "cover.png", _cover(normalised if normalised.ndim == 2 else normalised[..., 0],
                                             probabilities[0].argmax(axis=0)))
        (work / "README.md").write_text(package_readme(
            loaded, model_text=model_text, folds=folds, preprocessing=preprocessing, test_image=image_path,
            crop=(y, x, side), halo=halo, multiple=multiple, minimum=minimum), encoding="utf-8")
        (work / "config.yaml").write_bytes((loaded.path / "config.yaml").read_bytes())
        # Sample tensors for people (imageio-readable): the raw crop as stored, the probabilities (K, h, w).
        tifffile.imwrite(work / "sample_input.tif", crop if crop.ndim == 2 else crop.transpose(2, 0, 1),
                         photometric="minisblack")
        tifffile.imwrite(work / "sample_output.tif", probabilities[0], photometric="minisblack")
        description = _describe(loaded, work, model_text=model_text, preprocessing=preprocessing, halo=halo,
                                multiple=multiple, minimum=minimum, authors=authors, name=name)
        _save_package(description, out)
    return ExportedModel(out, model_text, image_path, (y, x, side, side), time.perf_counter() - started,
                         out.stat().st_size)


def _describe(run: SegmentRun, work: Path, *, model_text: str, preprocessing: list[dict[str, Any]], halo: int,
              multiple: int, minimum: int, authors: Sequence[str], name: str | None) -> Any:
    """The :class:`bioimageio.spec.model.v0_5.ModelDescr` of the files in ``work``."""
    from bioimageio.spec import ValidationContext
    from bioimageio.spec.model import v0_5 as spec

    config = run.config
    input_id, output_id = spec.TensorId("input"), spec.TensorId("output")
    channel_names = ["brightfield"] if config.in_chans == 1 else [f"channel{i}" for i in range(config.in_chans)]
    space = [spec.SpaceInputAxis(id=spec.AxisId(a), size=spec.ParameterizedSize(min=minimum, step=multiple))
             for a in ("y", "x")]
    ops = {"scale_range": (spec.ScaleRangeDescr, spec.ScaleRangeKwargs),
           "scale_linear": (spec.ScaleLinearDescr, spec.ScaleLinearKwargs),
           "clip": (spec.ClipDescr, spec.ClipKwargs)}
    inputs = spec.InputTensorDescr(
        id=input_id,
        description=f"bright-field image, raw intensities ({config.intensity.method} scaling in preprocessing)",
        axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=channel_names), *space],
        test_tensor=spec.FileDescr(source=work / "test_input.npy"),
        sample_tensor=spec.FileDescr(source=work / "sample_input.tif"),
        data=spec.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[ops[op["id"]][0](kwargs=ops[op["id"]][1](**op["kwargs"])) for op in preprocessing],
    )
    outputs = spec.OutputTensorDescr(
        id=output_id,
        description=f"class probabilities ({', '.join(config.classes)}), summing to 1 per pixel",
        axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=list(config.classes)),
              *[spec.SpaceOutputAxisWithHalo(id=spec.AxisId(a), halo=halo,
                                             size=spec.SizeReference(tensor_id=input_id, axis_id=spec.AxisId(a)))
                for a in ("y", "x")]],
        test_tensor=spec.FileDescr(source=work / "test_output.npy"),
        sample_tensor=spec.FileDescr(source=work / "sample_output.tif"),
        data=spec.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
    )
    cite = [spec.CiteEntry(text=MIDL2019_CITATION, url=MIDL2019_URL)]
    if config.model in ARCHITECTURE_CITATIONS:
        text, doi = ARCHITECTURE_CITATIONS[config.model]
        cite.append(spec.CiteEntry(text=text, doi=spec.Doi(doi)))
    tags = ["cytolens", "semantic-segmentation", "bright-field", "label-free", "nuclei", "cytoplasm", "2d",
            "pytorch", "torchscript", config.model]
    summary = (f"{config.model} predicting {', '.join(config.classes)} probabilities from {config.in_chans}-channel "
               f"bright-field images; {model_text}; trained by cytolens (config {config.name}).")
    with _offline_context(ValidationContext):
        return spec.ModelDescr(
            name=_safe_name(name or f"cytolens {config.name} {config.model}"),
            description=summary[:1024],
            authors=[spec.Author(name=a) for a in (authors or ["cytolens"])],
            cite=cite,
            license=spec.LicenseId("BSD-3-Clause"),
            tags=tags,
            covers=[spec.FileDescr(source=work / "cover.png")],
            documentation=spec.FileDescr(source=work / "README.md"),
            attachments=[spec.FileDescr(source=work / "config.yaml")],
            inputs=[inputs],
            outputs=[outputs],
            weights=spec.WeightsDescr(torchscript=spec.TorchscriptWeightsDescr(
                source=work / "weights.pt", pytorch_version=spec.Version(torch.__version__.split("+")[0]))),
            config=spec.Config(**{"cytolens": {"version": _cytolens_version(), "run": run.path.name,
                                               "final_model": model_text, "classes": list(config.classes)}}),
        )


def _offline_context(context_type: Any) -> Any:
    """A bioimageio.spec validation context that checks local files but resolves no web address."""
    return context_type(perform_io_checks=True, known_files={MIDL2019_URL: None})


def _save_package(description: Any, out: Path) -> None:
    from bioimageio.spec import ValidationContext, save_bioimageio_package

    with atomic_path(out) as tmp, _offline_context(ValidationContext), warnings.catch_warnings():
        # bioimageio.spec's scan for files of the already-packaged description warns about every relative
        # file name it meets (it resolves none of them there); the package it writes is complete regardless.
        warnings.filterwarnings("ignore", message="Found mapping with 'source'", category=UserWarning)
        try:
            save_bioimageio_package(description, output_path=tmp)
        except ValueError as exc:
            raise CytolensError(f"the bioimage.io package does not validate: {str(exc).splitlines()[0]}",
                                path=out) from exc
