"""glibc's ``malloc`` set up for training steps on the CPU: large blocks are reused, not returned and faulted in.

PyTorch's CPU allocator is the C library's ``malloc``. glibc serves every block over 32 MB with its own
``mmap`` and gives it back with ``munmap`` when the tensor is freed, so each training step asks the kernel for
fresh zeroed pages for every activation and gradient map it writes, and touches them one page fault at a time.
For the paper's classification network at batch 32 (16 × 299 × 299 and 64 × 147 × 147 maps of 180 MB each), that
page-fault work was half of the step on a 2-core CPU: a zero fill of one map took 65 ms, a 2×2 max-pool 73 ms.
With ``mmap`` off and the heap never trimmed, freed blocks stay in the process and the next step reuses them:
``cytolens bench`` measured 2.0× the network's samples/s, 1.0–2.2× for the segmentation networks and 1.15× for
the GANs, against the revision before (``benchmarks/results/2026-12-07-vm-avx2-malloc.md``).

The cost is memory: blocks freed in the middle of the heap cannot always serve a later, larger request, so the
heap grows past what the live tensors need, and memory freed after a peak stays with the process until it exits.
The bench measured 0–32% more peak RSS in training. :func:`tune_allocator` is called by
:func:`cytolens.engine.launch` on every rank; ``CYTOLENS_MALLOC=system`` leaves ``malloc`` as it is. On other C
libraries (musl, macOS, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import sys

__all__ = ["ALLOCATOR_VARIABLE", "allocator_tuned", "tune_allocator"]

log = logging.getLogger(__name__)

#: ``system`` keeps glibc's defaults; anything else (or unset) tunes them.
ALLOCATOR_VARIABLE = "CYTOLENS_MALLOC"

# mallopt(3) parameters (malloc.h). M_TRIM_THRESHOLD -1 disables trimming; M_MMAP_MAX 0 disables mmap'd blocks.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_state = {"done": False, "tuned": False}


def tune_allocator() -> bool:
    """Keep freed memory for reuse: glibc ``mallopt(M_MMAP_MAX, 0)`` and ``mallopt(M_TRIM_THRESHOLD, -1)``.

    Idempotent; later calls return the first call's answer.

    Returns
    -------
    bool
        True when glibc's ``malloc`` was tuned in this process; False on another C library, when
        ``CYTOLENS_MALLOC=system``, or when ``mallopt`` refused.
    """
    if _state["done"]:
        return _state["tuned"]
    _state["done"] = True
    if os.environ.get(ALLOCATOR_VARIABLE, "").strip().lower() == "system":
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Trimming first: with mmap off but trimming on, every step would hand the heap's top back to the kernel.
    tuned = bool(mallopt(_M_TRIM_THRESHOLD, -1)) and bool(mallopt(_M_MMAP_MAX, 0))
    if not tuned:
        log.debug("mallopt refused the allocator settings; glibc's defaults stay")
    _state["tuned"] = tuned
    return tuned


def allocator_tuned() -> bool:
    """Whether :func:`tune_allocator` has tuned ``malloc`` in this process (it changes nothing itself)."""
    return bool(_state["tuned"])
