"""What machine a bench ran on, and how fast it multiplies matrices: the ceiling every model is compared with."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from cytolens.engine.precision import cpu_has_native_bf16
from cytolens.engine.threads import available_cpus

__all__ = ["cpu_model", "machine_facts", "matmul_peak"]


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts(threads: int) -> dict[str, Any]:
    """The machine, the software and the threads of this bench (the JSON's ``machine`` object).

    Parameters
    ----------
    threads : int
        torch intra-op threads the measurements use.
    """
    affinity = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    import numpy as np

    from cytolens import __version__

    facts: dict[str, Any] = {
        "host": socket.gethostname(),
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "available_cpus": available_cpus(),
        "affinity": affinity,
        "threads": threads,
        "bf16_native": cpu_has_native_bf16(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cytolens": __version__,
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "platform": platform.platform(),
        # Other processes on a shared machine slow every figure down: the load average says by how much.
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    return facts


def matmul_peak(size: int = 4096, repeats: int = 5) -> dict[str, Any]:
    """GFLOP/s of a ``size`` × ``size`` matrix product at fp32 and at bf16 (median of ``repeats`` after a warm-up).

    Parameters
    ----------
    size : int, default 4096
        Side of the square matrices (``2 size³`` FLOPs per product).
    repeats : int, default 5
        Timed products per dtype.

    Returns
    -------
    dict
        ``{"size", "bf16_size", "repeats", "threads", "fp32_gflops", "bf16_gflops", "fp32_seconds",
        "bf16_seconds"}`` (the seconds are each timed product's). ``bf16_size`` is ``size`` where the CPU multiplies
        bf16 natively (or on a GPU's host), else at most 512: emulated bf16 is too slow for a large product.
    """
    out: dict[str, Any] = {"size": size, "repeats": repeats, "threads": torch.get_num_threads()}
    # Without bf16 instructions a bf16 product is emulated at a small fraction of the fp32 rate (1.4 against 181
    # GFLOP/s on an AVX2-only EPYC); at 4096² the bench sat over 30 minutes in these products there. A smaller
    # product measures the emulated rate in a second.
    bf16_size = size if cpu_has_native_bf16() else min(size, 512)
    out["bf16_size"] = bf16_size
    generator = torch.Generator().manual_seed(0)
    for name, dtype, side in (("fp32", torch.float32, size), ("bf16", torch.bfloat16, bf16_size)):
        a = torch.randn(side, side, generator=generator).to(dtype)
        b = torch.randn(side, side, generator=generator).to(dtype)
        c = torch.empty(side, side, dtype=dtype)
        torch.mm(a, b, out=c)  # warm-up: the library picks its kernel and touches the output
        seconds = []
        for _ in range(repeats):
            started = time.perf_counter()
            torch.mm(a, b, out=c)
            seconds.append(time.perf_counter() - started)
        median = statistics.median(seconds)
        out[f"{name}_gflops"] = round(2.0 * side**3 / median / 1e9, 1)
        out[f"{name}_seconds"] = [round(s, 4) for s in seconds]
    return out
