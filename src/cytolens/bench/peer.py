"""cytolens against the papers' own stack (Keras on TensorFlow), in the same run, alternating child processes.

For each ``(model, batch)`` the bench runs ``rounds`` rounds of: cytolens at ``32-true``, Keras at fp32 (what the
papers ran), cytolens at ``bf16-mixed`` — each in its own child process, so neither side warms caches or holds
memory for the other, and slow spells of a shared machine fall on both sides alike. The medians of the rounds give
cytolens ÷ Keras per precision of cytolens. Keras is timed by :mod:`cytolens.bench.keras_peer`.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from typing import Any

from cytolens.bench.inference import run_command

__all__ = ["PEER_WORKLOADS", "NOT_INSTALLED", "child_json", "peer_status", "run_peer"]

#: What is timed against Keras: the paper's classifier at its batch, the U-Net at the paper's batch and at 16.
PEER_WORKLOADS: tuple[tuple[str, int], ...] = (("shpilman2017", 32), ("unet", 3), ("unet", 16))

NOT_INSTALLED = "not installed (pip install -e .[peer])"


def peer_status() -> str | None:
    """None when the Keras peer can run here, else why not (one line)."""
    try:
        from cytolens.bench.keras_peer import peer_available
    except ImportError:  # the peer module is missing from this installation
        return "cytolens.bench.keras_peer is missing"
    return None if peer_available() else NOT_INSTALLED


def child_json(done: dict[str, Any]) -> dict[str, Any]:
    """The one JSON object a child printed as its last JSON line on stdout, or ``{"error": ...}``."""
    if done["returncode"] == 0:
        for line in reversed(done["stdout"].strip().splitlines()):
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    break
    lines = [line for line in (done["stderr"] or done["stdout"]).strip().splitlines() if line.strip()]
    return {"error": (lines[-1][:300] if lines else f"exit status {done['returncode']}")}


def _cytolens_args(model: str, precision: str, batch: int, steps: int | None, threads: int | None) -> list[str]:
    args = [sys.executable, "-m", "cytolens", "bench", "train", model, "--precision", precision, "--batch",
            str(batch), "--json"]
    if steps is not None:
        args += ["--steps", str(steps)]
    if threads is not None:
        args += ["--threads", str(threads)]
    return args


def run_peer(*, rounds: int = 3, steps: int = 10, threads: int, timeout: float = 1800.0,
             progress: Callable[[str], None] | None = None, bf16: bool = True) -> list[dict[str, Any]]:
    """Alternate cytolens and Keras in child processes; one row per ``(model, batch)`` with the medians.

    Parameters
    ----------
    rounds : int, default 3
        Rounds of (cytolens 32-true, Keras fp32, cytolens bf16-mixed).
    steps : int, default 10
        Timed steps per child (after the children's own warm-up).
    threads : int
        Threads of both sides.
    timeout : float
        Seconds one child may take.
    progress : callable, optional
        Called with one line per child.
    bf16 : bool, default True
        Also time cytolens at bf16-mixed (False where the CPU emulates bf16; its figures are then None).

    Returns
    -------
    list of dict
        ``model``, ``batch_size``, ``rounds``, ``keras_samples_per_s`` / ``cytolens_32_true_samples_per_s`` /
        ``cytolens_bf16_mixed_samples_per_s`` (medians over rounds, with the per-round lists under ``*_rounds``),
        ``cytolens_32_true_over_keras``, ``cytolens_bf16_mixed_over_keras``, ``keras`` (the last Keras child's
        record: versions, parameters, jit) and ``errors``.
    """
    rows = []
    for model, batch in PEER_WORKLOADS:
        runs: dict[str, list[float]] = {"cytolens_32_true": [], "keras": [], "cytolens_bf16_mixed": []}
        errors: list[str] = []
        keras_record: dict[str, Any] = {}
        for round_ in range(1, rounds + 1):
            for side in [side for side in runs if bf16 or side != "cytolens_bf16_mixed"]:
                if side == "keras":
                    args = [sys.executable, "-m", "cytolens.bench.keras_peer", "train", model, "--batch", str(batch),
                            "--steps", str(steps), "--threads", str(threads), "--json"]
                else:
                    precision = "32-true" if side == "cytolens_32_true" else "bf16-mixed"
                    args = _cytolens_args(model, precision, batch, steps, threads)
                record = child_json(run_command(args, timeout=timeout))
                if "error" in record:
                    errors.append(f"{side} round {round_}: {record['error']}")
                else:
                    runs[side].append(float(record["samples_per_s"]))
                    if side == "keras":
                        keras_record = record
                if progress is not None:
                    shown = record.get("samples_per_s", f"failed: {record.get('error')}")
                    progress(f"peer {model} batch {batch} round {round_}/{rounds} {side}: {shown} samples/s")
        medians = {side: (round(statistics.median(v), 3) if v else None) for side, v in runs.items()}
        row: dict[str, Any] = {"model": model, "batch_size": batch, "rounds": rounds, "steps": steps}
        for side, values in runs.items():
            row[f"{side}_samples_per_s"] = medians[side]
            row[f"{side}_rounds"] = values
        for side in ("cytolens_32_true", "cytolens_bf16_mixed"):
            ours, theirs = medians[side], medians["keras"]
            row[f"{side}_over_keras"] = round(ours / theirs, 3) if ours and theirs else None
        row["keras"] = {k: keras_record.get(k) for k in ("tensorflow", "keras", "parameters", "jit_compile",
                                                           "precision", "optimizer", "peak_rss_mb")}
        row["errors"] = errors
        rows.append(row)
    return rows
