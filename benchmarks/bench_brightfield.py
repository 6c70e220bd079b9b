"""Speed of the bright-field field simulator (and of label derivation) on ONE core at 1440 × 1920.

Target: a field in at most about 2 s. Also derives labels from each field's DAPI + whole-cell stain and reports
their agreement with the simulator's truth. Prints the figures and writes ``benchmarks/results/brightfield.json``.
Run: ``.venv/bin/python benchmarks/bench_brightfield.py [--fields 4] [--height 1440] [--width 1920]``.
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

from cytolens.synthetic.brightfield.simulate import field_rng, simulate_field  # noqa: E402

TARGET_SECONDS_PER_FIELD = 2.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fields", type=int, default=4, help="fields per timed run")
    parser.add_argument("--height", type=int, default=1440)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs; the best is reported")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "brightfield.json")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    simulate_field(field_rng(0, 0), height=256, width=256)  # warm-up: imports, caches
    runs, fields = [], []
    for repeat in range(args.repeats):
        start = time.perf_counter()
        fields = [simulate_field(field_rng(repeat, k), height=args.height, width=args.width)
                  for k in range(args.fields)]
        runs.append(time.perf_counter() - start)
    best = min(runs) / args.fields

    from cytolens.segment.labels import derive_labels, label_agreement

    derive_labels(fields[0]["dapi"][:256, :256], fields[0]["cellstain"][:256, :256])  # warm-up: sklearn import
    agreement: dict[str, dict[str, float]] = {}
    label_seconds: dict[str, float] = {}
    for method in ("gmm", "otsu"):
        scores, start = [], time.perf_counter()
        for field in fields:
            scores.append(label_agreement(derive_labels(field["dapi"], field["cellstain"], method=method),
                                          field["labels"]))
        label_seconds[method] = round((time.perf_counter() - start) / len(fields), 3)
        agreement[method] = {key: round(float(np.mean([s[key] for s in scores])), 4) for key in scores[0]}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_rss_mib = rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024
    result = {
        "benchmark": "brightfield simulate_field",
        "height": args.height,
        "width": args.width,
        "fields": args.fields,
        "threads": 1,
        "seconds_per_run": [round(r, 3) for r in runs],
        "seconds_per_field": round(best, 3),
        "seconds_per_field_median_run": round(float(np.median(runs)) / args.fields, 3),
        "target_seconds_per_field": TARGET_SECONDS_PER_FIELD,
        "meets_target": best <= TARGET_SECONDS_PER_FIELD,
        "mean_cells_per_field": round(float(np.mean([f["params"]["n_cells"] for f in fields])), 1),
        "derive_labels_seconds_per_field": label_seconds,
        "label_agreement_with_truth": agreement,
        "peak_rss_mib": round(peak_rss_mib, 1),
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
