"""Throughput of the microtubule single-cell simulator on ONE core at 512 × 512.

Requirement: at least 20 cells/s. Prints cells/s and peak RSS and writes ``benchmarks/results/microtubules.json``.
Run: ``.venv/bin/python benchmarks/bench_microtubules.py [--cells 60] [--size 512]``.
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
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from cytolens.synthetic.microtubules.simulate import MICROTUBULE_CLASSES, cell_rng, simulate_cell  # noqa: E402

REQUIRED_CELLS_PER_S = 20.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", type=int, default=60, help="cells to time (spread evenly over the classes)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best is reported")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "microtubules.json")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    jobs = [(c, k) for k in range(args.cells) for c in range(len(MICROTUBULE_CLASSES))][: args.cells]
    simulate_cell(cell_rng(0, 0, 0), dose=0.0, size=args.size)  # warm-up: imports, caches
    runs = []
    for repeat in range(args.repeats):
        start = time.perf_counter()
        for c, k in jobs:
            simulate_cell(cell_rng(repeat + 1, c, k), dose=float(MICROTUBULE_CLASSES[c]), size=args.size)
        runs.append(time.perf_counter() - start)
    best = min(runs)
    rate = len(jobs) / best
    # ru_maxrss is in KiB on Linux and bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_rss_mib = rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024
    result = {
        "benchmark": "microtubule simulate_cell",
        "size": args.size,
        "cells": len(jobs),
        "threads": 1,
        "seconds_per_run": [round(r, 4) for r in runs],
        "cells_per_s": round(rate, 2),
        "cells_per_s_median_run": round(len(jobs) / float(np.median(runs)), 2),
        "required_cells_per_s": REQUIRED_CELLS_PER_S,
        "meets_requirement": rate >= REQUIRED_CELLS_PER_S,
        "peak_rss_mib": round(peak_rss_mib, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(f"{rate:.1f} cells/s on one core at {args.size}x{args.size} (best of {args.repeats} runs of {len(jobs)} "
          f"cells; requirement {REQUIRED_CELLS_PER_S:g}); peak RSS {peak_rss_mib:.0f} MiB -> {args.out}")
    return 0 if rate >= REQUIRED_CELLS_PER_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
