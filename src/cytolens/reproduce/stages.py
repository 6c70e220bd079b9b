"""The stages that ``cytolens demo`` and ``cytolens reproduce`` share: each capability's work between files, with
its progress bar.

Each function does one thing a step of a paper's protocol needs (simulate, derive labels, crop, train a GAN,
embed, predict held-out fields, gather figures) and reads and writes only files, so a stage can run on its own
after an earlier one finished in another process.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from cytolens.core.console import progress_bar

if TYPE_CHECKING:
    from cytolens.data.datacheck import DatasetCheck
    from cytolens.profile.gan.config import GanConfig

__all__ = [
    "check_microtubules", "collect_profile_figures", "crop_cells", "derive_labels", "embed_profiles",
    "predict_held_out", "simulate_brightfield", "simulate_microtubules", "simulate_screen", "train_gan",
]


def simulate_microtubules(data: str | Path, *, per_class: int, size: int, seed: int) -> Path:
    """Simulate ``per_class`` cells of each paclitaxel class into ``data`` (class folders, 16-bit TIFF)."""
    from cytolens.synthetic import MICROTUBULE_CLASSES, simulate_microtubule_dataset

    with progress_bar("simulating cells", per_class * len(MICROTUBULE_CLASSES)) as advance:
        simulate_microtubule_dataset(data, per_class=per_class, size=size, seed=seed, progress=advance)
    return Path(data)


def check_microtubules(
    data: str | Path, out: str | Path, *, classes: list[str], simulated: bool, seed: int = 0,
) -> tuple[DatasetCheck, list[Path]]:
    """Check a class-folder dataset with the same code as ``cytolens data check``, and record it in ``out``:
    ``data_check.json``, ``manifest.parquet`` and ``figures/microtubule_examples.png`` (examples per class).

    Returns
    -------
    (DatasetCheck, list of Path)
        The check and the files written.

    Raises
    ------
    CytolensError
        If a file has a problem (training would refuse it too); the message names the first.
    RuntimeError
        If ``simulated`` data fails: the simulator wrote those files a moment ago, so that is a bug.
    """
    import json

    from cytolens.core.atomic import write_text_atomic
    from cytolens.core.errors import CytolensError
    from cytolens.data.datacheck import check_dataset
    from cytolens.data.layouts import scan_class_folders, write_manifest
    from cytolens.report.figures import class_montage

    out = Path(out)
    total = len(scan_class_folders(data, classes=classes).samples)
    with progress_bar("checking images", total) as advance:
        check = check_dataset(data, classes=classes, progress=advance)
    if not check.ok:
        path, problem = check.problems[0]
        if simulated:
            raise RuntimeError(f"simulated data failed its own check: {path}: {problem}")
        raise CytolensError(f"{len(check.problems)} unusable image(s), first {path}: {problem}", path=data)
    what = "Simulated CV-1 cells, anti-tubulin" if simulated else Path(data).name
    outputs = [
        write_manifest(check.dataset.samples, out / "manifest.parquet"),
        write_text_atomic(out / "data_check.json", json.dumps(check.summary(), indent=2) + "\n"),
        class_montage(
            check.dataset.samples,
            check.dataset.classes,
            out / "figures" / "microtubule_examples.png",
            per_class=4,
            seed=seed,
            title=f"{what}: rows are paclitaxel classes",
            row_label="paclitaxel {name}",
        ),
    ]
    return check, outputs


def simulate_brightfield(data: str | Path, *, fields: int, field_shape: tuple[int, int], seed: int) -> Path:
    """Simulate ``fields`` bright-field fields with DAPI and whole-cell stain into ``data``."""
    from cytolens.synthetic import simulate_brightfield_dataset

    with progress_bar("simulating bright-field fields", fields) as advance:
        simulate_brightfield_dataset(
            data, images=fields, height=field_shape[0], width=field_shape[1], seed=seed, progress=advance
        )
    return Path(data)


def derive_labels(data: str | Path) -> Path:
    """Derive ``data/labels/`` from ``data/dapi/`` and ``data/cellstain/`` the paper's way; return the folder."""
    from cytolens.segment.labels import derive_label_folder, fluorescence_pairs

    with progress_bar("deriving labels from DAPI + cell stain", len(fluorescence_pairs(Path(data)))) as advance:
        derive_label_folder(data, progress=advance)
    return Path(data) / "labels"


def predict_held_out(run: str | Path, held_out: str | Path, out: str | Path) -> Path:
    """Segment, with cell objects and overlays, the fields of the run's data that no trained fold model saw.

    Those are the validation fields of the run's trained folds; they are copied to ``held_out`` (prediction takes
    a folder) and the predictions written to ``out``.
    """
    import pandas as pd

    from cytolens.segment.predict import load_segment_run, predict_images

    loaded = load_segment_run(run)
    manifest = pd.read_parquet(Path(run) / "manifest.parquet")
    fields = manifest[manifest["fold"].isin(loaded.config.folds_to_train())]
    held_out = Path(held_out)
    held_out.mkdir(parents=True, exist_ok=True)
    for path in fields["path"]:
        shutil.copyfile(path, held_out / Path(path).name)
    with progress_bar("segmenting held-out fields", len(fields)) as advance:
        predict_images(run, held_out, out, cells=True, progress=advance)
    return Path(out)


def simulate_screen(data: str | Path, *, scale: str, seed: int) -> Path:
    """Simulate a BBBC021-layout screen (``scale``: tiny, demo, small or full) into ``data``."""
    from cytolens.synthetic.cellpainting.plan import planned_fields
    from cytolens.synthetic.cellpainting.simulate import simulate_cellpainting_dataset

    with progress_bar("simulating a BBBC021-layout screen", planned_fields(scale, seed)) as advance:
        simulate_cellpainting_dataset(data, scale=scale, seed=seed, progress=advance)
    return Path(data)


def crop_cells(data: str | Path, cells: str | Path) -> Path:
    """Crop every cell of a BBBC021-layout dataset into the cell store ``cells`` (resumes an interrupted one)."""
    from cytolens.data.bbbc021 import read_bbbc021
    from cytolens.profile.crops.crop import crop_dataset

    with progress_bar("cropping cells", len(read_bbbc021(data))) as advance:
        crop_dataset(data, cells, progress=advance)
    return Path(cells)


def train_gan(cells: str | Path, settings: GanConfig, out: str | Path) -> Path:
    """Train ``settings``' GAN on the cell store into the run folder ``out`` (resumed if it holds the same run)."""
    from cytolens.profile.crops.cell_store import CellStore
    from cytolens.profile.gan.training import train

    with progress_bar(f"training {settings.model}", settings.total_steps(len(CellStore(cells)))) as advance:
        return train(cells, settings, out, progress=advance)


def embed_profiles(
    cells: str | Path,
    folder: str | Path,
    extractors: Mapping[str, tuple[Path | None, str | None]],
    *,
    seed: int,
) -> list[Path]:
    """Embed the cells once per extractor and aggregate each into treatment profiles.

    Parameters
    ----------
    cells : str or Path
        A cell store.
    folder : str or Path
        Each extractor's profiles go to ``folder/<first word of its name>``.
    extractors : mapping of str to (Path or None, str or None)
        Name → (a GAN run, or None) and (``features`` of :func:`~cytolens.profile.embed.embed`, or None).
    seed : int
        Seed of a random-weights extractor.

    Returns
    -------
    list of Path
        The profiles folders, in the order of ``extractors``.
    """
    from cytolens.profile.crops.cell_store import CellStore
    from cytolens.profile.embed import embed
    from cytolens.profile.profiles import write_profiles

    folders = []
    for name, (run, features) in extractors.items():
        target = Path(folder) / name.split()[0]
        with progress_bar(f"embedding cells ({name})", len(CellStore(cells))) as advance:
            embed(cells, target, run=run, features=features, seed=seed, progress=advance)
        write_profiles(target)
        folders.append(target)
    return folders


def collect_profile_figures(
    figures: str | Path,
    *,
    runs: Mapping[str, Path],
    explored: tuple[str, Mapping[str, object]],
    evaluation: Path,
    confusions: Mapping[str, str],
) -> Path:
    """Copy the figures a report shows into ``figures``: each GAN's loss curves, the explored GAN's real and
    generated cells and treatment map, and confusion matrices.

    Parameters
    ----------
    figures : str or Path
        The report's figure folder (created).
    runs : mapping of str to Path
        GAN name → run folder; its ``figures/loss_curves.png`` becomes ``<name>_loss_curves.png``.
    explored : (str, mapping)
        The explored GAN's name and :func:`~cytolens.profile.explore.explore_run`'s summary; its real and
        generated cells become ``<name>_real_vs_generated.png``.
    evaluation : Path
        The evaluation folder (``profile evaluate``'s ``--out``).
    confusions : mapping of str to str
        Evaluated profiles' sub-folder → the figure's name stem (``confusion_<stem>.png``).
    """
    figures = Path(figures)
    explored_name, summary = explored
    files = summary["files"]
    assert isinstance(files, Mapping)
    sources = [(run / "figures" / "loss_curves.png", f"{name}_loss_curves.png") for name, run in runs.items()]
    sources += [(Path(files["real_vs_generated"]), f"{explored_name}_real_vs_generated.png"),
                (Path(files["treatment_map"]), "treatment_map.png")]
    sources += [(evaluation / sub / "confusion_nsc.png", f"confusion_{stem}.png") for sub, stem in confusions.items()]
    for source, name in sources:
        if source.is_file():  # a GAN stopped before its first log has no loss curves yet
            figures.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, figures / name)
    return figures
