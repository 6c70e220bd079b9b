"""The training workloads ``cytolens bench`` times: each capability's real training task, fed in-memory data.

One small adapter per capability builds the task the capability itself trains with —
:class:`~cytolens.classify.fit.ClassifierTask`, :class:`~cytolens.segment.training.SegmentTask`,
:class:`~cytolens.profile.gan.training.GanTask` — from the shipped paper config of the model (batch size
overridden) and synthetic inputs of the paper's shapes, under :func:`cytolens.engine.launch` with the requested
precision. :func:`measure_training` then calls ``task.train_step`` in a timed loop: ``warmup`` untimed steps
first (the first of them under :class:`torch.utils.flop_counter.FlopCounterMode`, which counts the FLOPs of one
step), then timed steps until at least ``min_steps`` steps and ``min_seconds`` seconds are done (or exactly
``steps`` when given). The pixels do not matter to the speed; the shapes, the models, the losses, the optimisers
and the data pipelines (patch sampling and augmentation, the GAN's chunked cell store) are the real ones.

Quick mode (``quick=True``) shrinks inputs and widths so every model builds and steps in well under a second;
its numbers only show that the machinery works.
"""

from __future__ import annotations

import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cytolens.bench.op_times import OpTimer
from cytolens.core.errors import OptionError
from cytolens.engine import EngineOptions, Position, Runtime, TrainTask, configure_threads, launch, seed_everything

try:
    from cytolens.engine.allocator import allocator_tuned
except ImportError:  # the harness timing a --baseline revision from before cytolens.engine.allocator
    def allocator_tuned() -> bool:
        return False

__all__ = ["TRAINING_MODELS", "Workload", "measure_training", "peak_rss_mb", "vm_hwm_mb"]


@dataclass(frozen=True)
class Workload:
    """A model the bench trains: its capability, shipped config, paper batch and the batches the bench times."""

    model: str
    capability: str
    config: str
    input_shape: tuple[int, int, int]
    paper_batch: int
    batches: tuple[int, ...]


#: The models of the full bench: 224×224 patches at the paper's batch 3 and a larger one for segmentation: 16,
#: except FC-DenseNet103 at 8, whose fp32 step at 16 needs 21 GB (25 GB with the engine's malloc settings, which
#: keep freed blocks), past a 24 GB machine.
TRAINING_MODELS: dict[str, Workload] = {
    "shpilman2017": Workload("shpilman2017", "classify", "shpilman2017", (1, 300, 300), 32, (32,)),
    "unet": Workload("unet", "segment", "midl2019-unet", (1, 224, 224), 3, (3, 16)),
    "fcdensenet103": Workload("fcdensenet103", "segment", "midl2019-tiramisu", (1, 224, 224), 3, (3, 8)),
    "deeplabv3plus_xception65": Workload("deeplabv3plus_xception65", "segment", "midl2019-deeplab", (1, 224, 224),
                                         3, (3, 16)),
    "dcgan": Workload("dcgan", "gan", "cytogan-dcgan", (3, 96, 96), 64, (64,)),
    "wgan": Workload("wgan", "gan", "cytogan-wgan", (3, 96, 96), 64, (64,)),
    "lsgan": Workload("lsgan", "gan", "cytogan-lsgan", (3, 96, 96), 64, (64,)),
}

#: Quick mode: tiny inputs and widths (the expensive segmentation networks are left out of the quick bench).
_QUICK_CLASSIFY_SIZE = 32
_QUICK_SEGMENT = {"patch_size": 32, "image_size": 96, "unet_options": {"filters": [4, 8], "bottleneck": 8}}
_QUICK_GAN = {"image_size": 16, "generator_filters": [16, 8, 4, 2], "discriminator_filters": [2, 4, 8, 16]}


def vm_hwm_mb(pid: int | str = "self") -> float | None:
    """``VmHWM`` (peak resident set) of a process from ``/proc``, in MB; None where there is no ``/proc``."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return None


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB.

    ``VmHWM`` where Linux has it: ``ru_maxrss`` also counts the image of the parent that forked this process
    (the kernel carries the pre-``exec`` peak over), which inflates the figure of a child of a large bench process.
    """
    hwm = vm_hwm_mb()
    if hwm is not None:
        return hwm
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0, 1)


def workload(model: str) -> Workload:
    """The :class:`Workload` called ``model``.

    Raises
    ------
    OptionError
        For a model the bench does not know; the message lists the known ones.
    """
    if model not in TRAINING_MODELS:
        raise OptionError(f"unknown bench model {model!r}; choose one of {', '.join(TRAINING_MODELS)}")
    return TRAINING_MODELS[model]


# -- adapters: one per capability; each returns (task, fetch) where fetch() times the batch fetch when the task
# -- does not report data_seconds itself (None when it does) -------------------------------------------------------
def _classify_task(runtime: Runtime, spec: Workload, batch: int, quick: bool, scratch: Path
                   ) -> tuple[TrainTask, Callable[[Position], float] | None]:
    from cytolens.classify.config import ClassifyConfig
    from cytolens.classify.fit import ClassifierTask
    from cytolens.classify.models import create_model
    from cytolens.core.config import load_config

    config = load_config(spec.config, ClassifyConfig)
    size = _QUICK_CLASSIFY_SIZE if quick else config.input_size
    classes = len(config.classes)
    rng = np.random.default_rng(0)
    # A few batches' worth of images, so each step gathers a permuted batch as the real epochs do.
    n = 4 * batch
    train_x = rng.random((n, spec.input_shape[0], size, size), dtype=np.float32)
    train_y = rng.integers(0, classes, n)
    model = create_model(config.model, num_classes=classes, in_chans=spec.input_shape[0], input_size=size)
    training = config.training.model_copy(update={"batch_size": batch})
    task = ClassifierTask(runtime, model, train_x, train_y, train_x[:batch], train_y[:batch],
                          training=training, seed=config.seed)

    def fetch(position: Position) -> float:
        # The task's own batch fetch (permutation, gather, tensor): what a step waits for before computing.
        started = time.perf_counter()
        rows = task._batch(position)[runtime.rank::runtime.world_size]
        runtime.to_device(torch.from_numpy(task.train_x[rows]))
        runtime.to_device(torch.from_numpy(task.train_y[rows]))
        return time.perf_counter() - started

    return task, fetch


def _blob_labels(rng: np.random.Generator, size: int, classes: int) -> np.ndarray:
    """A label map with round cells (last class) around nuclei (class 1), so every class occurs."""
    label = np.zeros((size, size), np.uint8)
    rows, cols = np.ogrid[:size, :size]
    radius = max(4, size // 12)
    for _ in range(max(4, (size // (3 * radius)) ** 2)):
        y, x = rng.integers(radius, size - radius, 2)
        distance = np.hypot(rows - y, cols - x)
        label[distance < radius] = classes - 1
        label[distance < radius / 2] = 1
    return label


def _segment_task(runtime: Runtime, spec: Workload, batch: int, quick: bool, scratch: Path, steps: int
                  ) -> tuple[TrainTask, None]:
    from cytolens.core.config import load_config
    from cytolens.segment.config import SegmentConfig
    from cytolens.segment.training import SegmentTask

    config = load_config(spec.config, SegmentConfig)
    size = 640  # room for the paper's 122-px shifted crops around a 224-px patch
    update: dict[str, Any] = {"batch_size": batch, "patches_per_epoch": batch * steps}
    if quick:
        size = _QUICK_SEGMENT["image_size"]
        update.update(patch_size=_QUICK_SEGMENT["patch_size"],
                      augmentation=config.augmentation.model_copy(update={"max_shift": 8}))
        if spec.model == "unet":
            update["model_options"] = _QUICK_SEGMENT["unet_options"]
    config = config.model_copy(update=update)
    rng = np.random.default_rng(0)
    classes = len(config.classes)
    labels = [_blob_labels(rng, size, classes) for _ in range(2)]
    images = [(label * 0.3 + rng.normal(0.2, 0.05, label.shape)).astype(np.float32) for label in labels]
    task = SegmentTask(runtime, config, config.seed, (images, labels), ([], []), scratch / "history.csv")
    return task, None


def _gan_task(runtime: Runtime, spec: Workload, batch: int, quick: bool, scratch: Path, steps: int
              ) -> tuple[TrainTask, None]:
    from cytolens.core.config import load_config
    from cytolens.profile.crops.cell_store import CHUNK_CELLS, CellStore, CellStoreWriter
    from cytolens.profile.gan.batches import ChunkShuffledBatches
    from cytolens.profile.gan.config import GanConfig
    from cytolens.profile.gan.models import gan_from_config
    from cytolens.profile.gan.training import GanTask

    import pandas as pd

    config = load_config(spec.config, GanConfig)
    update: dict[str, Any] = {"batch_size": batch}
    size = spec.input_shape[1]
    if quick:
        size = _QUICK_GAN["image_size"]
        update["model_options"] = {**config.model_options, **_QUICK_GAN}
    config = config.model_copy(update=update)
    # A real cell store on disk (several chunks) read through the real batches object: the data wait is the
    # chunked, shuffled reading a training run does, not an in-memory shortcut.
    cells = max(2 * CHUNK_CELLS, batch * config.critic_steps * min(steps, 16))
    writer = CellStoreWriter(scratch / "cells", crop_size=size)
    rng = np.random.default_rng(0)
    for start in range(0, cells, CHUNK_CELLS):
        n = min(CHUNK_CELLS, cells - start)
        writer.append(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
                      pd.DataFrame({"Metadata_Cell": np.arange(start, start + n)}))
    store = CellStore(writer.close())
    batches = ChunkShuffledBatches(store, batch_size=batch, seed=config.seed, buffer_cells=config.shuffle_buffer)
    torch.manual_seed(config.seed)
    task = GanTask(runtime, gan_from_config(config), config, batches, scratch)
    return task, None


def _build(runtime: Runtime, spec: Workload, batch: int, quick: bool, scratch: Path, steps: int
           ) -> tuple[TrainTask, Callable[[Position], float] | None]:
    if spec.capability == "classify":
        return _classify_task(runtime, spec, batch, quick, scratch)
    if spec.capability == "segment":
        return _segment_task(runtime, spec, batch, quick, scratch, steps)
    return _gan_task(runtime, spec, batch, quick, scratch, steps)


# -- the timed loop -------------------------------------------------------------------------------------------
def _sync(runtime: Runtime) -> None:
    if runtime.device.type == "cuda":
        torch.cuda.synchronize(runtime.device)


def conv_backward_flops(grad_out_shape: list[int], x_shape: list[int], w_shape: list[int], _bias: Any,
                        _stride: Any, _padding: Any, _dilation: Any, transposed: bool, _output_padding: Any,
                        _groups: int, output_mask: list[bool], out_shape: Any = None, **kwargs: Any) -> int:
    """FLOPs of a convolution's backward pass, grouped convolutions included.

    Each of the input and the weight gradient costs what the forward convolution costs (the weight's shape
    already holds ``in_channels / groups``). torch's own formula rebuilds the weight gradient as a convolution
    over the transposed batch and ignores ``groups``, so it counts a depthwise convolution's weight gradient
    ``channels`` times over (DeepLabv3+'s Xception then reads three times the machine's peak).
    """
    from torch.utils.flop_counter import conv_flop_count

    forward = conv_flop_count(x_shape, w_shape, grad_out_shape, transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _count_flops(task: TrainTask, position: Position) -> tuple[dict[str, Any], float]:
    """Run one step under the FLOP counter; return its record and the FLOPs counted (0 if none were seen)."""
    from torch.utils import flop_counter

    counter = flop_counter.FlopCounterMode(
        display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flops})
    inner = getattr(flop_counter, "_FlopCounterMode", None)
    if inner is None:
        with counter:
            record = task.train_step(position)
    else:
        # Only the global total is needed. The public context also hooks every module (for per-module tables),
        # and those hooks break torch.autograd.grad(create_graph=True), which WGAN-GP's penalty calls.
        with inner(counter):
            record = task.train_step(position)
    return record, float(counter.get_total_flops())


def _position(task: TrainTask, k: int) -> Position:
    """Step ``k + 1`` (0-based ``k``) as the fit loop numbers it: epochs of ``steps_per_epoch`` batches."""
    epoch, index = divmod(k, task.steps_per_epoch())
    return Position(epoch + 1, index, k + 1)


def _run_steps(runtime: Runtime, model: str, batch: int, steps: int | None, warmup: int, min_steps: int,
               min_seconds: float, max_steps: int, quick: bool, op_time_steps: int) -> dict[str, Any]:
    spec = workload(model)
    planned = steps if steps is not None else max_steps
    seed_everything(0)
    op_times = None
    with tempfile.TemporaryDirectory(prefix="cytolens-bench-") as scratch:
        task, fetch = _build(runtime, spec, batch, quick, Path(scratch), warmup + planned + op_time_steps + 1)
        flops, flop_samples = 0.0, batch
        samples_per_step: list[int] = []
        for k in range(warmup):
            position = _position(task, k)
            if k == 0:
                record, flops = _count_flops(task, position)
                flop_samples = int(record.get("samples", batch))
            else:
                task.train_step(position)
        _sync(runtime)
        seconds: list[float] = []
        data: list[float] = []
        reported = True
        timed_total = 0.0
        k = warmup
        while True:
            done = len(seconds)
            if steps is not None and done >= steps:
                break
            if steps is None and done >= min_steps and (timed_total >= min_seconds or done >= max_steps):
                break
            position = _position(task, k)
            started = time.perf_counter()
            record = task.train_step(position)
            _sync(runtime)
            elapsed = time.perf_counter() - started
            seconds.append(elapsed)
            timed_total += elapsed
            samples_per_step.append(int(record.get("samples", batch)))
            if "data_seconds" in record:
                data.append(float(record["data_seconds"]))
            else:
                reported = False
            k += 1
        if not reported and fetch is not None:
            # The task does not say how long it waited for its batch: time the same fetch separately.
            try:
                data = [fetch(_position(task, j)) for j in range(warmup, k)]
            except AttributeError:  # the task's internals changed under the adapter: no figure rather than a wrong one
                data = []
        if op_time_steps:
            # After the timed steps, so the timer's own overhead never touches the figures above.
            timer = OpTimer()
            started = time.perf_counter()
            with timer:
                for j in range(k, k + op_time_steps):
                    task.train_step(_position(task, j))
            _sync(runtime)
            op_times = {"steps": op_time_steps,
                        "seconds_per_step_timed": round((time.perf_counter() - started) / op_time_steps, 6),
                        **timer.summary(op_time_steps)}
    median = statistics.median(seconds)
    samples = statistics.median(samples_per_step)
    return {
        "flops_per_sample": flops / flop_samples if flops > 0 and flop_samples else None,
        "seconds_per_step": [round(s, 6) for s in seconds],
        "seconds_per_step_median": round(median, 6),
        "samples_per_s": round(samples / median, 3),
        "data_wait_fraction": round(sum(data) / sum(seconds), 4) if data and sum(seconds) > 0 else None,
        "data_wait_source": "task" if reported else ("bench" if data else None),
        "steps": len(seconds),
        "warmup": warmup,
        "device": runtime.device.type,
        "precision": runtime.precision,
        # What the steps ran with (the engine's launch may have set threads of its own).
        "threads": torch.get_num_threads(),
        "op_times": op_times,
    }


def measure_training(model: str, *, precision: str = "32-true", batch: int | None = None, steps: int | None = None,
                     warmup: int = 2, min_steps: int = 5, min_seconds: float = 10.0, max_steps: int = 20,
                     threads: int | None = None, quick: bool = False, op_time_steps: int = 0) -> dict[str, Any]:
    """Time the training steps of one model at one precision and batch size, in this process.

    Parameters
    ----------
    model : str
        A key of :data:`TRAINING_MODELS`.
    precision : {"32-true", "bf16-mixed", "auto", "16-mixed"}
        Passed to the engine (:class:`~cytolens.engine.EngineOptions`).
    batch : int, optional
        Samples per step; default the paper's.
    steps : int, optional
        Exactly this many timed steps; default adaptive: at least ``min_steps`` and ``min_seconds`` of steps,
        at most ``max_steps``.
    warmup : int, default 2
        Untimed steps first (at least 1: the first one counts the FLOPs).
    threads : int, optional
        torch intra-op threads (default: the CPUs this process may use).
    quick : bool, default False
        Tiny inputs and widths (see the module docstring).
    op_time_steps : int, default 0
        After the timed steps, this many more under :class:`~cytolens.bench.op_times.OpTimer`: the row's
        ``op_times`` then says where a step's time goes (None when 0).

    Returns
    -------
    dict
        ``model``, ``capability``, ``precision``, ``batch_size``, ``input_shape``, ``samples_per_s`` (median
        step), ``seconds_per_step_median``, ``seconds_per_step``, ``steps``, ``warmup``, ``data_wait_fraction``
        (share of the timed steps spent fetching batches) and ``data_wait_source`` (``task``: the task's own
        ``data_seconds``; ``bench``: the batch fetch timed separately by the bench), ``flops_per_sample`` (one
        training step's FLOPs counted by FlopCounterMode ÷ its samples; None when nothing was counted),
        ``achieved_gflops``, ``threads``, ``peak_rss_mb`` (this process), ``malloc_tuned``, ``quick``,
        ``op_times`` (:meth:`OpTimer.summary <cytolens.bench.op_times.OpTimer.summary>` of the extra steps, with
        ``steps`` and ``seconds_per_step_timed``, the steps' wall time under the timer).
    """
    spec = workload(model)
    batch = spec.paper_batch if batch is None else int(batch)
    for name, value, low in (("batch", batch, 1), ("warmup", warmup, 1), ("min_steps", min_steps, 1),
                             ("max_steps", max_steps, 1)):
        if value < low:
            raise OptionError(f"`{name}` must be ≥ {low}, got {value}")
    if steps is not None and steps < 1:
        raise OptionError(f"`steps` must be ≥ 1, got {steps}")
    if op_time_steps < 0:
        raise OptionError(f"`op_time_steps` must be ≥ 0, got {op_time_steps}")
    configure_threads(threads)
    result = launch(_run_steps, EngineOptions(precision=precision), model, batch, steps, warmup, min_steps,
                    min_seconds, max_steps, quick, op_time_steps)
    flops_per_sample = result.pop("flops_per_sample")
    shape = list(spec.input_shape)
    if quick:
        side = {"classify": _QUICK_CLASSIFY_SIZE, "segment": _QUICK_SEGMENT["patch_size"],
                "gan": _QUICK_GAN["image_size"]}[spec.capability]
        shape = [shape[0], side, side]
    return {
        "model": model,
        "capability": spec.capability,
        "config": spec.config,
        "precision": result.pop("precision"),
        "batch_size": batch,
        "input_shape": shape,
        **result,
        "flops_per_sample": round(flops_per_sample) if flops_per_sample else None,
        "achieved_gflops": (round(flops_per_sample * result["samples_per_s"] / 1e9, 3)
                            if flops_per_sample else None),
        "peak_rss_mb": peak_rss_mb(),
        # Whether launch() set glibc's malloc to keep freed blocks (cytolens.engine.allocator): a revision or a
        # machine without it pays page faults for every large tensor of a step.
        "malloc_tuned": allocator_tuned(),
        "quick": quick,
    }


def quick_models() -> list[str]:
    """The models the quick bench trains (the heavy segmentation networks take seconds even when tiny)."""
    # One GAN stands for the three (one task); WGAN-GP's double backward is the path most likely to break.
    return ["shpilman2017", "unet", "wgan"]


def full_plan() -> list[tuple[str, int]]:
    """Every ``(model, batch)`` of the full bench, in the order it runs."""
    return [(spec.model, b) for spec in TRAINING_MODELS.values() for b in spec.batches]
