"""Inference and data figures of ``cytolens bench``: classification, whole-image segmentation, profiling, simulators.

- classification: images/s of ``predict_proba`` (what ``classify predict`` runs) on the paper's network, and of
  the hand-crafted features of the feature baseline;
- whole-image segmentation: the whole ``cytolens segment predict`` command, run as a child process on TIFFs of
  1440 × 1920 and 10,000 × 10,000 pixels with a quick U-Net run folder trained here in a temporary folder;
  seconds, megapixels/s and the child's peak RSS (``os.wait4``), and the same net of the command's fixed cost
  (start-up, model loading: the command on a 64 × 64 image);
- profiling: cells/s of ``profile crop`` (:func:`~cytolens.profile.crops.crop.crop_dataset`), of the classical
  features and of ``profile embed`` (random-weights discriminator) on a small simulated BBBC021;
- simulators: items/s of the microtubule cell, bright-field field and Cell Painting field simulators.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cytolens.bench.baseline import Baseline
from cytolens.bench.workloads import vm_hwm_mb
from cytolens.engine import EngineOptions, Runtime, launch

__all__ = ["classify_features", "classify_inference", "profile_throughput", "run_cli_in_process", "run_command",
           "segment_predict", "simulator_throughput"]

Progress = Callable[[str], None]


def _rate(items: float, seconds: float) -> float | None:
    return round(items / seconds, 3) if seconds > 0 else None


# -- classification ---------------------------------------------------------------------------------------------
def _classify_on_rank(runtime: Runtime, size: int, batch: int, images: int, repeats: int) -> dict[str, Any]:
    from cytolens.classify.fit import predict_proba
    from cytolens.classify.models import create_model

    torch.manual_seed(0)
    model = runtime.setup_module(create_model("shpilman2017", num_classes=3, in_chans=1, input_size=size))
    inputs = np.random.default_rng(0).random((images, 1, size, size), dtype=np.float32)
    predict_proba(model, inputs[:batch], batch_size=batch, runtime=runtime)  # warm-up
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        predict_proba(model, inputs, batch_size=batch, runtime=runtime)
        seconds.append(time.perf_counter() - started)
    median = float(np.median(seconds))
    return {"seconds": round(median, 4), "images_per_s": _rate(images, median)}


def classify_inference(precision: str, *, quick: bool = False) -> dict[str, Any]:
    """Images/s of ``predict_proba`` on ``shpilman2017`` (300 × 300 × 1, batch 32; quick: 32 × 32, 16 images).

    Parameters
    ----------
    precision : str
        The engine precision (``32-true``, ``bf16-mixed``).
    quick : bool
        Tiny inputs.
    """
    size, batch, images, repeats = (32, 8, 16, 1) if quick else (300, 32, 128, 3)
    result = launch(_classify_on_rank, EngineOptions(precision=precision), size, batch, images, repeats)
    return {"what": "classify predict_proba", "model": "shpilman2017", "precision": precision,
            "input_shape": [1, size, size], "batch_size": batch, "images": images, **result}


def classify_features(*, quick: bool = False) -> dict[str, Any]:
    """Images/s of the hand-crafted classification features (``extract_features``) on simulated 512 × 512 cells."""
    from cytolens.classify.features import extract_features
    from cytolens.synthetic.microtubules.simulate import cell_rng, simulate_cell

    size, count = (128, 3) if quick else (512, 12)
    images = [simulate_cell(cell_rng(0, k % 3, k), dose=(0.0, 0.1, 1.0)[k % 3], size=size)[0] for k in range(count)]
    extract_features(images[0])  # warm-up: imports and caches
    started = time.perf_counter()
    for image in images:
        extract_features(image)
    seconds = time.perf_counter() - started
    return {"what": "classify hand-crafted features", "unit": "images", "items": count, "size": f"{size}x{size}",
            "seconds": round(seconds, 3), "items_per_s": _rate(count, seconds)}


# -- child commands -------------------------------------------------------------------------------------------
def run_command(args: list[str], *, timeout: float | None = None, cwd: Path | None = None,
                env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a command as a child process; return its exit status, wall seconds, peak RSS and output.

    The peak RSS is the child's own: its ``VmHWM`` read from ``/proc`` while it runs (``os.wait4``'s
    ``ru_maxrss`` where there is no ``/proc``; on Linux that one also counts this process's image at the fork).

    ``env`` is the child's environment (default: this process's; the bench's ``--baseline`` passes one).

    Returns
    -------
    dict
        ``returncode``, ``seconds``, ``peak_rss_mb``, ``stdout``, ``stderr``.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(args, stdout=out, stderr=err, cwd=cwd, env=env)
        deadline = None if timeout is None else started + timeout
        peak: float | None = None
        while True:
            hwm = vm_hwm_mb(process.pid)  # monotonic while the process lives: the last reading is its peak
            if hwm is not None:
                peak = hwm if peak is None else max(peak, hwm)
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        rss = usage.ru_maxrss / (1024.0 * 1024.0) if sys.platform == "darwin" else usage.ru_maxrss / 1024.0
        rss = peak if peak is not None else rss
        return {"returncode": process.returncode, "seconds": round(seconds, 3), "peak_rss_mb": round(rss, 1),
                "stdout": out.read().decode(errors="replace"), "stderr": err.read().decode(errors="replace")}


def run_cli_in_process(args: list[str]) -> dict[str, Any]:
    """Run ``cytolens ARGS`` in this process (quick mode: no interpreter start-up); the same keys as
    :func:`run_command`, with this process's peak RSS."""
    from cytolens.bench.workloads import peak_rss_mb
    from cytolens.cli.app import main

    started = time.perf_counter()
    code: int | str | None = 0
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code
    return {"returncode": code if isinstance(code, int) else (0 if code is None else 1),
            "seconds": round(time.perf_counter() - started, 3), "peak_rss_mb": peak_rss_mb(),
            "stdout": "", "stderr": "" if code in (0, None) else str(code)}


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


# -- whole-image segmentation ------------------------------------------------------------------------------------
def _train_quick_unet(root: Path, quick: bool) -> Path:
    """A one-fold U-Net run folder (``midl2019-quick``'s network) trained for one tiny epoch on simulated fields."""
    from cytolens.core.config import load_config
    from cytolens.data.io import write_tiff
    from cytolens.segment.config import SegmentConfig
    from cytolens.segment.training import run_training
    from cytolens.synthetic.brightfield.simulate import field_rng, simulate_field

    data = root / "train"
    side = 128 if quick else 256
    for k in range(2):
        field = simulate_field(field_rng(0, k), height=side, width=side)
        write_tiff(data / "images" / f"field_{k}.tif", field["brightfield"])
        write_tiff(data / "labels" / f"field_{k}.tif", field["labels"].astype(np.uint8))
    config = load_config("midl2019-quick", SegmentConfig)
    update: dict[str, Any] = {"epochs": 1, "patches_per_epoch": config.batch_size, "max_minutes": None,
                              "validate_every": 1, "precision": "32-true"}
    if quick:
        update.update(model_options={"filters": [4, 8], "bottleneck": 8}, patch_size=32, batch_size=4,
                      patches_per_epoch=4, inference=config.inference.model_copy(update={"tile": 64, "overlap": 8}))
    config = config.model_copy(update=update)
    return run_training(data, config, root / "run", EngineOptions(precision="32-true"))


def _write_field(path: Path, height: int, width: int) -> Path:
    """A bright-field TIFF of ``height`` × ``width``: one simulated field, mirrored into tiles beyond 1440 × 1920."""
    from cytolens.data.io import write_tiff
    from cytolens.synthetic.brightfield.simulate import field_rng, simulate_field

    field = simulate_field(field_rng(1, 0), height=min(height, 1440), width=min(width, 1920))["brightfield"]
    if field.shape != (height, width):
        reps = (-(-height // field.shape[0]), -(-width // field.shape[1]))
        field = np.pad(field, [(0, (r - 1) * s) for r, s in zip(reps, field.shape)], mode="symmetric")
        field = np.ascontiguousarray(field[:height, :width])
    return write_tiff(path, field)


def segment_predict(sizes: list[tuple[int, int]], *, quick: bool = False, progress: Progress | None = None,
                    timeout: float = 1800.0, baseline: Baseline | None = None) -> list[dict[str, Any]]:
    """Time ``cytolens segment predict`` as a child process on one TIFF of each size, writing TIFF (the default)
    and then OME-Zarr (``--format ome-zarr``, this revision only).

    Parameters
    ----------
    sizes : list of (height, width)
        The images; a 64 × 64 one is timed first for the command's fixed cost.
    quick : bool
        A tiny network and tiles.
    progress : callable, optional
        Called with a line per measurement.
    timeout : float
        Seconds a command may take before it is killed (its row then has ``returncode`` -9).
    baseline : Baseline, optional
        Also time the baseline revision's command on each image, right after this one's (rows with ``code``
        ``"baseline"``; this revision's rows have ``code`` ``"current"``).

    Returns
    -------
    list of dict
        Per size and output ``format`` (``tiff``, ``ome-zarr``): ``height``, ``width``, ``megapixels``,
        ``seconds`` (the whole command), ``megapixels_per_s``,
        ``seconds_net`` and ``megapixels_per_s_net`` (less the 64 × 64 command's seconds), ``peak_rss_mb`` (the
        child's), ``returncode`` and, when it failed, ``error``.
    """
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cytolens-bench-segment-") as scratch:
        root = Path(scratch)
        run = _train_quick_unet(root, quick)
        fixed: dict[str, float] = {}
        for height, width in [(64, 64), *sizes]:
            image = _write_field(root / "images" / f"field_{height}x{width}.tif", height, width)
            out = root / f"out_{height}x{width}"
            # What a user gets by default: auto precision (bf16 where the hardware runs it natively).
            args = ["segment", "predict", str(run), str(image), "--out", str(out), "--precision", "auto"]
            sides = [("current", None, "tiff")] + (
                [("baseline", baseline, "tiff")] if baseline is not None and not quick else [])
            if (height, width) != (64, 64):  # the baseline may not write OME-Zarr; the fixed cost is TIFF's
                sides.append(("current", None, "ome-zarr"))
            for code, side, fmt in sides:
                command = args + (["--format", fmt] if fmt != "tiff" else [])
                # Quick mode stays in this process: an interpreter start-up alone would take longer than the work.
                done = (run_cli_in_process(command) if quick
                        else run_command([sys.executable, "-m", "cytolens", *command], timeout=timeout,
                                         env=side.env() if side is not None else None))
                shutil.rmtree(out, ignore_errors=True)
                row = _predict_row(done, height, width, quick, fixed.get(code))
                row["code"] = code
                row["format"] = fmt
                if (height, width) == (64, 64) and done["returncode"] == 0:
                    fixed[code] = done["seconds"]
                rows.append(row)
                if progress is not None:
                    failed = f" — failed: {row['error']}" if "error" in row else ""
                    progress(f"segment predict ({code}, {fmt}) {height}×{width}: {row['seconds']:.1f} s, "
                             f"{row['peak_rss_mb']:.0f} MB peak RSS{failed}")
            image.unlink()
    return rows


def _predict_row(done: dict[str, Any], height: int, width: int, quick: bool, fixed: float | None) -> dict[str, Any]:
    """One ``segment predict`` measurement; ``fixed`` is the 64 × 64 command's seconds (its fixed cost)."""
    mp = height * width / 1e6
    row: dict[str, Any] = {
        "what": "segment predict", "model": "unet (midl2019-quick)" if not quick else "unet (tiny)",
        "precision": "auto", "height": height, "width": width, "megapixels": round(mp, 3), "seconds": done["seconds"],
        "megapixels_per_s": _rate(mp, done["seconds"]), "peak_rss_mb": done["peak_rss_mb"],
        "rss_scope": "bench process" if quick else "command", "returncode": done["returncode"],
    }
    if done["returncode"] != 0:
        row["error"] = _last_line(done["stderr"])
    if (height, width) == (64, 64):
        row["role"] = "fixed cost (start-up, model loading)"
    elif fixed is not None:
        row["seconds_net"] = round(max(done["seconds"] - fixed, 1e-3), 3)
        row["megapixels_per_s_net"] = _rate(mp, row["seconds_net"])
    return row


# -- profiling ------------------------------------------------------------------------------------------------
def profile_throughput(*, quick: bool = False, progress: Progress | None = None) -> dict[str, Any]:
    """Cells/s of ``profile crop``, the classical features and ``profile embed`` on a simulated BBBC021.

    Also returns the Cell Painting simulator's fields/s, measured while writing the dataset.

    Returns
    -------
    dict
        ``{"cellpainting_simulator": row, "profile_crop": row, "classical_features": row, "profile_embed": row}``.
    """
    from cytolens.profile.crops.cell_store import CellStore
    from cytolens.profile.crops.crop import crop_dataset
    from cytolens.profile.embed import embed
    from cytolens.profile.features import classical_features
    from cytolens.synthetic.cellpainting.plan import get_scale
    from cytolens.synthetic.cellpainting.simulate import simulate_cellpainting_dataset

    scale, fields = ("tiny", 4) if quick else ("small", 24)
    design = get_scale(scale)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cytolens-bench-profile-") as scratch:
        root = Path(scratch)
        started = time.perf_counter()
        simulate_cellpainting_dataset(root / "data", scale=scale, seed=0, max_fields=fields)
        seconds = time.perf_counter() - started
        out["cellpainting_simulator"] = {
            "what": "synthetic cellpainting", "unit": "fields", "items": fields,
            "size": f"{design.height}x{design.width}", "seconds": round(seconds, 3),
            "items_per_s": _rate(fields, seconds)}
        started = time.perf_counter()
        store = CellStore(crop_dataset(root / "data", root / "cells"))
        seconds = time.perf_counter() - started
        cells = len(store)
        out["profile_crop"] = {"what": "profile crop", "unit": "cells", "items": cells, "fields": fields,
                               "seconds": round(seconds, 3), "items_per_s": _rate(cells, seconds)}
        if progress is not None:
            progress(f"profile crop: {cells} cells from {fields} fields in {seconds:.1f} s")
        crops = store.crops()
        classical_features(crops[:8])  # warm-up: imports, caches
        started = time.perf_counter()
        classical_features(crops)
        seconds = time.perf_counter() - started
        out["classical_features"] = {"what": "classical features", "unit": "cells", "items": cells,
                                     "seconds": round(seconds, 3), "items_per_s": _rate(cells, seconds)}
        started = time.perf_counter()
        embed(root / "cells", root / "profiles", features="random", options=EngineOptions(precision="32-true"))
        seconds = time.perf_counter() - started
        out["profile_embed"] = {"what": "profile embed (random-weights D, lsgan)", "unit": "cells", "items": cells,
                                "seconds": round(seconds, 3), "items_per_s": _rate(cells, seconds)}
        if progress is not None:
            progress(f"classical features {out['classical_features']['items_per_s']} cells/s, "
                     f"profile embed {out['profile_embed']['items_per_s']} cells/s")
    return out


# -- simulators -------------------------------------------------------------------------------------------------
def simulator_throughput(*, quick: bool = False) -> list[dict[str, Any]]:
    """Items/s of the microtubule cell simulator (512 × 512) and the bright-field field simulator (1440 × 1920).

    The Cell Painting simulator is timed by :func:`profile_throughput`, which needs its dataset anyway.
    """
    from cytolens.synthetic.brightfield.simulate import field_rng, simulate_field
    from cytolens.synthetic.microtubules.simulate import MICROTUBULE_CLASSES, cell_rng, simulate_cell

    rows = []
    size, cells = (64, 3) if quick else (512, 30)
    simulate_cell(cell_rng(0, 0, 0), dose=0.0, size=size)  # warm-up
    started = time.perf_counter()
    for k in range(cells):
        c = k % len(MICROTUBULE_CLASSES)
        simulate_cell(cell_rng(1, c, k), dose=float(MICROTUBULE_CLASSES[c]), size=size)
    seconds = time.perf_counter() - started
    rows.append({"what": "synthetic microtubules", "unit": "cells", "items": cells, "size": f"{size}x{size}",
                 "seconds": round(seconds, 3), "items_per_s": _rate(cells, seconds)})
    height, width, fields = (64, 96, 2) if quick else (1440, 1920, 4)
    simulate_field(field_rng(0, 0), height=64, width=64)  # warm-up
    started = time.perf_counter()
    for k in range(fields):
        simulate_field(field_rng(1, k), height=height, width=width)
    seconds = time.perf_counter() - started
    rows.append({"what": "synthetic brightfield", "unit": "fields", "items": fields, "size": f"{height}x{width}",
                 "seconds": round(seconds, 3), "items_per_s": _rate(fields, seconds)})
    return rows
