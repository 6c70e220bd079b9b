"""The engine's malloc settings: freed blocks are reused without page faults; launch() applies them; opt-out works.

Each check runs in a fresh interpreter: the settings are per process and cannot be undone.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys

import pytest

glibc_only = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                                reason="mallopt tuning applies to glibc's malloc only")

# Twelve repeats of a small training step whose maps (4 × 16 × 384 × 384, 38 MB) are over glibc's 32 MB mmap ceiling;
# the minor page faults of each step.
_STEPS = """
import json, resource, sys, torch
from cytolens.engine.allocator import allocator_tuned, tune_allocator
tuned = tune_allocator() if sys.argv[1] == "tune" else False
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.randn(4, 16, 384, 384)
w = torch.randn(16, 16, 3, 3, requires_grad=True)
per_step = []
for _ in range(12):
    before = faults()
    y = torch.nn.functional.conv2d(x, w, padding=1)
    (torch.relu(y) * 2.0).sum().backward()
    del y
    per_step.append(faults() - before)
print(json.dumps({"tuned": tuned, "again": tune_allocator(), "state": allocator_tuned(), "faults": per_step}))
"""

# launch() tunes malloc before it runs the function, on the one-process path every command takes.
_LAUNCH = """
import json
from cytolens.engine import EngineOptions, launch
from cytolens.engine.allocator import allocator_tuned
def probe(runtime):
    return allocator_tuned()
print(json.dumps({"before": allocator_tuned(), "inside": launch(probe, EngineOptions(accelerator="cpu"))}))
"""


def _run(code: str, *args: str, env: dict[str, str] | None = None) -> dict:
    environment = {key: value for key, value in os.environ.items() if key != "CYTOLENS_MALLOC"}
    environment.update(env or {})
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True,
                         env=environment, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


@glibc_only
def test_training_steps_reuse_freed_blocks_without_page_faults() -> None:
    tuned = _run(_STEPS, "tune")
    assert tuned["tuned"] and tuned["again"] and tuned["state"]
    # Each step writes several 38 MB maps (9,400 pages of 4 kB each). With glibc's defaults every one is a fresh
    # mmap, faulted in page by page, every step; tuned, the heap stops growing after the first steps and later
    # steps reuse it (the heap may take a few steps to reach its size, and now and then a later step still grows
    # it by one block: the median of the last half, not the maximum).
    assert statistics.median(tuned["faults"][-6:]) < 500, tuned


@glibc_only
def test_launch_tunes_malloc_before_the_work() -> None:
    assert _run(_LAUNCH) == {"before": False, "inside": True}


def test_cytolens_malloc_system_keeps_the_c_library_defaults() -> None:
    kept = _run(_STEPS, "tune", env={"CYTOLENS_MALLOC": "system"})
    assert kept["tuned"] is False and kept["again"] is False and kept["state"] is False
