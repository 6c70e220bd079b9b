"""The ``cytolens`` command line: a thin layer over the Python API.

User errors (a :class:`~cytolens.core.errors.CytolensError`, a bad option, a missing or unwritable file) print one
line on stderr and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.exceptions import Abort, Exit, TyperException

from cytolens import __version__
from cytolens.cli.options import ClassesOption, RandomSeedOption, WorkersOption, modernize_arguments
from cytolens.core.console import console, error_line, progress_bar, stdout, warning_line
from cytolens.core.errors import CytolensError, display_path

app = typer.Typer(
    name="cytolens",
    help="Deep learning for cell microscopy images: classify single cells, segment nuclei and cytoplasm from "
    "bright-field, profile morphology with GANs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
synth_app = typer.Typer(help="Write simulated datasets in the on-disk layouts of the papers' real data.", no_args_is_help=True)
data_app = typer.Typer(help="Inspect and validate datasets.", no_args_is_help=True)
app.add_typer(synth_app, name="synth")
app.add_typer(data_app, name="data")


def _register_capabilities() -> None:
    # Each capability owns its commands; importing them here keeps `cytolens --help` complete.
    from cytolens.bench.cli import app as bench_app
    from cytolens.classify.cli import app as classify_app
    from cytolens.experts.cli import app as experts_app
    from cytolens.profile.cli import app as profile_app
    from cytolens.segment.cli import app as segment_app

    app.add_typer(classify_app, name="classify")
    app.add_typer(segment_app, name="segment")
    app.add_typer(experts_app, name="experts")
    app.add_typer(profile_app, name="profile")
    app.add_typer(bench_app, name="bench")


_register_capabilities()


def _version_callback(value: bool) -> None:
    if value:
        stdout.print(f"cytolens {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of an error.")] = False,
) -> None:
    """cytolens: deep learning for cell microscopy images."""


GroupOption = Annotated[
    str | None,
    typer.Option(
        "--group-pattern",
        help="Regular expression on file stems whose first group is the group id (keeps cells of one field together).",
    ),
]


@data_app.command("check")
def data_check(
    path: Annotated[Path, typer.Argument(help="The dataset folder.")],
    classes: ClassesOption = None,
    group_pattern: GroupOption = None,
    manifest: Annotated[
        Path | None, typer.Option("--manifest", help="Also write the manifest (Parquet) of the valid images here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Detect the layout of PATH, validate every image and summarise classes, sizes, dtypes and problems.

    Layouts: class folders (DATA/<class>/, optionally under train/ and test/), for segmentation
    DATA/images/ (or brightfield/) with DATA/labels/, and for profiling BBBC021's plate folders with
    BBBC021_v1_image.csv and BBBC021_v1_moa.csv. Exits with 0 when every file is usable, 1 when some
    files have problems (each is listed with its reason), and 2 when PATH cannot be used at all.
    """
    from cytolens.data.datacheck import check_bbbc021, check_dataset, check_label_pairs
    from cytolens.data.label_pairs import scan_image_label_pairs
    from cytolens.data.layouts import MANIFEST_COLUMNS, detect_layout, parse_class_list, scan_class_folders, write_manifest

    class_list = parse_class_list(classes) if classes else None
    layout = detect_layout(path)
    if layout == "bbbc021":
        from cytolens.data.bbbc021 import read_bbbc021

        with progress_bar("checking fields", len(read_bbbc021(path))) as advance:
            check = check_bbbc021(path, progress=advance)
    elif layout == "image_label_pairs":
        total = len(scan_image_label_pairs(path, classes=class_list).samples)
        with progress_bar("checking image/label pairs", total) as advance:
            check = check_label_pairs(path, classes=class_list, progress=advance)
    else:
        total = len(scan_class_folders(path, classes=class_list, group_pattern=group_pattern).samples)
        with progress_bar("checking images", total) as advance:
            check = check_dataset(path, classes=class_list, group_pattern=group_pattern, progress=advance)
    if manifest is not None and layout == "bbbc021":
        write_manifest(check.fields, manifest, required=("ImageNumber", "Plate", "Well", "Compound"))
    elif manifest is not None:
        pairs = check.dataset.layout == "image_label_pairs"
        write_manifest(check.dataset.samples, manifest, required=("path", "group", "split") if pairs else MANIFEST_COLUMNS)
    if as_json:
        stdout.print_json(json.dumps(check.summary()))
    else:
        print_check(check)
    if not check.ok:
        raise typer.Exit(1)


def print_check(check: object) -> None:
    """Print a :class:`~cytolens.data.datacheck.DatasetCheck` or :class:`~cytolens.data.datacheck.PairCheck` on stdout."""
    from rich.table import Table

    from cytolens.data.datacheck import DatasetCheck

    summary = check.summary()  # type: ignore[attr-defined]
    stdout.print(f"[bold]{summary['root']}[/]  layout: {summary['layout']}")
    if summary["layout"] == "bbbc021":
        table = _bbbc021_table(check)
    elif isinstance(check, DatasetCheck):
        counts = check.dataset.counts()
        table = Table(title="images per class", title_justify="left")
        table.add_column("class")
        for split in counts.columns:
            table.add_column(str(split) or "images", justify="right")
        for name, row in counts.iterrows():
            table.add_row(str(name), *(str(int(v)) for v in row))
    else:
        table = Table(title=f"{summary['images']} image/label pairs ({summary['images_folder']}/ + labels/)",
                      title_justify="left")
        table.add_column("label")
        table.add_column("class")
        table.add_column("pixels", justify="right")
        for k, (name, fraction) in enumerate(summary["pixel_fraction"].items()):
            table.add_row(str(k), name, f"{fraction:.1%}")
    stdout.print(table)
    if summary["images"]:
        height, width = summary["height"], summary["width"]
        stdout.print(
            f"size (H×W): {height[0]}–{height[1]} × {width[0]}–{width[1]}   channels: "
            f"{', '.join(map(str, summary['channels']))}   dtype: {', '.join(summary['dtypes'])}   "
            f"bit depth in use: {summary['bits_used_max']}   formats: {', '.join(summary['formats'])}"
        )
    for item in summary["ignored"]:
        stdout.print(f"ignored: {item['path']}: {item['reason']}", markup=False, soft_wrap=True)
    for path, message in getattr(check, "warnings", []):
        stdout.print(f"warning: {path}: {message}", markup=False, soft_wrap=True)
    problems = check.problems  # type: ignore[attr-defined]
    if problems:
        stdout.print(f"[bold red]{len(problems)} problem file(s):[/]")
        for path, message in problems:
            stdout.print(f"  {path}: {message}", markup=False, soft_wrap=True)
    else:
        stdout.print(f"[green]all {summary['images']} images are readable[/]")


def _bbbc021_table(check: object) -> object:
    """The week-by-week table of a BBBC021 check, after printing its one-line totals."""
    from rich.table import Table

    summary = check.summary()  # type: ignore[attr-defined]
    fields = check.fields  # type: ignore[attr-defined]
    stdout.print(
        f"{summary['plates']} plates in {len(summary['weeks'])} weeks; {summary['compounds']} compounds "
        f"({summary['compounds_with_moa']} with an MOA); {summary['treatments']} annotated treatments + DMSO; "
        f"{len(summary['moas'])} MOAs incl. DMSO; {summary['images']} of {summary['fields_listed']} fields usable",
        markup=False,
    )
    if summary["fields_without_moa"]:
        stdout.print(
            f"{summary['fields_without_moa']} fields of treatments without an MOA annotation (kept, MOA missing); "
            f"compounds never annotated: {len(summary['compounds_without_moa'])}",
            markup=False,
        )
    table = Table(title="fields per week", title_justify="left")
    for column in ("week", "plates", "compounds", "fields", "DMSO fields"):
        table.add_column(column, justify="left" if column == "week" else "right")
    for week in summary["weeks"]:
        rows = fields[fields["Batch"] == week]
        compounds = rows.loc[rows["Compound"] != "DMSO", "Compound"].nunique()
        table.add_row(week, str(rows["Plate"].nunique()), str(compounds), str(len(rows)),
                      str(int((rows["Compound"] == "DMSO").sum())))
    return table


@data_app.command("montage")
def data_montage(
    path: Annotated[Path, typer.Argument(help="The dataset folder.")],
    out: Annotated[Path, typer.Option("--out", help="PNG file to write.")] = Path("montage.png"),
    per_class: Annotated[int, typer.Option("--per-class", min=1, help="Examples per class.")] = 4,
    classes: ClassesOption = None,
    seed: Annotated[int, typer.Option(help="Which examples are drawn.")] = 0,
) -> None:
    """Save a figure of example images, one row per class."""
    from cytolens.data.layouts import parse_class_list, scan_class_folders
    from cytolens.report.figures import class_montage

    dataset = scan_class_folders(path, classes=parse_class_list(classes) if classes else None)
    class_montage(dataset.samples, dataset.classes, out, per_class=per_class, seed=seed)
    console.print(f"wrote {out}")


@synth_app.command("microtubules")
def synth_microtubules(
    out: Annotated[Path, typer.Argument(help="Output folder; gets 0/, 0.1/, 1/ and cells.csv.")],
    per_class: Annotated[int, typer.Option("--per-class", min=1, help="Cells per class.")] = 100,
    size: Annotated[int, typer.Option("--size", min=64, help="Image side in pixels.")] = 512,
    seed: RandomSeedOption = 0,
    difficulty: Annotated[
        float, typer.Option("--difficulty", min=0.0, max=3.0, help="How much the classes overlap (0 = barely, 1 = default).")
    ] = 1.0,
) -> None:
    """Simulate single CV-1 cells with immunostained microtubules under 0, 0.1 and 1 paclitaxel (16-bit TIFF)."""
    from cytolens.synthetic import MICROTUBULE_CLASSES, simulate_microtubule_dataset

    with progress_bar("simulating cells", per_class * len(MICROTUBULE_CLASSES)) as advance:
        cells = simulate_microtubule_dataset(
            out, per_class=per_class, size=size, seed=seed, difficulty=difficulty, progress=advance
        )
    console.print(f"wrote {len(cells)} cells to {out} (hidden parameters in {out / 'cells.csv'})")


@synth_app.command("brightfield")
def synth_brightfield(
    out: Annotated[Path, typer.Argument(help="Output folder; gets brightfield/, dapi/, cellstain/, truth/ and fields.csv.")],
    images: Annotated[int, typer.Option("--images", min=1, help="Number of fields.")] = 10,
    height: Annotated[int, typer.Option("--height", min=64, help="Field height in pixels.")] = 1440,
    width: Annotated[int, typer.Option("--width", min=64, help="Field width in pixels.")] = 1920,
    seed: RandomSeedOption = 0,
) -> None:
    """Simulate 20x fields of adherent HeLa-like cells: bright-field, DAPI and whole-cell stain (16-bit TIFF)."""
    from cytolens.synthetic import simulate_brightfield_dataset

    with progress_bar("simulating fields", images) as advance:
        fields = simulate_brightfield_dataset(out, images=images, height=height, width=width, seed=seed, progress=advance)
    console.print(f"wrote {len(fields)} fields to {out} (hidden parameters in {out / 'fields.csv'})")


@synth_app.command("cellpainting")
def synth_cellpainting(
    out: Annotated[Path, typer.Argument(help="Output folder; gets BBBC021's plate folders and CSVs, plus cells.csv.")],
    scale: Annotated[
        str,
        typer.Option(
            "--scale",
            help="tiny (tests), demo (the 38 compounds once, ~110 fields), small (minutes on 2 cores) or full "
            "(BBBC021's design and size).",
        ),
    ] = "small",
    seed: RandomSeedOption = 0,
    workers: WorkersOption = 1,
) -> None:
    """Simulate BBBC021: MCF-7 cells under 38 compounds of 12 MOAs, in BBBC021's layout (DAPI, tubulin, actin)."""
    from cytolens.synthetic.cellpainting.simulate import TRUTH_CSV, simulate_cellpainting_dataset
    from cytolens.synthetic.cellpainting.plan import planned_fields

    with progress_bar("simulating fields", planned_fields(scale, seed)) as advance:
        images = simulate_cellpainting_dataset(out, scale=scale, seed=seed, workers=workers, progress=advance)
    console.print(
        f"wrote {len(images)} fields of {images['Image_Metadata_Plate_DAPI'].nunique()} plates to {out} "
        f"(BBBC021_v1_image.csv, BBBC021_v1_moa.csv; simulator truth in {out / TRUTH_CSV})",
        markup=False,
    )


@app.command("demo")
def demo(
    out: Annotated[Path, typer.Option("--out", help="Run folder to write.")] = Path("runs/demo"),
    per_class: Annotated[int, typer.Option("--per-class", min=2, help="Simulated cells per class.")] = 100,
    size: Annotated[int, typer.Option("--size", min=64, help="Image side in pixels.")] = 256,
    seed: RandomSeedOption = 0,
    classify: Annotated[bool, typer.Option("--classify/--no-classify", help="Run the quick classification protocol.")] = True,
    segment: Annotated[bool, typer.Option("--segment/--no-segment", help="Run the quick segmentation protocol.")] = True,
    profile: Annotated[
        bool, typer.Option("--profile/--no-profile", help="Simulate a small screen and profile it with a quick GAN.")
    ] = True,
) -> None:
    """Run the built-in demo on simulated data and write everything to a run folder (see OUT/report.html)."""
    from cytolens.demo import run_demo

    result = run_demo(
        out, per_class=per_class, size=size, seed=seed, classify=classify, segment=segment, profile=profile
    )
    print_check(result.check)
    if classify:
        typer.echo((out / "classify" / "table_iv.md").read_text(encoding="utf-8"))
    if segment:
        typer.echo((out / "segment" / "evaluation" / "table1.md").read_text(encoding="utf-8"))
    if profile:
        typer.echo((out / "profile" / "evaluation" / "moa_accuracy.md").read_text(encoding="utf-8"))
    for path in result.outputs:
        console.print(f"wrote {path}")


@app.command("reproduce")
def reproduce(
    paper: Annotated[str, typer.Argument(help="shpilman2017 (classify), midl2019 (segment) or cytogan (profile).")],
    out: Annotated[Path, typer.Option("--out", help="Run folder (a rerun with the same options resumes it).")],
    scale: Annotated[
        str, typer.Option("--scale", help="quick (minutes per model on 2 CPU cores), cpu (hours) or full (GPU).")
    ] = "quick",
    data: Annotated[
        Path | None, typer.Option("--data", help="The paper's real dataset in its real layout (skips simulation).")
    ] = None,
    seed: RandomSeedOption = 0,
) -> None:
    """Run a paper's whole protocol: simulate (or read --data), train every model it compares, evaluate, report.

    One progress line per step; a rerun skips finished steps and resumes an interrupted one.
    """
    from cytolens.reproduce import reproduce as run_reproduction

    result = run_reproduction(paper, out=out, scale=scale, data=data, seed=seed)
    for table in result.tables:
        typer.echo(table.read_text(encoding="utf-8"))


@app.command("report")
def report(
    folder: Annotated[Path, typer.Argument(help="A run folder, or a demo folder with one subfolder per capability.")],
    out: Annotated[Path | None, typer.Option("--out", help="The HTML file (default FOLDER/report.html).")] = None,
) -> None:
    """Write a self-contained HTML report of FOLDER: a summary against the papers, then each capability's tables,
    figures and provenance (every image embedded; nothing fetched)."""
    from cytolens.run_report import write_run_report

    page, sections = write_run_report(folder, out=out)
    console.print(f"wrote {page} ({', '.join(section.key for section in sections)})", markup=False)


def _interrupt_on_signals() -> None:
    """Ctrl-C (SIGINT) and SIGTERM stop a command as KeyboardInterrupt: a training run saves its last finished
    step and the command ends with "interrupted" and status 130.

    A command started in the background by a script inherits SIGINT ignored (POSIX shells do that without job
    control), so ``kill -INT`` did nothing; schedulers such as SLURM end a job with SIGTERM, which killed it
    without a checkpoint.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread (an embedding application's business)

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, interrupt)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``cytolens`` command: runs the app and turns user errors into one line."""
    args, notices = modernize_arguments(list(sys.argv[1:] if argv is None else argv))
    for notice in notices:
        warning_line(notice)
    debug = "--debug" in args
    _interrupt_on_signals()
    command = typer.main.get_command(app)
    try:
        # standalone_mode=False hands errors to us (to print them as one line); --help then returns 0.
        status = command.main(args=args, prog_name="cytolens", standalone_mode=False)
    except Exit as exc:
        sys.exit(exc.exit_code)
    except Abort:
        error_line("interrupted")
        sys.exit(130)
    except TyperException as exc:
        # Bad or missing options (click's UsageError family, vendored by typer): one line and where to look.
        if debug:
            raise
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.exit(0)  # typer printed the help while raising this
        where = ctx.command_path if ctx is not None else "cytolens"
        error_line(f"{exc.format_message()} (see '{where} --help')")
        sys.exit(2)
    except CytolensError as exc:
        if debug:
            raise
        error_line(str(exc))
        sys.exit(2)
    except OSError as exc:
        # A file the user named cannot be written or read (permissions, full disk, missing folder).
        if debug or exc.filename is None:
            raise
        error_line(f"{display_path(exc.filename)}: {exc.strerror or exc}")
        sys.exit(2)
    if status == 130:  # typer turns Ctrl-C into a silent return of 130; no command returns it otherwise
        error_line("interrupted")
    sys.exit(status if isinstance(status, int) else 0)
