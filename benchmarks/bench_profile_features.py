"""Speed of the classical profile features: cells per second on one core (target >= 200 for 96 × 96 crops).

Run: ``python benchmarks/bench_profile_features.py [--cells STORE] [--n 1024] [--batch-size 128]``. Measures on
the first ``--n`` crops of a cell store (``profile crop``), or on drawn elliptical cells without one. Prints the
figures and writes ``benchmarks/results/profile_features.json``. Thread pools are limited to one thread, so the
figure is per core; CPU time of the process is reported beside wall time (the machines here are shared).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy is imported

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from cytolens.core.atomic import write_text_atomic  # noqa: E402
from cytolens.profile.features import FEATURES_VERSION, classical_features, feature_names  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "profile_features.json"


def drawn_cells(n: int, seed: int = 0, size: int = 96) -> np.ndarray:
    """Elliptical cells (nucleus in DNA, tubulin halo, actin rim) with noise, each channel scaled to its max."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    out = np.zeros((n, size, size, 3), np.uint8)
    for i in range(n):
        centre = (size - 1) / 2 + rng.normal(0, 2, 2)
        angle = rng.uniform(0, np.pi)
        scale = rng.uniform(0.6, 1.3)
        dy, dx = yy - centre[0], xx - centre[1]
        u = dy * np.cos(angle) + dx * np.sin(angle)
        v = -dy * np.sin(angle) + dx * np.cos(angle)
        r_nucleus = (u / (12 * scale)) ** 2 + (v / (9 * scale)) ** 2
        r_cell = (u / (28 * scale)) ** 2 + (v / (20 * scale)) ** 2
        dna = np.clip(1.2 - r_nucleus, 0, 1) * (r_nucleus < 1)
        tubulin = (r_cell < 1) * (0.4 + 0.6 * np.exp(-((np.sqrt(r_cell) - 0.55) ** 2) / 0.05))
        actin = (r_cell < 1) * (0.3 + 0.7 * np.exp(-((np.sqrt(r_cell) - 0.95) ** 2) / 0.01))
        image = np.clip(np.stack([dna, tubulin, actin], -1) + rng.normal(0, 0.03, (size, size, 3)), 0, None)
        out[i] = np.round(image / image.reshape(-1, 3).max(0) * 255).astype(np.uint8)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=Path, default=None, help="a cell store; default: drawn cells")
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="passes over the crops; the fastest counts")
    args = parser.parse_args()

    if args.cells is not None:
        from cytolens.profile.crops.cell_store import CellStore

        store = CellStore(args.cells)
        crops = np.round(store.crops(slice(0, min(args.n, len(store)))) * 255).astype(np.uint8)
        source = str(args.cells)
    else:
        crops = drawn_cells(args.n)
        source = "drawn elliptical cells"
    classical_features(crops[:8], batch_size=args.batch_size)  # warm-up: imports and caches

    walls, cpus = [], []
    for _ in range(args.repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        classical_features(crops, batch_size=args.batch_size)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    result = {
        "benchmark": "classical_features",
        "features_version": FEATURES_VERSION,
        "n_features": len(feature_names()),
        "source": source,
        "crop_size": int(crops.shape[1]),
        "cells": int(len(crops)),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "cells_per_second_wall_best": round(len(crops) / min(walls), 1),
        "cells_per_second_wall_median": round(len(crops) / float(np.median(walls)), 1),
        "cells_per_second_cpu_best": round(len(crops) / min(cpus), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "threads": 1,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    print(
        f"classical_features: {result['cells_per_second_wall_best']} cells/s wall (best of {args.repeats}; median "
        f"{result['cells_per_second_wall_median']}), {result['cells_per_second_cpu_best']} cells/s of CPU time, "
        f"{result['n_features']} features, {len(crops)} {source} at {crops.shape[1]} px, batch {args.batch_size}, "
        f"load {result['load_average_1min']}"
    )
    write_text_atomic(RESULTS, json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
