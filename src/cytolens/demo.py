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

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cytolens.core.atomic import write_text_atomic
from cytolens.core.console import progress_bar
from cytolens.data.datacheck import DatasetCheck, check_dataset
from cytolens.data.layouts import write_manifest
from cytolens.report.figures import class_montage

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
    from cytolens.synthetic import MICROTUBULE_CLASSES, simulate_microtubule_dataset

    out = Path(out)
    data = out / "data" / "microtubules"
    with progress_bar("simulating cells", per_class * len(MICROTUBULE_CLASSES)) as advance:
        simulate_microtubule_dataset(data, per_class=per_class, size=size, seed=seed, progress=advance)
    with progress_bar("checking images", per_class * len(MICROTUBULE_CLASSES)) as advance:
        check = check_dataset(data, classes=list(MICROTUBULE_CLASSES), progress=advance)
    if not check.ok:  # the simulator wrote these files a moment ago: a problem here is a bug, not user error
        path, problem = check.problems[0]
        raise RuntimeError(f"the demo's simulated data failed its own check: {path}: {problem}")
    outputs = [
        write_manifest(check.dataset.samples, out / "manifest.parquet"),
        write_text_atomic(out / "data_check.json", json.dumps(check.summary(), indent=2) + "\n"),
        class_montage(
            check.dataset.samples,
            check.dataset.classes,
            out / "figures" / "microtubule_examples.png",
            per_class=4,
            seed=seed,
            title="Simulated CV-1 cells, anti-tubulin: rows are paclitaxel classes",
            row_label="paclitaxel {name}",
        ),
    ]
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
    import shutil

    import pandas as pd

    from cytolens.core.config import load_config
    from cytolens.segment.config import SegmentConfig
    from cytolens.segment.evaluate import evaluate_run
    from cytolens.segment.labels import derive_label_folder
    from cytolens.segment.predict import predict_images
    from cytolens.segment.training import run_training
    from cytolens.synthetic import simulate_brightfield_dataset

    out = Path(out)
    data = out / "data" / "brightfield"
    with progress_bar("simulating bright-field fields", fields) as advance:
        simulate_brightfield_dataset(
            data, images=fields, height=field_shape[0], width=field_shape[1], seed=seed, progress=advance
        )
    with progress_bar("deriving labels from DAPI + cell stain", fields) as advance:
        derive_label_folder(data, progress=advance)
    settings = load_config(config, SegmentConfig, seed=seed, **overrides)
    run = run_training(data, settings, out / "segment")
    with progress_bar("evaluating segmentation", fields) as advance:
        evaluate_run(run, data, progress=advance)
    # Overlays only for fields no trained model saw: the validation images of the trained folds.
    manifest = pd.read_parquet(run / "manifest.parquet")
    held_out = manifest[manifest["fold"].isin(settings.folds_to_train())]
    held_out_folder = out / "data" / "brightfield-held-out"
    held_out_folder.mkdir(parents=True, exist_ok=True)
    for path in held_out["path"]:
        shutil.copyfile(path, held_out_folder / Path(path).name)
    with progress_bar("segmenting held-out fields", len(held_out)) as advance:
        predict_images(run, held_out_folder, run / "predictions", cells=True, progress=advance)
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

    from cytolens.data.bbbc021 import read_bbbc021
    from cytolens.core.config import load_config
    from cytolens.profile.crops.cell_store import CellStore
    from cytolens.profile.crops.examples import plot_crop_examples
    from cytolens.profile.crops.crop import crop_dataset
    from cytolens.profile.embed import embed
    from cytolens.profile.evaluate import write_evaluation
    from cytolens.profile.explore import explore_run
    from cytolens.profile.gan.config import GanConfig
    from cytolens.profile.gan.training import train
    from cytolens.profile.profiles import write_profiles
    from cytolens.synthetic.cellpainting.simulate import simulate_cellpainting_dataset
    from cytolens.synthetic.cellpainting.plan import planned_fields

    out = Path(out)
    data, cells = out / "data" / "bbbc021", out / "data" / "bbbc021-cells"
    folder = out / "profile"
    figures = folder / "figures"
    # A rerun would resume the last GAN run and reuse its embeddings; the demo's profiles start afresh instead.
    shutil.rmtree(folder, ignore_errors=True)
    with progress_bar("simulating a BBBC021-layout screen", planned_fields(scale, seed)) as advance:
        simulate_cellpainting_dataset(data, scale=scale, seed=seed, progress=advance)
    with progress_bar("cropping cells", len(read_bbbc021(data))) as advance:
        crop_dataset(data, cells, progress=advance)
    plot_crop_examples(cells, figures / "cell_crops.png", per_moa=6, seed=seed)

    settings = load_config(config, GanConfig, seed=seed, **overrides)
    with progress_bar(f"training {settings.model}", settings.total_steps(len(CellStore(cells)))) as advance:
        run = train(cells, settings, folder / "gan", progress=advance)
    profiles = {
        settings.model: (run, None),
        "classical": (None, "classical"),
        "random D (control)": (None, f"random:{config}"),
    }
    folders = []
    for name, (gan_run, features) in profiles.items():
        target = folder / "profiles" / name.split()[0]
        with progress_bar(f"embedding cells ({name})", len(CellStore(cells))) as advance:
            embed(cells, target, run=gan_run, features=features, seed=seed, progress=advance)
        write_profiles(target)
        folders.append(target)
    result = write_evaluation(folders, folder / "evaluation", labels=list(profiles))
    explored = explore_run(run, folder / "explore", profiles=folders[0], seed=seed, pool=128)
    # The report shows what figures/ holds: the crops, the GAN's training, its samples and the MOA maps.
    for source, name in (
        (run / "figures" / "loss_curves.png", "gan_loss_curves.png"),
        (Path(explored["files"]["real_vs_generated"]), "gan_real_vs_generated.png"),
        (Path(explored["files"]["treatment_map"]), "treatment_map.png"),
        (result["out"] / "classical" / "confusion_nsc.png", "confusion_classical.png"),
        (result["out"] / settings.model / "confusion_nsc.png", f"confusion_{settings.model}.png"),
    ):
        if source.is_file():
            figures.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, figures / name)
    return [result["out"] / "table1.md", result["out"] / "moa_accuracy.md", figures]
