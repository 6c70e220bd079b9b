"""``cytolens segment ...`` commands (MIDL 2019): label derivation, training, prediction, evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cytolens.core.console import console, progress_bar, warning_line
from cytolens.cli.options import (
    AcceleratorOption, ClassesOption, ConfigOption, DeterministicOption, DevicesOption, ForceOption, NumNodesOption,
    PrecisionOption, RunFolderOption, SeedOption, TtaOption, engine_options,
)

app = typer.Typer(
    help="Predict nuclei and cytoplasm from bright-field images (MIDL 2019).", no_args_is_help=True
)


@app.command("labels")
def labels(
    root: Annotated[Path, typer.Argument(help="Folder with dapi/ and cellstain/ (same file stems).")],
    method: Annotated[str, typer.Option("--method", help="Pixel classifier: otsu or gmm.")] = "otsu",
) -> None:
    """Derive background / nucleus / cytoplasm label images from the two fluorescence channels into ROOT/labels/.

    Where ROOT/truth/ exists (simulated data), the agreement with the truth is reported.
    """
    from cytolens.core.errors import check_choice
    from cytolens.segment.labels import CLASS_NAMES, LABEL_METHODS, derive_label_folder, fluorescence_pairs

    check_choice("method", method, LABEL_METHODS)
    with progress_bar("deriving labels", len(fluorescence_pairs(root))) as advance:
        table = derive_label_folder(root, method=method, progress=advance)
    console.print(f"wrote {len(table)} label images to {root / 'labels'}")
    fractions = ", ".join(f"{name} {table[f'fraction_{name}'].mean():.1%}" for name in CLASS_NAMES)
    typer.echo(f"mean class fractions: {fractions}")
    if "mean_dice" in table and table["mean_dice"].notna().any():
        typer.echo(
            f"agreement with truth/ over {int(table['mean_dice'].notna().sum())} images: pixel accuracy "
            f"{table['pixel_accuracy'].mean():.3f}, dice background {table['dice_background'].mean():.3f}, "
            f"nucleus {table['dice_nucleus'].mean():.3f}, cytoplasm {table['dice_cytoplasm'].mean():.3f}, "
            f"mean {table['mean_dice'].mean():.3f}"
        )


@app.command("train")
def train(
    data: Annotated[Path, typer.Argument(help="Dataset: DATA/images/ (or brightfield/) + DATA/labels/, same stems.")],
    config: ConfigOption,
    out: RunFolderOption,
    classes: ClassesOption = None,
    seed: SeedOption = None,
    force: ForceOption = False,
    devices: DevicesOption = 1,
    num_nodes: NumNodesOption = 1,
    precision: PrecisionOption = None,
    accelerator: AcceleratorOption = "auto",
    deterministic: DeterministicOption = False,
) -> None:
    """Train with the paper's protocol: class-balanced patches, augmentations, image-level K-fold CV.

    Folds train one after another, each over all --devices processes (every batch split between them).
    """
    from cytolens.core.config import load_config
    from cytolens.data.layouts import parse_class_list
    from cytolens.segment.config import SegmentConfig
    from cytolens.segment.evaluate import table1, table1_markdown
    from cytolens.segment.predict import load_segment_run
    from cytolens.segment.training import run_training

    settings = load_config(config, SegmentConfig, classes=parse_class_list(classes) if classes else None, seed=seed)
    options = engine_options(devices=devices, num_nodes=num_nodes, precision=precision,
                             config_precision=settings.precision, accelerator=accelerator,
                             deterministic=deterministic)
    if force:
        from cytolens.engine import RunFolder

        RunFolder(out, "segment").discard()
    run = run_training(data, settings, out, options)
    console.print(f"run folder {run} (run.json, config.yaml, manifest.parquet, folds/, checkpoints/)", markup=False)
    loaded = load_segment_run(run)
    typer.echo(table1_markdown(table1(loaded), loaded))


@app.command("predict")
def predict(
    run: Annotated[Path, typer.Argument(help="A run folder written by 'cytolens segment train'.")],
    images: Annotated[Path, typer.Argument(help="An image, a folder of images, or a dataset root with images/.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder for <stem>.tif, <stem>_overlay.png, ...")],
    tta: TtaOption = None,
    probabilities: Annotated[bool, typer.Option("--prob", help="Also write the probabilities (<stem>_prob.tif, or "
                                                               "<stem>_prob.ome.zarr with --format ome-zarr).")
                             ] = False,
    cells: Annotated[bool, typer.Option("--cells", help="Also write cell ids (<stem>_cells.tif, or labels/cells in "
                                                        "the OME-Zarr) and cells.csv.")] = False,
    output_format: Annotated[
        str,
        typer.Option("--format", help="tiff: <stem>.tif label images; ome-zarr: <stem>.ome.zarr (NGFF 0.5) with the "
                                      "image, labels/classes and labels/cells, multiscale, scaled in µm."),
    ] = "tiff",
    final_model: Annotated[
        str | None,
        typer.Option("--final-model", help="ensemble (of the fold models) or best_fold; default: the run's config."),
    ] = None,
    pixel_size: Annotated[
        float | None,
        typer.Option("--pixel-size", min=0.0, help="Pixel size in µm for µm² areas in cells.csv and the OME-Zarr "
                                                   "scale (default: read from each file's OME or ImageJ metadata; "
                                                   "this overrides it)."),
    ] = None,
    devices: DevicesOption = 1,
    num_nodes: NumNodesOption = 1,
    precision: PrecisionOption = None,
    accelerator: AcceleratorOption = "auto",
) -> None:
    """Segment whole images of any size (tiled, bounded memory); unreadable files are listed, exit status 1.

    With --devices N the images are shared out among N processes; the output equals a single process's.
    """
    from cytolens.core.errors import check_choice
    from cytolens.segment.predict import OUTPUT_FORMATS, find_input_images, load_segment_run, predict_images

    if final_model is not None:
        check_choice("--final-model", final_model, ("ensemble", "best_fold"))
    check_choice("--format", output_format, OUTPUT_FORMATS)
    loaded = load_segment_run(run)  # a wrong run folder is the first thing to report
    options = engine_options(devices=devices, num_nodes=num_nodes, precision=precision,
                             config_precision=loaded.config.precision, accelerator=accelerator)
    with progress_bar("segmenting", len(find_input_images(images))) as advance:
        result = predict_images(
            run, images, out, tta=tta, probabilities=probabilities, cells=cells, which=final_model,
            pixel_size_um=pixel_size, output_format=output_format, progress=advance, options=options,
        )
    console.print(f"segmented {len(result.table)} images into {out} with {result.model}", markup=False)
    if result.cells is not None:
        console.print(f"{len(result.cells)} cells measured in {out / 'cells.csv'}", markup=False)
    for path, problem in result.problems:
        console.print(f"skipped {path}: {problem}", markup=False)
    if result.problems:
        raise typer.Exit(1)


@app.command("evaluate")
def evaluate(
    run: Annotated[Path, typer.Argument(help="A run folder written by 'cytolens segment train'.")],
    data: Annotated[Path, typer.Argument(help="Labelled data: DATA/images/ (or brightfield/) + DATA/labels/.")],
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default RUN/evaluation).")] = None,
    tta: TtaOption = None,
) -> None:
    """Dice per class and mean, IoU, pixel accuracy, confusion matrix, per-image table, and Table 1.

    Training images are scored only out-of-fold (by the model that did not train on them); new images by the
    run's final model.
    """
    from cytolens.data.label_pairs import scan_image_label_pairs
    from cytolens.segment.evaluate import evaluate_run
    from cytolens.segment.predict import load_segment_run

    loaded = load_segment_run(run)  # a wrong run folder is the first thing to report
    total = len(scan_image_label_pairs(data, classes=loaded.config.classes).samples)

    with progress_bar("evaluating", total) as advance:
        summary = evaluate_run(run, data, out=out, tta=tta, progress=advance)
    destination = out if out is not None else run / "evaluation"
    classes = summary["classes"]
    typer.echo(f"{summary['images']} images scored; {summary['mode']}")
    if summary["skipped"]:
        typer.echo(f"{len(summary['skipped'])} images skipped: {summary['skipped_reason']}")
    typer.echo("dice: " + ", ".join(f"{c} {summary['dice'][c]:.4f}" for c in classes)
               + f"; mean dice {summary['mean_dice']:.4f}")
    typer.echo("IoU: " + ", ".join(f"{c} {summary['iou'][c]:.4f}" for c in classes)
               + f"; mean IoU {summary['mean_iou']:.4f}; pixel accuracy {summary['pixel_accuracy']:.4f}")
    typer.echo(f"definition: {summary['definition']}")
    typer.echo((destination / "table1.md").read_text(encoding="utf-8"))


@app.command("curves")
def curves(
    runs: Annotated[list[Path], typer.Argument(help="Run folders written by 'cytolens segment train'.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for curves.png and curves.csv.")],
    labels: Annotated[
        str | None, typer.Option("--labels", help="Comma-separated names for the runs (default: folder names).")
    ] = None,
) -> None:
    """Training loss and validation mean dice of several runs against the number of training patches seen."""
    from cytolens.core.errors import OptionError
    from cytolens.segment.curves import plot_training_curves, training_curves

    names = [name.strip() for name in labels.split(",")] if labels else [run.name for run in runs]
    if len(names) != len(runs):
        raise OptionError(f"--labels names {len(names)} runs but {len(runs)} run folders were given")
    if out.suffix.lower() == ".png":  # cytolens 0.2 took the PNG's path and wrote the CSV beside it
        warning_line(f"--out {out}: a PNG file is deprecated and will be refused in the next release; --out is the "
                     "folder for curves.png and curves.csv")
        figure = out
    else:
        figure = out / "curves.png"
    table = training_curves(dict(zip(names, runs, strict=True)))
    plot_training_curves(table, figure)
    best = table.dropna(subset=["val_mean_dice"]).groupby("run", sort=False)["val_mean_dice"].max()
    for name, value in best.items():
        typer.echo(f"{name}: best validation mean dice {value:.4f}")
    console.print(f"wrote {figure} and {figure.with_suffix('.csv')}", markup=False)


@app.command("export")
def export(
    run: Annotated[Path, typer.Argument(help="A finished run folder written by 'cytolens segment train'.")],
    out: Annotated[Path, typer.Option("--out", help="The bioimage.io model package to write, MODEL.zip.")],
    final_model: Annotated[
        str | None,
        typer.Option("--final-model", help="ensemble (of the fold models) or best_fold; default: the run's config."),
    ] = None,
    test_image: Annotated[
        Path | None,
        typer.Option("--test-image", help="Image whose centre crop is the package's test input (default: the "
                                          "first validation image of the run)."),
    ] = None,
    crop: Annotated[int, typer.Option("--crop", min=4, help="Side of the test crop in pixels (at most).")] = 256,
    author: Annotated[
        list[str] | None, typer.Option("--author", help="An author of the package (repeat for several).")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="The model's name (default: from the run).")] = None,
) -> None:
    """Write a trained run as a bioimage.io model package (deepImageJ, ilastik, QuPath, napari)."""
    from cytolens.segment.export import export_bioimageio

    exported = export_bioimageio(run, out, final_model=final_model, test_image=test_image, crop_size=crop,
                                 authors=tuple(author or ()), name=name)
    typer.echo(f"wrote {exported.path} ({exported.size_bytes / 1e6:.1f} MB, {exported.model}; test input: "
               f"{exported.test_image}) in {exported.seconds:.1f} s")
