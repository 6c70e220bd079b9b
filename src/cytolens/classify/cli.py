"""``cytolens classify ...`` commands: train (the paper's protocol), predict, search, report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cytolens.core.console import console, progress_bar
from cytolens.cli.options import (
    AcceleratorOption,
    DeterministicOption,
    DevicesOption,
    ForceOption,
    NumNodesOption,
    PrecisionOption,
    SeedOption,
    engine_options,
)

app = typer.Typer(help="Classify single cells (Shpilman et al. 2017) on any class-folder dataset.", no_args_is_help=True)

ConfigOption = Annotated[
    Path, typer.Option("--config", help="Experiment config: a YAML file, or a shipped name such as shpilman2017-quick.")
]


def _load(config: Path, classes: str | None, seed: int | None):  # noqa: ANN202 - ClassifyConfig
    from cytolens.classify.config import ClassifyConfig
    from cytolens.core.config import load_config
    from cytolens.data.layouts import parse_class_list

    return load_config(config, ClassifyConfig, classes=parse_class_list(classes) if classes else None, seed=seed)


@app.command("train")
def train(
    data: Annotated[Path, typer.Argument(help="Dataset: DATA/<class>/*.tif, or DATA/train/<class>/ and DATA/test/<class>/.")],
    config: ConfigOption,
    out: Annotated[Path, typer.Option("--out", help="Run folder (resumed if it exists with the same config).")],
    classes: Annotated[str | None, typer.Option("--classes", help="Class names in label order, e.g. 0,0.1,1.")] = None,
    seed: SeedOption = None,
    force: ForceOption = False,
    devices: DevicesOption = 1,
    num_nodes: NumNodesOption = 1,
    precision: PrecisionOption = None,
    accelerator: AcceleratorOption = "auto",
    deterministic: DeterministicOption = False,
) -> None:
    """Run the paper's protocol: held-out test set, grouped 10-fold CV, four tasks × three variants, XGBoost.

    With --devices N the (task, variant, fold) units are dealt over N processes, each trained by one of them.
    """
    from cytolens.classify.training import run_protocol

    settings = _load(config, classes, seed)
    options = engine_options(devices=devices, num_nodes=num_nodes, precision=precision,
                             config_precision=settings.precision, accelerator=accelerator,
                             deterministic=deterministic)
    if force:
        from cytolens.classify.training import RUN_KIND
        from cytolens.engine import RunFolder

        RunFolder(out, RUN_KIND).discard()
    run = run_protocol(data, settings, out, options)
    console.print(f"results in {run} (table_iv.md, metrics.json, predictions.csv, figures/)")
    typer.echo((run / "table_iv.md").read_text(encoding="utf-8"))


@app.command("report")
def report(run: Annotated[Path, typer.Argument(help="A run folder.")]) -> None:
    """Rebuild the tables, statistics and figures of a run from its saved outputs (no training)."""
    from cytolens.classify.evaluate import write_results

    write_results(run)
    typer.echo((run / "table_iv.md").read_text(encoding="utf-8"))


@app.command("predict")
def predict(
    run: Annotated[Path, typer.Argument(help="A run folder written by 'cytolens classify train'.")],
    images: Annotated[Path, typer.Argument(help="An image or a folder of images (searched recursively).")],
    out: Annotated[Path, typer.Option("--out", help="CSV to write: path, predicted, p_<class>.")] = Path("predictions.csv"),
    task: Annotated[str | None, typer.Option("--task", help="A pairwise task such as '0 vs 1' (default: all classes).")] = None,
    tta: Annotated[bool | None, typer.Option("--tta/--no-tta", help="Average over the 8 rotations/flips.")] = None,
    devices: DevicesOption = 1,
) -> None:
    """Classify new images with a trained run; unreadable files are listed and the exit status is 1.

    With --devices N each process classifies a share of the images; the CSV is the one a single process writes.
    """
    from cytolens.core.atomic import write_text_atomic
    from cytolens.classify.predict import predict_images
    from cytolens.classify.evaluate import read_classify_run
    from cytolens.engine import EngineOptions
    from cytolens.data.io import find_image_files

    read_classify_run(run)  # a wrong run folder is the first thing to report
    total = len(find_image_files(images))
    with progress_bar("classifying", total) as advance:
        result = predict_images(run, images, task=task, tta=tta, progress=advance,
                                options=EngineOptions(devices=devices))
    write_text_atomic(out, result.table.to_csv(index=False))
    console.print(f"wrote {len(result.table)} predictions to {out}")
    for path, problem in result.problems:
        console.print(f"skipped {path}: {problem}", markup=False)
    if result.problems:
        raise typer.Exit(1)


@app.command("search")
def search(
    data: Annotated[Path, typer.Argument(help="The dataset folder.")],
    config: ConfigOption,
    out: Annotated[Path, typer.Option("--out", help="Folder for search.csv and best_topology.yaml.")],
    trials: Annotated[int, typer.Option("--trials", min=1, help="Topologies to try (the paper's is the first).")] = 10,
    folds: Annotated[int, typer.Option("--folds", min=2, help="Cross-validation folds per topology.")] = 3,
    max_mflops: Annotated[
        float | None, typer.Option("--max-mflops", min=0.0, help="Compute budget: forward MFLOPs per image.")
    ] = None,
    classes: Annotated[str | None, typer.Option("--classes", help="Class names in label order.")] = None,
) -> None:
    """Choose a topology from the paper's search space by cross-validation on the training images."""
    from cytolens.classify.search import run_search

    ranked = run_search(data, _load(config, classes, None), out, trials=trials, folds=folds, max_mflops=max_mflops)
    typer.echo(ranked[["trial", "topology", "cv_accuracy", "cv_accuracy_sd", "parameters", "mflops"]].to_string(index=False))
    console.print(f"best topology written to {out / 'best_topology.yaml'}")
