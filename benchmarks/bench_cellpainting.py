"""Speed of the BBBC021-layout simulator at the ``small`` scale, and of cropping its fields, on ONE core.

Simulates the first ``--fields`` fields of the ``small`` design (384 × 480, render + camera + three 16-bit TIFFs)
into a temporary folder, then segments and crops them (classical segmentation, crop_max), and reports fields per
second (wall clock and CPU), cells per field, the projected time for the whole ``small`` dataset and the peak RSS.
Prints the figures and writes ``benchmarks/results/cellpainting.json``.
Run: ``.venv/bin/python benchmarks/bench_cellpainting.py [--fields 40] [--repeats 2]``.
"""

from __future__ import annotations

import os

# Pin every thread pool to one core before numpy / scipy load their BLAS and OpenMP runtimes.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fields", type=int, default=40, help="fields per timed run")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs; the best is reported")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "cellpainting.json")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    from cytolens.data.bbbc021 import IMAGE_CSV, MOA_CSV
    from cytolens.profile.crops.crop import crop_dataset
    from cytolens.synthetic.cellpainting import simulate as cellpainting
    from cytolens.synthetic.cellpainting.plan import SCALES, plan_experiment

    design = SCALES["small"]
    total_fields = len(plan_experiment(design, np.random.default_rng(np.random.SeedSequence([0, 0])))) * design.sites
    sim_wall, sim_cpu, crop_wall, crop_cpu, cells, crops = [], [], [], [], [], []
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            out = Path(scratch) / f"small{repeat}"
            start, cpu = time.perf_counter(), time.process_time()
            cellpainting.simulate_cellpainting_dataset(out, scale="small", seed=repeat, max_fields=args.fields)
            sim_wall.append(time.perf_counter() - start)
            sim_cpu.append(time.process_time() - cpu)
            assert len(pd.read_csv(out / IMAGE_CSV)) == args.fields and (out / MOA_CSV).is_file()
            cells.append(len(pd.read_csv(out / cellpainting.TRUTH_CSV)) / args.fields)
            start, cpu = time.perf_counter(), time.process_time()
            store = crop_dataset(out, Path(scratch) / f"cells{repeat}")
            crop_wall.append(time.perf_counter() - start)
            crop_cpu.append(time.process_time() - cpu)
            crops.append(json.loads((store / "store.json").read_text())["n_cells"] / args.fields)

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_rss_mib = rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024
    best_sim, best_crop = min(sim_wall), min(crop_wall)
    result = {
        "benchmark": "cellpainting simulate (small) + crop",
        "scale": "small",
        "height": design.height,
        "width": design.width,
        "fields_per_run": args.fields,
        "threads": 1,
        "simulate_seconds_per_run": [round(r, 3) for r in sim_wall],
        "simulate_fields_per_second": round(args.fields / best_sim, 2),
        "simulate_fields_per_cpu_second": round(args.fields / min(sim_cpu), 2),
        "crop_seconds_per_run": [round(r, 3) for r in crop_wall],
        "crop_fields_per_second": round(args.fields / best_crop, 2),
        "crop_fields_per_cpu_second": round(args.fields / min(crop_cpu), 2),
        "simulated_cells_per_field": round(float(np.mean(cells)), 1),
        "crops_per_field": round(float(np.mean(crops)), 1),
        "small_total_fields": total_fields,
        "small_projected_minutes_one_core": {
            "simulate": round(total_fields * best_sim / args.fields / 60, 1),
            "crop": round(total_fields * best_crop / args.fields / 60, 1),
        },
        "peak_rss_mib": round(peak_rss_mib, 1),
        "note": "wall-clock figures on a shared machine; the CPU figures are less sensitive to other load",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
