"""CPU threads for torch, counted from the CPUs this process may use, not the machine's cores."""

from __future__ import annotations

import os

import torch

__all__ = ["available_cpus", "configure_threads"]


def available_cpus() -> int:
    """CPUs this process may run on (``sched_getaffinity``: containers, ``taskset``, SLURM's cgroups)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def configure_threads(num_threads: int | None, *, local_processes: int = 1) -> int:
    """Set torch's intra-op threads and return the number in use.

    Parameters
    ----------
    num_threads : int or None
        Threads per process. ``None``: ``OMP_NUM_THREADS`` if set, else the available CPUs shared evenly among
        the ``local_processes`` processes of this machine (torch's own default counts every core of the
        machine, which oversubscribes a container or a node shared by several ranks).
    local_processes : int, default 1
        Ranks running on this machine.
    """
    if num_threads is None and not os.environ.get("OMP_NUM_THREADS"):
        num_threads = max(1, available_cpus() // max(1, local_processes))
    if num_threads is not None:
        torch.set_num_threads(max(1, int(num_threads)))
    return torch.get_num_threads()
