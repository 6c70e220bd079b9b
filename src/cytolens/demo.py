"""``cytolens demo``: the whole product on built-in simulated data, in one run folder.

The demo simulates a small microtubule dataset, checks it with the same code as ``cytolens data check``,
records the manifest, draws example cells per class, and runs the quick classification protocol
(``configs/shpilman2017-quick.yaml``) into ``out/classify``. Later capabilities add their steps here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from cytolens.atomic import write_text_atomic
from cytolens.console import progress_bar
from cytolens.datacheck import DatasetCheck, check_dataset
from cytolens.layouts import write_manifest
from cytolens.report.figures import class_montage


@dataclass
class DemoResult:
    """What :func:`run_demo` wrote."""

    out: Path
    check: DatasetCheck
    outputs: list[Path] = field(default_factory=list)


def run_demo(
    out: str | Path, *, per_class: int = 60, size: int = 256, seed: int = 0, classify: bool = True
) -> DemoResult:
    """Simulate, check and illustrate a small microtubule dataset in ``out``, then classify it.

    Parameters
    ----------
    out : str or Path
        The run folder. Simulated data goes to ``out/data/microtubules``; the check summary, manifest and
        figures beside it. Rerunning overwrites the same files with the same content (deterministic per seed).
    per_class : int, default 60
        Cells per class.
    size : int, default 256
        Image side in pixels.
    seed : int, default 0
        Simulation seed.
    classify : bool, default True
        Run the quick classification protocol (a few minutes on 2 CPU cores) into ``out/classify``.

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
        from cytolens.classify.protocol import run_protocol
        from cytolens.config import load_config

        config = load_config("shpilman2017-quick", ClassifyConfig, seed=seed)
        run = run_protocol(data, config, out / "classify")
        outputs += [run / "table_iv.md", run / "metrics.json", run / "predictions.csv", run / "figures"]
    return DemoResult(out=out, check=check, outputs=outputs)
