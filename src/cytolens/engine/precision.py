"""Numeric precision of a run: what ``--precision auto`` means on this machine, and what Fabric is given.

``auto`` picks bf16 mixed precision only where the hardware multiplies bf16 natively (a CPU with AVX-512 BF16
or AMX, a CUDA GPU with bf16 support); elsewhere bf16 is emulated and slower than fp32, so ``auto`` is
``32-true`` there. ``16-mixed`` (fp16 with loss scaling) exists on CUDA only.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from cytolens.core.errors import OptionError, check_choice

__all__ = ["PRECISIONS", "cpu_has_native_bf16", "resolve_precision"]

#: The values ``--precision`` and a config's ``precision`` take.
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")

_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX-512 BF16 or AMX-BF16), read from ``/proc/cpuinfo``."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:  # not Linux: no way to tell cheaply, so stay with fp32
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return any(flag in flags for flag in _CPU_BF16_FLAGS)


def resolve_precision(requested: str, device_type: str) -> str:
    """The precision a run uses: ``requested`` with ``auto`` decided for ``device_type``.

    Parameters
    ----------
    requested : {"auto", "32-true", "bf16-mixed", "16-mixed"}
    device_type : {"cpu", "cuda"}

    Returns
    -------
    str
        One of ``"32-true"``, ``"bf16-mixed"``, ``"16-mixed"``.

    Raises
    ------
    OptionError
        For an unknown value, or ``16-mixed`` on a CPU (which has no fp16 autocast worth having).
    """
    check_choice("precision", requested, PRECISIONS)
    if requested == "auto":
        if device_type == "cuda":
            import torch  # here, so that reading PRECISIONS (every command line's options) does not import torch

            return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
        return "bf16-mixed" if cpu_has_native_bf16() else "32-true"
    if requested == "16-mixed" and device_type != "cuda":
        raise OptionError("precision '16-mixed' needs a CUDA GPU; on a CPU use 'bf16-mixed' or '32-true'")
    return requested
