"""Named, resumable steps: ``RUN/steps.json`` records what a reproduction is and which steps finished.

A step is skipped on a rerun when the ledger says it finished *and* its outputs are still there (a deleted
output makes it run again). An interrupted step is not recorded, so the rerun starts it again and the command
underneath resumes from its own run folder (training resumes inside the fold and the epoch, cropping and
embedding reuse finished chunks).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cytolens.core.atomic import write_text_atomic
from cytolens.core.console import console
from cytolens.core.errors import CytolensError, LayoutError

__all__ = ["LEDGER", "Step", "StepLedger", "StepOutcome", "run_steps"]

#: The ledger's file name inside the run folder.
LEDGER = "steps.json"


@dataclass(frozen=True)
class Step:
    """One step of a protocol.

    Parameters
    ----------
    name : str
        What it does, shown in the progress line (``"train unet"``).
    action : callable
        Does the work; its return value is ignored (everything it makes is a file).
    outputs : tuple of Path
        Files or folders the step leaves; a finished step whose outputs are gone runs again.
    not_needed : str, optional
        Why the step has nothing to do in this run (e.g. ``--data`` replaces the simulation); it is then neither
        run nor recorded.
    """

    name: str
    action: Callable[[], object]
    outputs: tuple[Path, ...] = ()
    not_needed: str | None = None


@dataclass(frozen=True)
class StepOutcome:
    """What happened to a step in this call: ``status`` is ``"ran"``, ``"skipped"`` or ``"not needed"``."""

    name: str
    status: str
    seconds: float = 0.0


@dataclass
class StepLedger:
    """``RUN/steps.json``: the reproduction's identity and its finished steps.

    Parameters
    ----------
    folder : Path
        The run folder.
    identity : mapping
        What makes two calls the same reproduction (paper, scale, seed, data, size overrides); a folder holding
        another reproduction is refused instead of mixing two runs' outputs.
    """

    folder: Path
    identity: Mapping[str, Any]
    finished: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.folder / LEDGER

    @classmethod
    def open(cls, folder: str | Path, identity: Mapping[str, Any]) -> StepLedger:
        """Open the ledger of ``folder``, creating the folder; check a folder already used is this reproduction.

        Raises
        ------
        LayoutError
            If ``folder`` is a file, or holds files but no ledger (not a reproduce folder).
        CytolensError
            If the ledger records another reproduction.
        """
        from cytolens.core.files import read_json_object

        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise LayoutError("is a file; --out must be a folder", path=folder)
        ledger = cls(folder, dict(identity))
        if ledger.path.is_file():
            stored = read_json_object(ledger.path)
            recorded = stored.get("identity", {})
            if recorded != ledger.identity:
                different = ", ".join(f"{key} {recorded.get(key)!r}" for key in ledger.identity
                                      if recorded.get(key) != ledger.identity[key])
                raise CytolensError(f"holds another reproduction ({different}); give a new --out, or the same "
                                    "options to resume it", path=folder)
            ledger.finished = dict(stored.get("finished", {}))
        elif folder.is_dir() and any(folder.iterdir()):
            # Refused rather than written into: the steps would overwrite whatever this folder holds.
            raise LayoutError(f"is not empty and has no {LEDGER} (not a reproduce run folder); give a new or "
                              "empty folder", path=folder)
        folder.mkdir(parents=True, exist_ok=True)
        ledger.save()
        return ledger

    def is_finished(self, step: Step) -> bool:
        """Whether ``step`` finished in an earlier call and its outputs are still there."""
        return step.name in self.finished and all(path.exists() for path in step.outputs)

    def record(self, step: Step, seconds: float) -> None:
        """Record ``step`` as finished (written atomically: a crash leaves the previous ledger)."""
        finished_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.finished[step.name] = {"seconds": round(seconds, 1), "finished": finished_at}
        self.save()

    def save(self) -> None:
        text = json.dumps({"identity": self.identity, "finished": self.finished}, indent=2) + "\n"
        write_text_atomic(self.path, text)


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def run_steps(steps: list[Step], ledger: StepLedger) -> list[StepOutcome]:
    """Run ``steps`` in order, skipping finished ones, with one progress line per step on stderr.

    Lines read ``step 3/8 train unet: done, skipped``, ``step 1/8 simulate ...: not needed (--data given)``, or
    ``step 3/8 train unet ...`` when it starts and ``step 3/8 train unet: done in 4 min 02 s`` when it ends.

    Returns
    -------
    list of StepOutcome
        One per step, in order.
    """
    outcomes = []
    for number, step in enumerate(steps, start=1):
        label = f"step {number}/{len(steps)} {step.name}"
        if step.not_needed is not None:
            console.print(f"{label}: not needed ({step.not_needed})", markup=False)
            outcomes.append(StepOutcome(step.name, "not needed"))
        elif ledger.is_finished(step):
            console.print(f"{label}: done, skipped", markup=False)
            outcomes.append(StepOutcome(step.name, "skipped"))
        else:
            console.print(f"{label} ...", markup=False)
            start = time.perf_counter()
            step.action()
            seconds = time.perf_counter() - start
            ledger.record(step, seconds)
            console.print(f"{label}: done in {_duration(seconds)}", markup=False)
            outcomes.append(StepOutcome(step.name, "ran", seconds))
    return outcomes
