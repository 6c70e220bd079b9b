"""``cytolens classify ...`` commands: train (the paper's protocol), predict, search, report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cytolens.core.console import console, progress_bar, warning_line
from cytolens.cli.options import (
    AcceleratorOption,
    ClassesOption,
    ConfigOption,
    DeterministicOption,
    DevicesOption,
    ForceOption,
    NumNodesOption,
    PrecisionOption,
    RunFolderOption,
    SeedOption,
    TaskOption,
    TtaOption,
    engine_options,
)

app = typer.Typer(help="Classify single cells (Shpilman et al. 2017) on any class-folder dataset.", no_args_is_help=True)



def _load(config: Path, seed: int | None):  # noqa: ANN202 - ClassifyConfig
    from cytolens.classify.config import ClassifyConfig
    from cytolens.core.config import load_config

    return load_config(config, ClassifyConfig, seed=seed)


def _classes(classes: str | None) -> list[str] | None:
    from cytolens.data.layouts import parse_class_list

    return parse_class_list(classes) if classes else None


@app.command("train")
def train(
    data: Annotated[Path, typer.Argument(help="Dataset: DATA/<class>/*.tif, or DATA/train/<class>/ and DATA/test/<class>/.")],
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
    """Run the paper's protocol: held-out test set, grouped 10-fold CV, four tasks × three variants, XGBoost.

    With --devices N the (task, variant, fold) units are dealt over N processes, each trained by one of them.
    """
    from cytolens.classify.training import run_protocol

    settings = _load(config, seed)
    options = engine_options(devices=devices, num_nodes=num_nodes, precision=precision,
                             config_precision=settings.precision, accelerator=accelerator,
                             deterministic=deterministic)
    if force:
        from cytolens.classify.training import RUN_KIND
        from cytolens.engine import RunFolder

        RunFolder(out, RUN_KIND).discard()
    run = run_protocol(data, settings, out, options, classes=_classes(classes))
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
    out: Annotated[
        Path, typer.Option("--out", help="Folder for predictions.csv (path, predicted, p_<class>).")
    ] = Path("predictions"),
    task: TaskOption = "all",
    tta: TtaOption = None,
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
    if out.suffix.lower() == ".csv":  # cytolens 0.2 wrote the CSV itself at --out
        warning_line(f"--out {out}: a CSV file is deprecated and will be refused in the next release; --out is the "
                     "folder for predictions.csv")
        destination = out
    else:
        destination = out / "predictions.csv"
    write_text_atomic(destination, result.table.to_csv(index=False))
    console.print(f"wrote {len(result.table)} predictions to {destination}", markup=False)
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
    classes: ClassesOption = None,
) -> None:
    """Choose a topology from the paper's search space by cross-validation on the training images."""
    from cytolens.classify.search import run_search

    ranked = run_search(data, _load(config, None), out, trials=trials, folds=folds, max_mflops=max_mflops,
                        classes=_classes(classes))
    typer.echo(ranked[["trial", "topology", "cv_accuracy", "cv_accuracy_sd", "parameters", "mflops"]].to_string(index=False))
    console.print(f"best topology written to {out / 'best_topology.yaml'}")
