"""Memory and time of whole-image segmentation: ``predict_tiled_labels`` on a synthetic S × S image.

Run: ``python benchmarks/bench_tiled_inference.py [--size 4000] [--tile 512] [--overlap 64] [--threads 1]``.
A tiny two-layer convolutional network (the network's cost is not the point) labels a float32 image. The
script reports the wall time and the resident memory *added* during inference (sampled from
``/proc/self/status`` every 10 ms, over a baseline taken after the image exists) and the peak of numpy's
allocations (tracemalloc), next to the size of the label output and of one band of tiles. Memory bounded by
the band means: added memory ≈ labels + band (∝ tile × width) + a constant for one batch of tiles, never
the (K, H, W) probabilities. Results are merged by size into
``benchmarks/results/tiled_inference.json``, so runs at 4000 and 10000 sit side by side.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy and torch are imported

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from cytolens.core.atomic import write_text_atomic  # noqa: E402
from cytolens.segment.inference import predict_tiled_labels  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "tiled_inference.json"
NUM_CLASSES = 3
MB = 1024.0**2


def _rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


class _PeakSampler:
    """Samples the resident set size in a thread; ``peak`` is the largest value seen."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> _PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, NUM_CLASSES, 3, padding=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4000, help="image side S in pixels")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = _tiny_model()
    options = {"num_classes": NUM_CLASSES, "tile": args.tile, "overlap": args.overlap, "batch_size": args.batch_size}
    # Warm-up on a small image: imports, allocator pools and kernels are not charged to the measurement.
    predict_tiled_labels(model, np.zeros((2 * args.tile, 2 * args.tile), np.float32), **options)

    rng = np.random.default_rng(0)
    image = rng.random((args.size, args.size), dtype=np.float32)
    baseline = _rss_bytes()
    start = time.perf_counter()
    # tracemalloc sees numpy's allocations (not torch's): the part of the memory cytolens itself controls.
    tracemalloc.start()
    with _PeakSampler() as sampler:
        labels = predict_tiled_labels(model, image, **options)
    numpy_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    seconds = time.perf_counter() - start
    assert labels.shape == image.shape

    band_bytes = (NUM_CLASSES + 1) * args.tile * args.size * 4  # probability + weight buffers of one band
    # torch temporaries of one batch: input, conv and ReLU outputs (8 channels each), logits, softmax.
    batch_bytes = args.batch_size * args.tile**2 * 4 * (1 + 2 * 8 + 2 * NUM_CLASSES)
    run = {
        "size": args.size,
        "tile": args.tile,
        "overlap": args.overlap,
        "batch_size": args.batch_size,
        "torch_threads": args.threads,
        "megapixels": round(args.size**2 / 1e6, 2),
        "seconds": round(seconds, 2),
        "megapixels_per_second": round(args.size**2 / 1e6 / seconds, 2),
        "image_mb": round(image.nbytes / MB, 1),
        "labels_mb": round(labels.nbytes / MB, 1),
        "band_buffer_mb": round(band_bytes / MB, 1),
        "tile_batch_mb_estimate": round(batch_bytes / MB, 1),
        "numpy_peak_mb": round(numpy_peak / MB, 1),
        "numpy_peak_minus_labels_mb": round((numpy_peak - labels.nbytes) / MB, 1),
        "added_rss_mb": round((sampler.peak - baseline) / MB, 1),
        "added_rss_minus_labels_mb": round((sampler.peak - baseline - labels.nbytes) / MB, 1),
        "full_probabilities_would_be_mb": round(NUM_CLASSES * image.nbytes / MB, 1),
        "peak_rss_mb_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
    }
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.update(
        {
            "benchmark": "predict_tiled_labels",
            "model": "Conv2d(1,8,3) + ReLU + Conv2d(8,3,3)",
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
        }
    )
    results.setdefault("runs", {})[str(args.size)] = run
    write_text_atomic(RESULTS, json.dumps(results, indent=2) + "\n")
    print(json.dumps(run, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
