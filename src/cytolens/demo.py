"""``cytolens demo``: the whole product on built-in simulated data, in one run folder.

The demo simulates a small microtubule dataset, checks it with the same code as ``cytolens data check``,
records the manifest, draws example cells per class, and runs the quick classification protocol
(``configs/shpilman2017-quick.yaml``) into ``out/classify``. It then simulates bright-field fields, derives
their labels from the fluorescence channels, trains and evaluates the quick segmentation config
(``configs/midl2019-quick.yaml``) into ``out/segment`` and segments the held-out fields with overlays. Then it
profiles: it simulates a BBBC021-layout screen of the 38 compounds (``--scale demo``), crops the cells, trains
the quick GAN (``configs/cytogan-quick.yaml``), embeds the cells with its discriminator, with classical features
and with a random discriminator, and evaluates MOA accuracy into ``out/profile``. Last it writes
``out/report.html`` with every capability's tables and figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cytolens.core.console import progress_bar
from cytolens.data.datacheck import DatasetCheck
from cytolens.reproduce.stages import (
    check_microtubules, collect_profile_figures, crop_cells, derive_labels, embed_profiles, predict_held_out,
    simulate_brightfield, simulate_microtubules, simulate_screen, train_gan,
)

#: The demo's bright-field data: a few small fields (cells keep their real size at 0.325 µm per pixel).
DEMO_FIELDS = 16
DEMO_FIELD_SHAPE = (320, 384)


@dataclass
class DemoResult:
    """What :func:`run_demo` wrote."""

    out: Path
    check: DatasetCheck
    outputs: list[Path] = field(default_factory=list)


def run_demo(
    out: str | Path,
    *,
    per_class: int = 100,
    size: int = 256,
    seed: int = 0,
    classify: bool = True,
    segment: bool = True,
    profile: bool = True,
) -> DemoResult:
    """Simulate, check and illustrate a small microtubule dataset in ``out``, classify it, segment bright-field
    fields and write ``out/report.html``.

    Parameters
    ----------
    out : str or Path
        The run folder. Simulated data goes to ``out/data/microtubules``; the check summary, manifest and
        figures beside it. Rerunning overwrites the same files with the same content (deterministic per seed).
    per_class : int, default 100
        Cells per class.
    size : int, default 256
        Image side in pixels.
    seed : int, default 0
        Simulation seed.
    classify : bool, default True
        Run the quick classification protocol (a few minutes on 2 CPU cores) into ``out/classify``.
    segment : bool, default True
        Simulate bright-field fields and run the quick segmentation protocol (a few minutes) into ``out/segment``.
    profile : bool, default True
        Simulate a small BBBC021-layout screen and profile it (a few minutes) into ``out/profile``.

    Returns
    -------
    DemoResult
    """
    from cytolens.synthetic import MICROTUBULE_CLASSES

    out = Path(out)
    data = simulate_microtubules(out / "data" / "microtubules", per_class=per_class, size=size, seed=seed)
    check, outputs = check_microtubules(data, out, classes=list(MICROTUBULE_CLASSES), simulated=True, seed=seed)
    if classify:
        from cytolens.classify.config import ClassifyConfig
        from cytolens.classify.training import run_protocol
        from cytolens.core.config import load_config

        config = load_config("shpilman2017-quick", ClassifyConfig, seed=seed)
        run = run_protocol(data, config, out / "classify")
        outputs += [run / "table_iv.md", run / "metrics.json", run / "predictions.csv", run / "figures"]
    if segment:
        outputs += segment_demo(out, seed=seed)
    if profile:
        outputs += profile_demo(out, seed=seed)
    from cytolens.run_report import write_run_report

    page, _ = write_run_report(out, title="cytolens demo on simulated data", allow_empty=True,
                               note="Every image here was simulated by cytolens: the numbers show the method runs end "
                                    "to end, not what it achieves on real cells.")
    outputs.append(page)
    return DemoResult(out=out, check=check, outputs=outputs)


def segment_demo(
    out: str | Path,
    *,
    seed: int = 0,
    fields: int = DEMO_FIELDS,
    field_shape: tuple[int, int] = DEMO_FIELD_SHAPE,
    config: str = "midl2019-quick",
    **overrides: Any,
) -> list[Path]:
    """Simulate, label, train, evaluate and predict: the segment capability end to end on small fields.

    Parameters
    ----------
    out : str or Path
        The demo folder; data goes to ``out/data/brightfield``, the run to ``out/segment``.
    seed : int, default 0
        Simulation and training seed.
    fields : int, default 16
        Number of simulated fields.
    field_shape : (int, int), default (320, 384)
        Height and width of each field.
    config : str, default "midl2019-quick"
        The segmentation config (a shipped name or a YAML path).
    **overrides
        Config fields to override (tests shrink the run with them).

    Returns
    -------
    list of Path
        Table 1, the metrics and the predictions folder.
    """
    from cytolens.core.config import load_config
    from cytolens.segment.config import SegmentConfig
    from cytolens.segment.evaluate import evaluate_run
    from cytolens.segment.training import run_training

    out = Path(out)
    data = simulate_brightfield(out / "data" / "brightfield", fields=fields, field_shape=field_shape, seed=seed)
    derive_labels(data)
    settings = load_config(config, SegmentConfig, seed=seed, **overrides)
    run = run_training(data, settings, out / "segment")
    with progress_bar("evaluating segmentation", fields) as advance:
        evaluate_run(run, data, progress=advance)
    # Overlays only for fields no trained model saw: the validation images of the trained folds.
    predict_held_out(run, out / "data" / "brightfield-held-out", run / "predictions")
    return [run / "evaluation" / "table1.md", run / "evaluation" / "metrics.json", run / "predictions"]


def profile_demo(
    out: str | Path,
    *,
    seed: int = 0,
    scale: str = "demo",
    config: str = "cytogan-quick",
    **overrides: Any,
) -> list[Path]:
    """Simulate, crop, train, embed and evaluate: the profile capability end to end on a small screen.

    Three profiles of the same cells are compared under the same protocol: the trained GAN's discriminator,
    classical CellProfiler-like features, and the same discriminator with random weights (the control).

    Parameters
    ----------
    out : str or Path
        The demo folder; data goes to ``out/data/bbbc021`` and ``out/data/bbbc021-cells``, the GAN run, the
        profiles and the evaluation to ``out/profile``, the figures the report shows to ``out/profile/figures``.
    seed : int, default 0
        Simulation, training and random-control seed.
    scale : str, default "demo"
        The simulator's scale (``tiny`` for tests).
    config : str, default "cytogan-quick"
        The GAN config (a shipped name or a YAML path).
    **overrides
        Config fields to override (tests shrink the run with them).

    Returns
    -------
    list of Path
        Table 1, the accuracy table and the figures folder.
    """
    import shutil

    from cytolens.core.config import load_config
    from cytolens.profile.crops.examples import plot_crop_examples
    from cytolens.profile.evaluate import write_evaluation
    from cytolens.profile.explore import explore_run
    from cytolens.profile.gan.config import GanConfig

    out = Path(out)
    folder = out / "profile"
    figures = folder / "figures"
    # A rerun would resume the last GAN run and reuse its embeddings; the demo's profiles start afresh instead.
    shutil.rmtree(folder, ignore_errors=True)
    data = simulate_screen(out / "data" / "bbbc021", scale=scale, seed=seed)
    cells = crop_cells(data, out / "data" / "bbbc021-cells")
    plot_crop_examples(cells, figures / "cell_crops.png", per_moa=6, seed=seed)

    settings = load_config(config, GanConfig, seed=seed, **overrides)
    run = train_gan(cells, settings, folder / "gan")
    profiles = {
        settings.model: (run, None),
        "classical": (None, "classical"),
        "random D (control)": (None, f"random:{config}"),
    }
    folders = embed_profiles(cells, folder / "profiles", profiles, seed=seed)
    result = write_evaluation(folders, folder / "evaluation", labels=list(profiles))
    explored = explore_run(run, folder / "explore", profiles=folders[0], seed=seed, pool=128)
    # The report shows what figures/ holds: the crops, the GAN's training, its samples and the MOA maps.
    collect_profile_figures(figures, runs={"gan": run}, explored=("gan", explored), evaluation=result["out"],
                            confusions={"classical": "classical", settings.model: settings.model})
    return [result["out"] / "table1.md", result["out"] / "moa_accuracy.md", figures]
