"""The whole ``cytolens bench``: machine, matrix-multiply peak, training, inference, the Keras peer, ratios.

Every training figure of the full bench comes from a child process (``python -m cytolens bench train ... --json``)
so its peak RSS is that workload's alone; ``--quick`` runs everything in this process at tiny sizes (its figures
only show that the machinery works). The JSON layout is documented in ``benchmarks/README.md``.
"""

from __future__ import annotations

import datetime as _dt
import json
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cytolens.bench.baseline import Baseline, prepare_baseline
from cytolens.bench.inference import (
    classify_features, classify_inference, profile_throughput, run_command, segment_predict, simulator_throughput,
)
from cytolens.bench.peer import child_json, peer_status, run_peer
from cytolens.bench.report import markdown_report
from cytolens.core.atomic import write_text_atomic
from cytolens.core.errors import OptionError

__all__ = ["PRECISIONS", "SECTIONS", "bench_precisions", "parse_sections", "result_paths", "run_bench"]

#: The parts of the bench ``--only`` chooses among (the machine facts and the matmul peak are always measured).
SECTIONS = ("training", "inference", "peer")
#: The precisions every model trains at.
PRECISIONS = ("32-true", "bf16-mixed")
FORMAT = "cytolens-bench/1"

Progress = Callable[[str], None]


def parse_sections(only: str | None) -> list[str]:
    """The sections ``--only`` names (comma-separated), all when None.

    Raises
    ------
    OptionError
        For an unknown section.
    """
    if only is None:
        return list(SECTIONS)
    chosen = [part.strip() for part in only.split(",") if part.strip()]
    unknown = [part for part in chosen if part not in SECTIONS]
    if unknown or not chosen:
        raise OptionError(f"--only takes a comma-separated list of {', '.join(SECTIONS)}; got {only!r}")
    return [section for section in SECTIONS if section in chosen]


def bench_precisions(quick: bool, peak: dict[str, Any]) -> tuple[tuple[str, ...], str | None]:
    """The precisions the full bench trains at here, and why one is left out.

    bf16-mixed is measured where the hardware multiplies bf16 (a CPU with AVX-512 BF16 or AMX, or a GPU). On a
    CPU without, torch emulates bf16 at about 1 % of the fp32 rate: each bf16 row would take hours, and
    ``--precision auto`` trains in fp32 there anyway. ``--quick`` keeps both (its tiny sizes are fast either way).

    Parameters
    ----------
    quick : bool
    peak : dict
        The run's :func:`~cytolens.bench.machine.matmul_peak`, quoted in the note.

    Returns
    -------
    (precisions, note)
        ``note`` is None when every precision is measured.
    """
    import torch

    from cytolens.engine.precision import cpu_has_native_bf16

    if quick or cpu_has_native_bf16() or torch.cuda.is_available():
        return PRECISIONS, None
    return ("32-true",), (
        f"bf16-mixed not measured: this CPU has no bf16 instructions (AVX-512 BF16 or AMX), so bf16 is emulated "
        f"({peak['bf16_gflops']} GFLOP/s against {peak['fp32_gflops']} fp32) and `--precision auto` trains in "
        "fp32; `cytolens bench train MODEL --precision bf16-mixed` times one anyway")


def result_paths(out: Path, *, quick: bool) -> tuple[Path, Path]:
    """``OUT/<YYYY-MM-DD>-<host>.json`` and ``.md`` (``-quick`` before the suffix in quick mode)."""
    stem = f"{_dt.date.today().isoformat()}-{socket.gethostname().split('.')[0]}" + ("-quick" if quick else "")
    return out / f"{stem}.json", out / f"{stem}.md"


def _train_child(model: str, precision: str, batch: int, threads: int, steps: int | None,
                 baseline: Baseline | None = None) -> dict[str, Any]:
    # ``-m cytolens.bench``, not ``-m cytolens bench``: a baseline revision's CLI may not have the bench command.
    args = [sys.executable, "-m", "cytolens.bench", "train", model, "--precision", precision, "--batch",
            str(batch), "--threads", str(threads), "--json"]
    if steps is not None:
        args += ["--steps", str(steps)]
    done = run_command(args, timeout=3600, env=baseline.env() if baseline is not None else None)
    record = child_json(done)
    if "error" in record:
        record = {"model": model, "precision": precision, "batch_size": batch, **record}
    record["rss_scope"] = "child process"
    # peak_rss_mb is the child's own VmHWM (what it reports); the wall time includes its start-up.
    record["child_seconds"] = done["seconds"]
    return record


def _training(quick: bool, threads: int, steps: int | None, progress: Progress, *,
              precisions: tuple[str, ...] = PRECISIONS, models: list[str] | None = None,
              baseline: Baseline | None = None, rounds: int = 1) -> list[dict[str, Any]]:
    from cytolens.bench.workloads import TRAINING_MODELS, full_plan, measure_training, quick_models

    if quick:
        plan = [(model, 4 if TRAINING_MODELS[model].capability != "classify" else 8) for model in quick_models()]
    else:
        plan = full_plan()
    if models is not None:
        plan = [(model, batch) for model, batch in plan if model in models]
    # With a baseline, each of its measurements follows the same one of this revision: the two alternate.
    sides: list[Baseline | None] = [None] + ([baseline] if baseline is not None and not quick else [])
    # Against a baseline, a figure may be taken in several rounds of the pair: one pair is at the mercy of a
    # shared machine's moods, the median of the rounds' ratios much less so.
    repeats = rounds if len(sides) > 1 else 1
    rows = []
    total = len(plan) * len(precisions) * len(sides) * repeats
    pairs = [(round_, side) for round_ in range(1, repeats + 1) for side in sides]
    for model, batch in plan:
        for precision in precisions:
            for round_, side in pairs:
                started = time.perf_counter()
                if quick:
                    try:
                        row = measure_training(model, precision=precision, batch=batch, steps=steps or 2, warmup=1,
                                               threads=threads, quick=True)
                        row["rss_scope"] = "bench process"
                    except Exception as exc:  # noqa: BLE001 - a broken model is a row with its error, not the end
                        row = {"model": model, "precision": precision, "batch_size": batch,
                               "error": repr(exc)[:300]}
                else:
                    row = _train_child(model, precision, batch, threads, steps, side)
                row["code"] = "current" if side is None else "baseline"
                if repeats > 1:
                    row["round"] = round_
                rows.append(row)
                if "error" in row:
                    line = f"failed: {row['error']}"
                else:
                    line = (f"{row['samples_per_s']:.2f} samples/s, {row['seconds_per_step_median']:.3f} s/step, "
                            f"data wait {_pct(row.get('data_wait_fraction'))}, "
                            f"peak RSS {row['peak_rss_mb']:.0f} MB")
                which = row["code"] + (f", round {round_}/{repeats}" if repeats > 1 else "")
                progress(f"[{len(rows)}/{total}] train {model} {precision} batch {batch} ({which}): {line} "
                         f"({time.perf_counter() - started:.0f} s)")
    return rows


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _inference(quick: bool, progress: Progress, baseline: Baseline | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"classify": []}
    for precision in PRECISIONS:
        row = classify_inference(precision, quick=quick)
        out["classify"].append(row)
        progress(f"classify predict {precision}: {row['images_per_s']} images/s")
    sizes = [(96, 128)] if quick else [(1440, 1920), (10_000, 10_000)]
    out["segment_predict"] = segment_predict(sizes, quick=quick, progress=progress, baseline=baseline)
    profile = profile_throughput(quick=quick, progress=progress)
    out["throughput"] = [classify_features(quick=quick), profile["profile_crop"], profile["classical_features"],
                      profile["profile_embed"]]
    out["simulators"] = [*simulator_throughput(quick=quick), profile["cellpainting_simulator"]]
    for row in out["simulators"]:
        progress(f"{row['what']} {row['size']}: {row['items_per_s']} {row['unit']}/s")
    return out


def _ratios(result: dict[str, Any]) -> dict[str, Any]:
    """Ratios derived from the rows: bf16 ÷ fp32 per model, cytolens ÷ Keras, and segment predict's memory growth."""
    ratios: dict[str, Any] = {"bf16_over_fp32": [], "cytolens_over_keras": [], "segment_predict": None,
                              "ome_zarr_over_tiff": [], "over_baseline": []}
    # (model, batch) -> round -> "current" / "baseline" -> precision -> samples/s
    speeds: dict[tuple[str, int], dict[int, dict[str, dict[str, float]]]] = {}
    for row in result.get("training", []):
        if "error" not in row:
            side = "baseline" if row.get("code") == "baseline" else "current"
            speeds.setdefault((row["model"], row["batch_size"]), {}).setdefault(row.get("round", 1), {}).setdefault(
                side, {})[row["precision"]] = row["samples_per_s"]
    for (model, batch), by_round in speeds.items():
        paired = [(r["current"], r["baseline"]) for r in by_round.values() if r.get("current") and r.get("baseline")]
        if paired:
            ratios["over_baseline"].append({"model": model, "batch_size": batch, **_over_baseline(paired)})
        bf16 = [r["current"]["bf16-mixed"] / r["current"]["32-true"] for r in by_round.values()
                if "32-true" in r.get("current", {}) and "bf16-mixed" in r.get("current", {})]
        if bf16:
            ratios["bf16_over_fp32"].append({"model": model, "batch_size": batch,
                                             "ratio": round(statistics.median(bf16), 3)})
    peer = result.get("peer") or {}
    for row in peer.get("rows", []):
        ratios["cytolens_over_keras"].append({
            "model": row["model"], "batch_size": row["batch_size"],
            "32-true": row["cytolens_32_true_over_keras"], "bf16-mixed": row["cytolens_bf16_mixed_over_keras"]})
    predicted = (result.get("inference") or {}).get("segment_predict", [])
    predicts = [r for r in predicted if r.get("returncode") == 0 and "role" not in r
                and r.get("code", "current") == "current" and r.get("format", "tiff") == "tiff"]
    written = {(r["height"], r["width"]): r for r in predicted
               if r.get("format") == "ome-zarr" and r.get("returncode") == 0}
    for row in predicts:  # what OME-Zarr output costs over TIFF, in memory and time
        if (zarr := written.get((row["height"], row["width"]))) is not None:
            ratios["ome_zarr_over_tiff"].append({
                "size": f"{row['height']}x{row['width']}",
                "peak_rss": round(zarr["peak_rss_mb"] / row["peak_rss_mb"], 3),
                "seconds": round(zarr["seconds"] / row["seconds"], 3)})
    if len(predicts) >= 2:
        small, large = predicts[0], predicts[-1]
        ratios["segment_predict"] = {
            "sizes": [f"{small['height']}x{small['width']}", f"{large['height']}x{large['width']}"],
            "peak_rss_large_over_small": round(large["peak_rss_mb"] / small["peak_rss_mb"], 3),
        }
        before = {(r["height"], r["width"]): r for r in predicted
                  if r.get("code") == "baseline" and r.get("returncode") == 0 and "role" not in r}

        for row in predicts:
            match = before.get((row["height"], row["width"]))
            if match is not None:
                ratios["segment_predict"].setdefault("megapixels_per_s_over_baseline", {})[
                    f"{row['height']}x{row['width']}"] = round(row["megapixels_per_s"] / match["megapixels_per_s"], 3)
    return ratios


def _over_baseline(paired: list[tuple[dict[str, float], dict[str, float]]]) -> dict[str, Any]:
    """This revision ÷ the baseline, from ``(now, before)`` samples/s by precision of each round: per precision,
    at this revision's fastest against the baseline's fp32 step (the claim a user feels) and against its
    fastest; medians over the rounds, each round's own ratios under ``rounds`` when there are several."""
    per_round = []
    for now, before in paired:
        entry = {p: now[p] / before[p] for p in PRECISIONS if p in now and p in before}
        if "32-true" in before:
            entry["best_over_baseline_32_true"] = max(now.values()) / before["32-true"]
        entry["best_over_baseline_best"] = max(now.values()) / max(before.values())
        per_round.append(entry)
    keys = [*PRECISIONS, "best_over_baseline_32_true", "best_over_baseline_best"]
    out: dict[str, Any] = {k: round(statistics.median(e[k] for e in per_round if k in e), 3)
                           for k in keys if any(k in e for e in per_round)}
    if len(per_round) > 1:
        out["rounds"] = [{k: round(v, 3) for k, v in e.items()} for e in per_round]
    return out


def _peak_fractions(rows: list[dict[str, Any]], peak: dict[str, Any]) -> None:
    """Add each row's achieved GFLOP/s as a fraction of the same run's matmul peak at its precision.

    A model's FLOPs are its 32-true row's count, for both precisions (the work is the same; FLOPs are counted
    once per model and batch). The row's own count stays under ``flops_per_sample_counted`` when they differ.
    The current code and the baseline keep separate counts: a faster revision may do less work for the same
    model (the GAN generator's phase convolution does 2.8x fewer multiply-adds than upsample + 5x5).
    """
    def key(r: dict[str, Any]) -> tuple[Any, Any, Any]:
        return r.get("model"), r.get("batch_size"), r.get("code")

    reference = {key(r): r.get("flops_per_sample") for r in rows
                 if r.get("precision") == "32-true" and r.get("flops_per_sample")}
    for row in rows:
        flops = reference.get(key(row)) or row.get("flops_per_sample")
        if flops and row.get("flops_per_sample") and flops != row["flops_per_sample"]:
            row["flops_per_sample_counted"] = row["flops_per_sample"]
            row["flops_per_sample"] = flops
        if flops and row.get("samples_per_s"):
            row["achieved_gflops"] = round(flops * row["samples_per_s"] / 1e9, 3)
        gflops = row.get("achieved_gflops")
        ceiling = peak.get("bf16_gflops" if row.get("precision") == "bf16-mixed" else "fp32_gflops")
        row["fraction_of_matmul_peak"] = round(gflops / ceiling, 4) if gflops and ceiling else None


def run_bench(out: Path, *, quick: bool = False, only: str | None = None, threads: int | None = None,
              steps: int | None = None, peer_rounds: int = 3, progress: Progress | None = None,
              models: list[str] | None = None, baseline: str | None = None, rounds: int = 1
              ) -> tuple[Path, Path, dict[str, Any]]:
    """Measure this machine and write ``OUT/<date>-<host>.json`` and ``.md``.

    Parameters
    ----------
    out : Path
        The folder of the results (created).
    quick : bool
        Tiny sizes, a couple of steps, everything in this process, no 10,000 × 10,000 image, no peer.
    only : str, optional
        Comma-separated sections among ``training``, ``inference``, ``peer``.
    threads : int, optional
        torch threads of every measurement (default: the CPUs this process may use).
    steps : int, optional
        Timed training steps per measurement (default: adaptive, see
        :func:`~cytolens.bench.workloads.measure_training`).
    peer_rounds : int
        Rounds of the cytolens/Keras alternation.
    progress : callable, optional
        Called with one line per measurement.
    models : list of str, optional
        Train only these models (default: every one).
    baseline : str, optional
        A git revision of this checkout: its training steps and ``segment predict`` are measured too, each right
        after this revision's, and ``ratios.over_baseline`` compares them (:mod:`cytolens.bench.baseline`).
    rounds : int, default 1
        With ``baseline``: every training figure is taken this many times on each side, alternating, and the
        ratios are the medians of the rounds' ratios (the rows carry their ``round``).

    Returns
    -------
    (json_path, markdown_path, result)
    """
    from cytolens.bench.machine import machine_facts, matmul_peak
    from cytolens.engine import configure_threads

    sections = parse_sections(only)
    if peer_rounds < 1 or rounds < 1:
        raise OptionError(f"--peer-rounds and --rounds must be ≥ 1, got {peer_rounds} and {rounds}")
    say = progress or (lambda line: None)
    if models is not None:
        from cytolens.bench.workloads import TRAINING_MODELS

        unknown = [m for m in models if m not in TRAINING_MODELS]
        if unknown or not models:
            raise OptionError(f"--models takes a comma-separated list of {', '.join(TRAINING_MODELS)}; "
                              f"got {','.join(models)!r}")
    side = prepare_baseline(baseline) if baseline is not None else None
    started = time.perf_counter()
    used = configure_threads(threads)
    result: dict[str, Any] = {"format": FORMAT, "quick": quick, "sections": sections,
                              "machine": machine_facts(used)}
    result["matmul_peak"] = matmul_peak(512, 3) if quick else matmul_peak()
    say(f"matmul peak: {result['matmul_peak']['fp32_gflops']} GFLOP/s fp32, "
        f"{result['matmul_peak']['bf16_gflops']} GFLOP/s bf16 ({used} threads)")
    if side is not None:
        result["baseline"] = {**side.describe(), "rounds": rounds}
    precisions, note = bench_precisions(quick, result["matmul_peak"])
    result["precisions"] = list(precisions)
    if note is not None:
        result["precision_note"] = note
        say(note)
    result["training"] = (_training(quick, used, steps, say, precisions=precisions, models=models, baseline=side,
                                    rounds=rounds)
                          if "training" in sections else [])
    _peak_fractions(result["training"], result["matmul_peak"])
    result["inference"] = _inference(quick, say, side) if "inference" in sections else {}
    if "peer" not in sections:
        result["peer"] = {"status": "not measured (--only)", "rows": []}
    elif quick:
        result["peer"] = {"status": "not measured (--quick)", "rows": []}
    elif (why := peer_status()) is not None:
        result["peer"] = {"status": why, "rows": []}
        say(f"peer: {why}")
    else:
        rows = run_peer(rounds=peer_rounds, steps=steps or 10, threads=used, progress=say,
                        bf16="bf16-mixed" in precisions)
        result["peer"] = {"status": "measured", "rounds": peer_rounds, "threads": used, "rows": rows}
    result["ratios"] = _ratios(result)
    result["machine"]["load_average_after"] = _load()
    result["seconds"] = round(time.perf_counter() - started, 1)
    json_path, md_path = result_paths(Path(out), quick=quick)
    Path(out).mkdir(parents=True, exist_ok=True)
    write_text_atomic(json_path, json.dumps(result, indent=2) + "\n")
    write_text_atomic(md_path, markdown_report(result))
    return json_path, md_path, result


def _load() -> list[float] | None:
    import os

    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None

