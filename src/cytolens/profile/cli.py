"""``cytolens profile ...`` commands (CytoGAN 2017): crop cells, train GANs, embed, evaluate, explore."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cytolens.cli.options import (
    AcceleratorOption, ConfigOption, DeterministicOption, DevicesOption, ForceOption, NumNodesOption, PrecisionOption,
    RandomSeedOption, RunFolderOption, SeedOption, WorkersOption, engine_options,
)

app = typer.Typer(
    help="Morphological profiling of single cells with GANs and classical features (CytoGAN 2017).",
    no_args_is_help=True,
)

# Options that embed and aggregate share: both (re)aggregate single cells into wells and treatments.
NormalizationOption = Annotated[
    str,
    typer.Option("--normalization", help="DMSO normalisation per plate: standard (mean/std) or robust (median/MAD)."),
]
WhitenOption = Annotated[
    bool, typer.Option("--whiten/--no-whiten", help="Also write ZCA-whitened aggregations (fit on DMSO cells).")
]
FeatureSelectOption = Annotated[
    bool | None,
    typer.Option(
        "--feature-select/--no-feature-select",
        help="Drop near-constant, correlated (|r| > 0.9) and blocklisted features with pycytominer before "
        "aggregating (default: for classical features; needs pip install 'cytolens[eval]').",
    ),
]


def _report_selection(selection: dict | None) -> None:
    """One line on what feature selection did (or why it did nothing, when it was wanted)."""
    from cytolens.core.console import console

    if not selection or selection.get("tool") == "not requested":
        return
    if selection["applied"]:
        console.print(f"feature selection ({selection['tool']}): kept {selection['n_features_after']} of "
                      f"{selection['n_features_before']} features", markup=False)
    else:
        console.print(selection["tool"], markup=False)


@app.command("crop")
def crop(
    data: Annotated[
        Path, typer.Argument(help="A BBBC021-layout dataset (the real one, or 'cytolens synth cellpainting').")
    ],
    out: Annotated[Path, typer.Option("--out", help="Cell store folder to write (resumed if interrupted).")],
    crop_size: Annotated[int, typer.Option("--crop-size", min=8, help="Side of the square crops (CytoGAN: 96).")] = 96,
    normalization: Annotated[
        str,
        typer.Option(
            "--normalization",
            help="crop_max (CytoGAN: each crop channel by its maximum), plate_percentile, or illumination "
            "(per-plate illumination correction, then plate percentiles).",
        ),
    ] = "crop_max",
    mask_neighbors: Annotated[
        bool, typer.Option("--mask-neighbors/--keep-neighbors", help="Zero other cells' pixels in each crop.")
    ] = False,
    segmentation: Annotated[
        str, typer.Option("--segmentation", help="classical, or segment:RUN to use a trained 'cytolens segment' run.")
    ] = "classical",
    border: Annotated[
        str, typer.Option("--border", help="skip cells whose crop leaves the field (CytoGAN), or pad them with zeros.")
    ] = "skip",
    workers: WorkersOption = 1,
    devices: DevicesOption = 1,
    num_nodes: NumNodesOption = 1,
    accelerator: AcceleratorOption = "auto",
) -> None:
    """Segment nuclei and cells in every field and write one 96×96×3 crop per cell (R=DNA, G=tubulin, B=actin)."""
    from rich.table import Table

    from cytolens.data.bbbc021 import read_bbbc021
    from cytolens.core.console import console, progress_bar, stdout
    from cytolens.engine.runtime import external_launcher
    from cytolens.profile.crops.cell_store import CellStore
    from cytolens.profile.crops.crop import crop_dataset

    # Ranks share the plates (and replace --workers) only when asked for: one process needs no process group.
    ranked = devices > 1 or num_nodes > 1 or external_launcher() is not None
    options = engine_options(devices=devices, num_nodes=num_nodes, accelerator=accelerator) if ranked else None
    fields = len(read_bbbc021(data))
    with progress_bar("cropping cells", fields) as advance:
        path = crop_dataset(data, out, crop_size=crop_size, normalisation=normalization,
                            mask_neighbours=mask_neighbors, segmentation=segmentation, border=border,
                            workers=workers, progress=advance, options=options)
    store = CellStore(path)
    table = Table(title=f"cells per plate ({store.metadata['normalisation']}, border: {store.metadata['border']})",
                  title_justify="left")
    for column in ("plate", "fields", "cells", "skipped at border", "unreadable fields"):
        table.add_column(column, justify="left" if column == "plate" else "right")
    for plate, summary in store.metadata["plates"].items():
        table.add_row(plate, str(summary["fields"]), str(summary["cells"]), str(summary["skipped_border"]),
                      str(len(summary["problems"])))
    stdout.print(table)
    stdout.print(f"{len(store)} cells in {path} ({store.metadata['skipped_border']} skipped at field borders)",
                 markup=False)
    for problem in store.metadata["problems"]:
        console.print(f"unreadable: {problem['path']}: {problem['problem']}", markup=False)
    if store.metadata["problems"]:  # as 'data check': the cells are written, but some fields are missing
        raise typer.Exit(1)


@app.command("train")
def train(
    cells: Annotated[Path, typer.Argument(help="A cell store written by 'cytolens profile crop'.")],
    config: ConfigOption,
    out: RunFolderOption,
    steps: Annotated[
        int | None, typer.Option("--steps", min=1, help="Generator steps in total (overrides the config's epochs).")
    ] = None,
    seed: SeedOption = None,
    force: ForceOption = False,
    devices: DevicesOption = 1,
    num_nodes: NumNodesOption = 1,
    precision: PrecisionOption = None,
    accelerator: AcceleratorOption = "auto",
    deterministic: DeterministicOption = False,
) -> None:
    """Train a CytoGAN GAN (DCGAN, LSGAN or WGAN-GP): checkpoints, sample grids and loss curves in RUN."""
    import json

    from cytolens.core.config import load_config
    from cytolens.core.console import console, progress_bar
    from cytolens.profile.crops.cell_store import CellStore
    from cytolens.profile.gan.config import GanConfig
    from cytolens.profile.gan.training import train as train_gan

    settings = load_config(config, GanConfig, steps=steps, seed=seed)
    options = engine_options(devices=devices, num_nodes=num_nodes, precision=precision,
                             config_precision=settings.precision, accelerator=accelerator,
                             deterministic=deterministic)
    total = settings.total_steps(len(CellStore(cells)))
    if force:
        from cytolens.engine import RunFolder
        from cytolens.profile.gan.training import KIND

        RunFolder(out, KIND).discard()
    with progress_bar(f"training {settings.model}", total) as advance:
        run = train_gan(cells, settings, out, options=options, progress=advance)
    done = json.loads((run / "done.json").read_text(encoding="utf-8"))
    console.print(f"run folder {run} (config.yaml, checkpoints/, samples/, losses.csv, figures/)", markup=False)
    typer.echo(
        f"{done['gan']}: {done['steps']}/{done['steps_planned']} steps ({done['epochs']} epochs of {done['cells']} "
        f"cells), {done['seconds_per_step']} s/step, stopped by {done['stopped']}"
    )


@app.command("explore")
def explore(
    run: Annotated[Path, typer.Argument(help="A run folder written by 'cytolens profile train'.")],
    profiles: Annotated[
        Path | None,
        typer.Option("--profiles", help="Profiles folder (or its treatments.parquet) for the MOA map."),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default RUN/explore).")] = None,
    seed: RandomSeedOption = 0,
    pool: Annotated[int, typer.Option("--pool", min=20, help="Generated cells ranked per attribute.")] = 512,
) -> None:
    """Samples, linear and spherical interpolation, attribute vector algebra (measured), and a treatment map."""
    from cytolens.core.console import console
    from cytolens.profile.explore import explore_run

    summary = explore_run(run, out, profiles=profiles, seed=seed, pool=pool,
                          log=lambda message: console.print(message, markup=False))
    for name, result in summary["attributes"].items():
        learned, control = result["learned"], result["random_control"]
        typer.echo(
            f"{name}: along z_high - z_low Spearman rho {learned['pooled_spearman']:+.2f} "
            f"({learned['rows_increasing']:.0%} of strips increasing, {learned['change_per_unit_k']:+.4g} per unit k); "
            f"random direction {control['pooled_spearman']:+.2f}"
        )
    typer.echo(f"wrote {len(summary['files'])} files to {Path(next(iter(summary['files'].values()))).parent}")


@app.command("embed")
def embed(
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="[RUN] CELLS",
            help="A 'profile train' run folder and a cell store; or only the cell store with --features classical "
            "or --features random[:CONFIG]. 'classical' or 'random[:CONFIG]' may also stand in place of RUN.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Profiles folder to write (resumed if interrupted).")],
    features: Annotated[
        str | None,
        typer.Option(
            "--features",
            help="gan (the run's discriminator; default with a RUN), classical (CellProfiler-like features), random "
            "(the run's architecture, or cytogan-lsgan, with random weights: the control) or random:CONFIG.",
        ),
    ] = None,
    run: Annotated[
        Path | None, typer.Option("--run", help="The GAN run folder (instead of the first argument).")
    ] = None,
    normalization: NormalizationOption = "standard",
    whiten: WhitenOption = False,
    feature_select: FeatureSelectOption = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Cells per chunk.")] = 1024,
    seed: RandomSeedOption = 0,
    devices: DevicesOption = 1,
    num_nodes: NumNodesOption = 1,
    precision: PrecisionOption = None,
    accelerator: AcceleratorOption = "auto",
) -> None:
    """Embed every cell into PROFILES/single_cells.parquet, then aggregate wells.parquet and treatments.parquet.

    Treatments get both aggregations, marked by Metadata_Aggregation: 'cytogan' (mean of the cells) and
    'bbbc021' (per-plate DMSO normalisation, mean per well, median over replicate wells); with --whiten also
    'cytogan+whiten' and 'bbbc021+whiten'.
    """
    from cytolens.core.console import console, progress_bar
    from cytolens.core.errors import OptionError, check_choice
    from cytolens.profile.crops.cell_store import CellStore
    from cytolens.profile.embed import embed as embed_cells
    from cytolens.profile.dmso_normalisation import NORMALIZATIONS
    from cytolens.profile.profiles import write_profiles

    check_choice("normalization", normalization, NORMALIZATIONS)
    if len(inputs) not in (1, 2):
        raise OptionError(f"give [RUN] CELLS (one or two paths), got {len(inputs)} arguments")
    cells = Path(inputs[-1])
    if len(inputs) == 2:
        first = inputs[0]
        if first in ("classical", "random", "gan") or first.startswith("random:"):
            if features is not None and features != first:
                raise OptionError(f"the first argument says {first!r} but --features says {features!r}")
            features = first
        else:
            if run is not None:
                raise OptionError("give the run folder either as the first argument or as --run, not both")
            run = Path(first)
    # Profiles are compared across runs and machines: fp32 unless --precision asks otherwise.
    options = engine_options(devices=devices, num_nodes=num_nodes, precision=precision, config_precision="32-true",
                             accelerator=accelerator)
    with progress_bar("embedding cells", len(CellStore(cells))) as advance:
        path = embed_cells(cells, out, run=run, features=features, seed=seed, batch_size=batch_size,
                           progress=advance, options=options)
    paths = write_profiles(out, normalization=normalization, whiten=whiten, feature_select=feature_select)
    _report_selection(paths["feature_selection"])
    console.print(f"wrote {path}, {paths['wells']} and {paths['treatments']}", markup=False)
    typer.echo(f"next: cytolens profile evaluate {out}")


@app.command("aggregate")
def aggregate(
    profiles: Annotated[Path, typer.Argument(help="A profiles folder with single_cells.parquet.")],
    normalization: NormalizationOption = "standard",
    whiten: WhitenOption = False,
    feature_select: FeatureSelectOption = None,
) -> None:
    """Rewrite wells.parquet and treatments.parquet from single_cells.parquet with other settings."""
    from cytolens.core.console import console
    from cytolens.profile.profiles import write_profiles

    paths = write_profiles(profiles, normalization=normalization, whiten=whiten, feature_select=feature_select)
    _report_selection(paths["feature_selection"])
    console.print(f"wrote {paths['wells']} and {paths['treatments']}", markup=False)


@app.command("evaluate")
def evaluate(
    profiles: Annotated[
        list[Path], typer.Argument(help="One or more profiles folders (e.g. DCGAN, LSGAN, WGAN, classical, random).")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default PROFILES/evaluation for one folder).")
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option("--labels", help="Comma-separated names of the folders, in order (default from profile.json)."),
    ] = None,
    compute_map: Annotated[
        bool | None,
        typer.Option(
            "--map/--no-map",
            help="mAP of phenotypic activity (replicate wells vs DMSO) and consistency (same MOA, other compounds) "
            "with permutation p-values, BH q-values and the fraction retrieved (map.md), and the mean AP column "
            "of moa_accuracy. Default: when copairs is installed (pip install 'cytolens[eval]'); --map without "
            "it is an error.",
        ),
    ] = None,
    null_size: Annotated[
        int, typer.Option("--null-size", min=1, help="Random rankings drawn for each mAP p-value's null.")
    ] = 10000,
    seed: RandomSeedOption = 0,
) -> None:
    """NSC and NSCB 1-NN cosine MOA accuracy (over treatments, and CytoGAN's per-compound mean), confusion
    matrices, CytoGAN's Table 1 with the paper's numbers beside ours, and JUMP-style mAP with p-values."""
    from cytolens.core.console import console
    from cytolens.profile.evaluate import write_evaluation

    if out is None and len(profiles) > 1:
        from cytolens.core.errors import OptionError

        raise OptionError("give --out when evaluating several profiles folders")
    result = write_evaluation(
        profiles, out, labels=[label.strip() for label in labels.split(",")] if labels else None,
        average_precision=compute_map is not False, retrieval=compute_map, null_size=null_size,
        seed=seed,
    )
    table = result["accuracy"]
    width = max(len(str(label)) for label in table["profiles"])
    shows_ap = compute_map is not False
    typer.echo(
        f"{'profiles':<{width}}  {'aggregation':<15} {'protocol':<8} {'over treatments':>22} {'per-compound mean':>18}"
        + ("  mean AP" if shows_ap else "")
    )
    for row in table.itertuples():
        treatments = f"{100 * row.accuracy_over_treatments:5.1f} % ({row.correct}/{row.n_treatments})"
        line = (f"{row.profiles:<{width}}  {row.aggregation:<15} {row.protocol:<8} {treatments:>22} "
                f"{100 * row.per_compound_mean_accuracy:>15.1f} %")  # fmt: skip
        if shows_ap:
            line += f"  {row.mean_average_precision:7.3f}"
        typer.echo(line)
    typer.echo("over treatments = Ljosa 2013 / BBBC021 protocol; per-compound mean = CytoGAN 2017's measure")
    written = "moa_accuracy, confusion matrices, table1"
    if result["map"] is not None and len(result["map"]):
        summary = result["map"].groupby(["profiles", "aggregation", "measure"], sort=False).agg(
            queries=("query", "size"), mean_map=("mean_average_precision", "mean"), retrieved=("retrieved", "sum"))
        for (name, aggregation, measure), row in summary.iterrows():
            typer.echo(f"{name:<{width}}  {aggregation:<15} {measure}: mean mAP {row.mean_map:.3f}, retrieved "
                       f"{int(row.retrieved)}/{int(row.queries)} (q < 0.05)")
    if result["map"] is not None:
        written += ", map (mAP with p-values)"
    elif result["map_skipped"]:
        console.print(result["map_skipped"], markup=False)
    console.print(f"wrote {written} and metrics.json to {result['out']}", markup=False)
