"""Each paper's protocol as an ordered list of :class:`~cytolens.reproduce.steps.Step`, at each scale.

A run folder is laid out like the demo's, so one report shows it: ``RUN/data/`` (simulated data and derived
cell stores), ``RUN/classify`` (Shpilman et al. 2017), ``RUN/segment`` (MIDL 2019: one run per model, the
models' Table 1 side by side in ``evaluation/``), ``RUN/profile`` (CytoGAN: one run per GAN, the profiles, their
evaluation and figures), and ``RUN/report.html``.

Scales: ``quick`` uses the demo's configs (minutes per model on a 2-core CPU); a paper model without a quick
config gets its ``-cpu`` config with the quick config's size and schedule (the keys in :data:`QUICK_KEYS`, named in
the config's ``deviations``). ``cpu`` uses the ``-cpu`` configs (an hour or two per model) and ``full`` the
papers' own configs (a GPU's work).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cytolens.core.console import progress_bar
from cytolens.reproduce import stages
from cytolens.reproduce.steps import Step

__all__ = ["PAPERS", "QUICK_KEYS", "SCALES", "Plan", "plan_steps", "training_config"]

PAPERS = ("shpilman2017", "midl2019", "cytogan")
SCALES = ("quick", "cpu", "full")

#: What a paper model without its own quick config takes from the capability's quick config: the size and the
#: schedule, never the model, loss or optimiser.
QUICK_KEYS = {
    "segment": ("patch_size", "patches_per_epoch", "batch_size", "epochs", "lr_halving_epochs", "folds",
                "train_folds", "validate_every", "patience", "max_minutes", "checkpoint_every", "inference"),
    "profile": ("model_options", "batch_size", "epochs", "steps", "sample_every", "sample_count",
                "checkpoint_every", "log_every", "max_minutes"),
}

#: The simulated data of each paper at each scale (the demo's at quick; the README's measured runs at cpu; the
#: papers' sizes at full: ~1100 cells per class, 170 fields of 1440×1920, BBBC021's design).
SIMULATION: dict[str, dict[str, dict[str, Any]]] = {
    "shpilman2017": {"quick": {"per_class": 100, "size": 256}, "cpu": {"per_class": 300, "size": 512},
                     "full": {"per_class": 1100, "size": 512}},
    "midl2019": {"quick": {"fields": 16, "field_shape": (320, 384)}, "cpu": {"fields": 40, "field_shape": (720, 960)},
                 "full": {"fields": 170, "field_shape": (1440, 1920)}},
    "cytogan": {"quick": {"scale": "demo"}, "cpu": {"scale": "small"}, "full": {"scale": "full"}},
}

#: The models each paper compares: folder name → (label, config name per scale; a pair is base + quick source).
MODELS: dict[str, dict[str, tuple[str, dict[str, str | tuple[str, str]]]]] = {
    "midl2019": {
        "unet": ("U-Net", {"quick": "midl2019-quick", "cpu": "midl2019-unet-cpu", "full": "midl2019-unet"}),
        "tiramisu": ("FC-DenseNet103", {"quick": ("midl2019-tiramisu-cpu", "midl2019-quick"),
                                        "cpu": "midl2019-tiramisu-cpu", "full": "midl2019-tiramisu"}),
        "deeplab": ("DeepLabv3+", {"quick": ("midl2019-deeplab-cpu", "midl2019-quick"),
                                   "cpu": "midl2019-deeplab-cpu", "full": "midl2019-deeplab"}),
    },
    "cytogan": {
        "dcgan": ("DCGAN", {"quick": ("cytogan-dcgan-cpu", "cytogan-quick"), "cpu": "cytogan-dcgan-cpu",
                            "full": "cytogan-dcgan"}),
        "wgan": ("WGAN-GP", {"quick": ("cytogan-wgan-cpu", "cytogan-quick"), "cpu": "cytogan-wgan-cpu",
                             "full": "cytogan-wgan"}),
        "lsgan": ("LSGAN", {"quick": "cytogan-quick", "cpu": "cytogan-lsgan-cpu", "full": "cytogan-lsgan"}),
    },
}
CLASSIFY_CONFIGS = {"quick": "shpilman2017-quick", "cpu": "shpilman2017-cpu", "full": "shpilman2017"}
#: The random-weights control: the discriminator of the scale's LSGAN, untrained.
RANDOM_CONTROL = {"quick": "cytogan-quick", "cpu": "cytogan-lsgan-cpu", "full": "cytogan-lsgan"}


#: A paper's steps, the tables it reports, and the folders whose report sections the page shows.
Paper = tuple[list[Step], list[Path], dict[str, Path]]


@dataclass(frozen=True)
class Plan:
    """What one call of :func:`~cytolens.reproduce.reproduce` asked for (see its parameters)."""

    paper: str
    scale: str
    out: Path
    data: Path | None
    seed: int
    simulation: Mapping[str, Any]
    overrides: Mapping[str, Any]

    @property
    def title(self) -> str:
        return f"cytolens reproduce {self.paper} ({self.scale} scale{', ' + str(self.data) if self.data else ''})"


def training_config(source: str | tuple[str, str], config_class: type, *, capability: str, seed: int,
                    overrides: Mapping[str, Any]) -> Any:
    """A training config by name, or ``(base, quick)``: ``base`` with ``quick``'s :data:`QUICK_KEYS`; then
    ``overrides`` (tests shrink runs with them) on top.

    Keys are replaced on the validated configs' values, so a ``None`` (no time budget) can replace a number.
    """
    from cytolens.core.config import load_config, validate_config

    base, quick = (source, None) if isinstance(source, str) else source
    values = load_config(base, config_class, seed=seed).model_dump()
    if quick is not None:
        quick_values = load_config(quick, config_class).model_dump()
        keys = QUICK_KEYS[capability]
        values.update({key: quick_values[key] for key in keys})
        values["name"] = f"{values['name'].removesuffix('-cpu')}-quick"
        values["deviations"] = [*values["deviations"], f"reproduce --scale quick: {', '.join(keys)} as in {quick}."]
    values.update(overrides)
    return validate_config(values, config_class)


def plan_steps(plan: Plan) -> tuple[list[Step], list[Path]]:
    """The paper's steps, in order, and the tables it reports (Table IV, Table 1 ...)."""
    builders = {"shpilman2017": _shpilman2017, "midl2019": _midl2019, "cytogan": _cytogan}
    steps, tables, reported = builders[plan.paper](plan)
    report = plan.out / "report.html"
    steps.append(Step("write the report", lambda: write_reproduction_report(plan, reported), (report,)))
    return steps, tables


def write_reproduction_report(plan: Plan, folders: Mapping[str, Path]) -> Path:
    """Write ``RUN/report.html`` with the section of every run the paper compares.

    A page of one run folder shows one run; a paper comparing three segmentation models needs all three, so
    each folder's sections are gathered and given their own anchors.

    Parameters
    ----------
    plan : Plan
        The reproduction.
    folders : mapping of str to Path
        A name for each reported folder (a run folder, or the profile folder with its evaluation) → the folder.
    """
    from dataclasses import replace

    from cytolens.report.page import write_report
    from cytolens.run_report import collect_sections

    sections = []
    for name, folder in folders.items():
        for section in collect_sections(folder):
            if len(folders) > 1:
                section = replace(section, key=f"{section.key}-{name}", title=f"{section.title}: {name}")
            sections.append(section)
    return write_report(sections, plan.out / "report.html", title=plan.title)


def _simulate_step(plan: Plan, name: str, folder: Path, simulate: Any) -> Step:
    settings = {**SIMULATION[plan.paper][plan.scale], **plan.simulation}
    return Step(name, lambda: simulate(folder, seed=plan.seed, **settings), (folder,),
                not_needed="--data given" if plan.data is not None else None)


def _shpilman2017(plan: Plan) -> Paper:
    from cytolens.classify.config import ClassifyConfig
    from cytolens.classify.training import run_protocol

    config = training_config(CLASSIFY_CONFIGS[plan.scale], ClassifyConfig, capability="classify", seed=plan.seed,
                             overrides=plan.overrides)
    data = plan.data or plan.out / "data" / "microtubules"
    run = plan.out / "classify"
    return [
        _simulate_step(plan, "simulate microtubule cells", data, stages.simulate_microtubules),
        Step("check the data", lambda: stages.check_microtubules(data, plan.out, classes=config.classes,
                                                                 simulated=plan.data is None, seed=plan.seed),
             (plan.out / "data_check.json", plan.out / "manifest.parquet")),
        Step("train CNN, CNN+T, CNN+T+S and XGBoost on every task", lambda: run_protocol(data, config, run),
             (run / "done.json", run / "table_iv.csv")),
    ], [run / "table_iv.md"], {"Shpilman et al. 2017": run}


def _midl2019(plan: Plan) -> Paper:
    from cytolens.segment.config import SegmentConfig
    from cytolens.segment.training import run_training

    data = plan.data or plan.out / "data" / "brightfield"
    folder = plan.out / "segment"
    has_labels = plan.data is not None and (plan.data / "labels").is_dir()
    steps = [
        _simulate_step(plan, "simulate bright-field fields", data, stages.simulate_brightfield),
        Step("derive labels from DAPI + cell stain", lambda: stages.derive_labels(data), (data / "labels",),
             not_needed="the data has labels/" if has_labels else None),
    ]
    runs = {}
    for name, (label, sources) in MODELS["midl2019"].items():
        config = training_config(sources[plan.scale], SegmentConfig, capability="segment", seed=plan.seed,
                                 overrides=plan.overrides)
        runs[label] = folder / name
        steps.append(Step(f"train {label}", lambda config=config, run=runs[label]: run_training(data, config, run),
                          (runs[label] / "done.json",)))
    steps += [
        Step("evaluate every model (Table 1)", lambda: compare_segmentation_runs(runs, data, folder),
             (folder / "evaluation" / "table1.csv",)),
        Step("segment held-out fields with the best model", lambda: _predict_with_best(runs, folder),
             (folder / "predictions",)),
    ]
    return steps, [folder / "evaluation" / "table1.md"], runs


def compare_segmentation_runs(runs: Mapping[str, Path], data: Path, folder: Path) -> Path:
    """Evaluate each run on ``data`` (out of fold) and write the models' Table 1 side by side, with their
    training curves, into ``folder/evaluation`` and ``folder/figures``.

    Returns
    -------
    Path
        ``folder/evaluation/table1.csv``: one row per model, the paper's numbers beside ours.
    """
    import pandas as pd

    from cytolens.core.atomic import atomic_path, write_text_atomic
    from cytolens.segment.curves import plot_training_curves, training_curves
    from cytolens.segment.evaluate import DICE_DEFINITION, PAPER_TABLE1, evaluate_run, table1
    from cytolens.segment.predict import load_segment_run

    rows = []
    for label, run in runs.items():
        loaded = load_segment_run(run)
        with progress_bar(f"evaluating {label}", len(loaded.manifest)) as advance:
            evaluation = evaluate_run(run, data, progress=advance)
        ours = dict(zip(*table1(loaded, evaluation)[["quantity", "ours"]].T.values))
        paper = PAPER_TABLE1.get(loaded.config.model, {})
        rows.append({
            "model": label, "config": loaded.config.name,
            "parameters (paper)": paper.get("parameters"), "parameters (ours)": ours["parameters"],
            "validation dice (paper)": paper.get("validation_dice"), "validation dice (ours)": ours["validation dice"],
            "CV dice (paper)": paper.get("cv_dice"), "CV dice (ours)": ours["CV dice"],
            "images scored (ours)": evaluation["images"], "mean dice on them (ours)": evaluation["mean_dice"],
        })
    table = pd.DataFrame(rows)
    out = folder / "evaluation" / "table1.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    write_text_atomic(out.with_suffix(".md"),
                      f"# Table 1 (MIDL 2019), every model\n\n{_markdown(table)}\n\nDice: {DICE_DEFINITION}\n")
    plot_training_curves(training_curves(runs), folder / "figures" / "training_curves.png")
    return out


def _markdown(table: Any) -> str:
    """A pipe table: dice with 4 decimals as the paper prints them, counts with thousands separators."""

    def show(value: Any) -> str:
        if value is None or value != value:  # None or NaN: the paper does not report it
            return "—"
        if isinstance(value, float) and not value.is_integer():
            return f"{value:.4f}"
        return f"{int(value):,}" if isinstance(value, (int, float)) else str(value)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(show(value) for value in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def _predict_with_best(runs: Mapping[str, Path], folder: Path) -> Path:
    """Held-out fields segmented by the model with the highest out-of-fold mean dice."""
    import pandas as pd

    table = pd.read_csv(folder / "evaluation" / "table1.csv")
    best = table.loc[table["mean dice on them (ours)"].idxmax(), "model"]
    return stages.predict_held_out(runs[best], folder / "held-out-fields", folder / "predictions")


def _cytogan(plan: Plan) -> Paper:
    from cytolens.profile.crops.examples import plot_crop_examples
    from cytolens.profile.evaluate import write_evaluation
    from cytolens.profile.gan.config import GanConfig

    data = plan.data or plan.out / "data" / "bbbc021"
    cells = plan.out / "data" / ("bbbc021-cells" if plan.data is None else "cells")
    folder = plan.out / "profile"
    figures = folder / "figures"

    def crop() -> None:
        stages.crop_cells(data, cells)
        plot_crop_examples(cells, figures / "cell_crops.png", per_moa=6, seed=plan.seed)

    steps = [_simulate_step(plan, "simulate a BBBC021-layout screen", data, stages.simulate_screen),
             Step("crop the cells", crop, (cells / "store.json", figures / "cell_crops.png"))]
    runs: dict[str, Path] = {}
    for name, (label, sources) in MODELS["cytogan"].items():
        config = training_config(sources[plan.scale], GanConfig, capability="profile", seed=plan.seed,
                                 overrides=plan.overrides)
        runs[label] = folder / "gans" / name
        steps.append(Step(f"train {label}", lambda config=config, run=runs[label]: stages.train_gan(cells, config, run),
                          (runs[label] / "done.json",)))
    extractors: dict[str, tuple[Path | None, str | None]] = {label: (run, None) for label, run in runs.items()}
    extractors.update({"classical": (None, "classical"), "random D (control)": (None, f"random:{RANDOM_CONTROL[plan.scale]}")})
    profiles = [folder / "profiles" / name.split()[0] for name in extractors]
    evaluation = folder / "evaluation"

    def explore() -> None:
        from cytolens.profile.explore import explore_run

        # The paper's best GAN is the one explored: latent interpolation, vector algebra, the treatment map.
        explored = explore_run(runs["LSGAN"], folder / "explore", profiles=folder / "profiles" / "LSGAN",
                               seed=plan.seed, pool=128)
        stages.collect_profile_figures(figures, runs=runs, explored=("LSGAN", explored), evaluation=evaluation,
                                       confusions={"LSGAN": "LSGAN", "classical": "classical"})

    steps += [
        Step("embed the cells (3 GANs, classical features, random control)",
             lambda: stages.embed_profiles(cells, folder / "profiles", extractors, seed=plan.seed),
             tuple(path / "treatments.parquet" for path in profiles)),
        Step("evaluate MOA accuracy (Table 1)",
             lambda: write_evaluation(profiles, evaluation, labels=list(extractors),
                                      average_precision=plan.scale != "quick"),
             (evaluation / "table1.csv", evaluation / "moa_accuracy.csv")),
        Step("explore the LSGAN and gather figures", explore, (folder / "explore" / "explore.json",)),
    ]
    return steps, [evaluation / "table1.md", evaluation / "moa_accuracy.md"], {"CytoGAN": folder}
