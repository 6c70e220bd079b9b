"""Seconds per CytoGAN training step (one D update + one G update) on this CPU, for each GAN.

Run: ``python benchmarks/bench_gan_step.py [--batch 64] [--steps 3] [--threads 2] [--quick]``. Prints the figures
and writes ``benchmarks/results/gan_step.json`` (``gan_step_quick.json`` with ``--quick``, the demo config's
narrow networks). Random crops stand in for cells: the step's cost does not depend on the pixels. Also reports
the generator's and discriminator's parameter counts, PyTorch's way and Keras' way.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from cytolens.core.atomic import write_text_atomic
from cytolens.core.config import load_config
from cytolens.engine import EngineOptions, Position, Runtime, launch
from cytolens.profile.gan.models import count_gan_parameters, gan_from_config
from cytolens.profile.gan.config import GanConfig
from cytolens.profile.gan.training import GanTask

RESULTS = Path(__file__).resolve().parent / "results"
PAPER_CONFIGS = {"dcgan": "cytogan-dcgan", "lsgan": "cytogan-lsgan", "wgan-gp": "cytogan-wgan"}


class _SameBatch:
    """Stands in for the cell store's batches: the same random crops for every index."""

    def __init__(self, batch: int) -> None:
        self.batch_size = batch
        self.batches_per_epoch = 1_000_000
        self.crops = np.random.default_rng(0).integers(0, 256, (batch, 96, 96, 3), dtype=np.uint8)

    def batch(self, index: int) -> np.ndarray:
        return self.crops


def _time_steps(runtime: Runtime, config: GanConfig, batch: int, steps: int) -> list[float]:
    """Seconds of ``steps`` training steps after one warm-up step (allocations, oneDNN kernel selection)."""
    torch.manual_seed(0)
    task = GanTask(runtime, gan_from_config(config), config, _SameBatch(batch), Path("."))  # type: ignore[arg-type]
    times = []
    for step in range(1, steps + 2):
        start = time.perf_counter()
        task.train_step(Position(1, step - 1, step))
        times.append(time.perf_counter() - start)
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=None, help="default: the config's (64 for the paper's)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up; best and median kept")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="time cytogan-quick's networks with each GAN loss")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    load_before = os.getloadavg()
    results = []
    for gan_name, config_name in PAPER_CONFIGS.items():
        config = load_config("cytogan-quick" if args.quick else config_name, GanConfig)
        config = config.model_copy(update={"model": gan_name, "lr_discriminator": None, "lr_generator": None})
        batch = args.batch or config.batch_size
        times = launch(_time_steps, EngineOptions(accelerator="cpu", precision="32-true"), config, batch, args.steps)
        counts = count_gan_parameters(gan_from_config(config))
        row = {
            "gan": gan_name, "config": "cytogan-quick" if args.quick else config_name, "batch_size": batch,
            "seconds_per_step_best": round(min(times), 3), "seconds_per_step_median": round(float(np.median(times)), 3),
            "ms_per_cell_best": round(1000 * min(times) / batch, 2),
            "generator_parameters": counts["generator"], "discriminator_parameters": counts["discriminator"],
        }
        results.append(row)
        print(f"{gan_name:8s} batch {batch}: {row['seconds_per_step_best']:.2f} s/step best, "
              f"{row['seconds_per_step_median']:.2f} median ({row['ms_per_cell_best']:.0f} ms per cell); "
              f"G {counts['generator']['trainable']:,} (+{counts['generator']['bn_statistics']:,} BN stats = "
              f"{counts['generator']['keras']:,} Keras), D {counts['discriminator']['trainable']:,}")
    out = {
        "benchmark": "gan_training_step",
        "threads": args.threads,
        "steps_timed": args.steps,
        # On a shared machine other processes slow the steps down: the 1-minute load average says how much.
        "load_average_1min": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": torch.get_num_threads(),
                    "torch": torch.__version__, "python": platform.python_version()},
        "results": results,
    }
    path = RESULTS / ("gan_step_quick.json" if args.quick else "gan_step.json")
    write_text_atomic(path, json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
