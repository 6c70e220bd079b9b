"""The ``README.md`` of a bioimage.io package written by ``cytolens segment export``: what a deepImageJ, ilastik
or QuPath user reads before trusting the model on their images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cytolens.segment.config import SegmentConfig
from cytolens.segment.predict import SegmentRun

__all__ = ["package_readme"]


def package_readme(run: SegmentRun, *, model_text: str, folds: list[int], preprocessing: list[dict[str, Any]],
                   test_image: Path, crop: tuple[int, int, int], halo: int, multiple: int, minimum: int) -> str:
    """The package's ``README.md``: classes, input and preprocessing, the model, per-fold validation dice and the
    run's evaluation, the test crop, the training config and the limitations.

    Parameters
    ----------
    run : SegmentRun
        The exported run.
    model_text : str
        The final model, in words.
    folds : list of int
        The folds inside the exported module.
    preprocessing : list of dict
        The bioimage.io operations (:func:`~cytolens.segment.export.preprocessing_ops`).
    test_image : Path
        The image the test crop comes from.
    crop : (y, x, side)
        Where the test crop lies in it.
    halo, multiple, minimum : int
        The output's halo and the input's size step and minimum, in pixels.
    """
    config = run.config
    lines = [f"# {config.name}: {config.model} ({', '.join(config.classes)})", ""]
    if config.description:
        lines += [config.description.strip(), ""]
    lines += [
        "Semantic segmentation of bright-field microscopy images into "
        f"{', '.join(config.classes)}, trained with cytolens (`cytolens segment train`) following MIDL 2019, "
        "\"Semantic segmentation of cell nuclei and cytoplasms in microscopy images\".", "",
        "## Classes", "",
        "The output has one channel per class, in this order; each pixel's channels are probabilities that sum to "
        "1 (argmax = the label image `cytolens segment predict` writes).", "",
        *[f"{k}. `{name}`" for k, name in enumerate(config.classes, start=1)], "",
        "## Input", "",
        f"{config.in_chans} channel(s), raw intensities as float32, shape `(batch, channel, y, x)`; y and x of at "
        f"least {minimum} px in steps of {multiple} (the network down-samples by {multiple}). Preprocessing, "
        "applied by the consumer (bioimage.io operations):", "",
        *[f"- `{op['id']}` {json.dumps(op['kwargs'])}" for op in preprocessing], "",
        _preprocessing_note(config), "",
        "## Model", "",
        f"Architecture `{config.model}` (options {json.dumps(config.model_options)}); final model: {model_text}. "
        "The TorchScript module contains the softmax (and, for an ensemble, the averaging). cytolens predicts "
        f"whole images in {config.inference.tile}-px tiles overlapping by {config.inference.overlap} px with "
        f"blended seams{' and 8-fold test-time augmentation' if config.inference.tta else ''}; the output's halo "
        f"({halo} px) tells tiling consumers how much of each tile's border to discard.", "",
        "## Validation", "",
        "Image-level cross-validation of the run (validation images never trained on by their fold); mean dice "
        "over the classes at the best epoch:", "",
        "| fold | best epoch | validation mean dice | training images | validation images |",
        "|---|---|---|---|---|",
    ]
    for record in sorted(run.folds, key=lambda r: r["fold"]):
        lines.append(f"| {record['fold']}{' (exported)' if record['fold'] in folds else ''} | "
                     f"{record.get('best_epoch', '')} | {record['best_val_mean_dice']:.4f} | "
                     f"{len(record.get('train_images', []))} | {len(record.get('val_images', []))} |")
    done = run.path / "done.json"
    mean = json.loads(done.read_text(encoding="utf-8")).get("mean_best_val_mean_dice") if done.is_file() else None
    lines += ["", f"Mean over the trained folds: {mean:.4f}." if isinstance(mean, (int, float)) else "", ""]
    metrics_path = run.path / "evaluation" / "metrics.json"
    if metrics_path.is_file():
        try:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            metrics = {}
        scores = {f"dice {name}": value for name, value in (metrics.get("dice") or {}).items()}
        scores.update({key.replace("_", " "): metrics.get(key) for key in ("mean_dice", "mean_dice_foreground")})
        shown = ", ".join(f"{key} {value:.4f}" for key, value in scores.items() if isinstance(value, (int, float)))
        if shown:
            lines += [f"`cytolens segment evaluate` (pixels pooled over the images; {metrics.get('mode', '')}): "
                      f"{shown}.", ""]
    lines += [
        f"Test input: a {crop[2]}×{crop[2]} px crop of `{test_image.name}` at y={crop[0]}, x={crop[1]}; the test "
        "output is this model's probabilities on it and equals `cytolens segment predict --prob` on the same "
        "crop. To validate on your own data, compare the argmax with labels derived from fluorescence "
        "(`cytolens segment labels`, then `cytolens segment evaluate`).", "",
        "## Training configuration", "",
        "```yaml", (run.path / "config.yaml").read_text(encoding="utf-8").rstrip(), "```", "",
        "## Limitations", "",
        "- Trained on the images of one run (see the config's `deviations`); bright-field images from another "
        "microscope, magnification or cell line may need retraining.",
        "- Tiles that are much smaller than the training patches lose context; prefer large tiles.",
        "",
    ]
    return "\n".join(lines)


def _preprocessing_note(config: SegmentConfig) -> str:
    intensity = config.intensity
    if intensity.method == "percentile":
        low, high = intensity.percentiles
        return (f"This is cytolens' per-image percentile scaling ({low}–{high} %, per channel, clipped to [0, 1]); "
                "compute the percentiles over the whole image, not per tile, as cytolens does.")
    if intensity.method == "bit_depth":
        return f"This is cytolens' fixed scaling by the camera's bit depth ({intensity.bit_depth} bits)."
    return "This is cytolens' scaling by the maximum of the training images' integer type."
