"""The one fit loop of every capability: epochs of steps, validation, early stopping, a time budget, checkpoints.

A capability describes its training as a :class:`TrainTask` (how many steps an epoch has, what one step does,
how to validate, what its state is); :class:`FitLoop` runs it. The loop owns the position (epoch, batch in the
epoch, global step), the history, the best weights and the stopping rules, and writes a resume checkpoint
every ``checkpoint_every`` steps and at every epoch end. A run killed at any moment and started again continues
from its last checkpoint — inside an epoch — and says from where.

Randomness never lives in generator state that a checkpoint would have to carry: before every step the loop
seeds torch and numpy from ``(seed, step, rank)``, and tasks draw their batches from ``(seed, epoch, index)``.
So a resumed run repeats exactly what an uninterrupted one does (with ``--deterministic``, to the last bit).
"""

from __future__ import annotations

import copy
import json
from abc import ABC, abstractmethod
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cytolens.core.console import console
from cytolens.engine.checkpoint import load_checkpoint, loading_state_from, save_checkpoint
from cytolens.engine.runtime import Runtime
from cytolens.engine.seeds import derive_seed

__all__ = ["EarlyStopping", "FitLoop", "FitResult", "LoopSettings", "Position", "TrainTask", "TimeBudget"]


@dataclass(frozen=True)
class Position:
    """Where a step lies: ``epoch`` (from 1), ``index`` (its batch in the epoch, from 0), ``step`` (from 1)."""

    epoch: int
    index: int
    step: int


class TrainTask(ABC):
    """What a capability supplies to :class:`FitLoop`: the abstract methods, and the hooks that apply (the hooks'
    defaults do nothing)."""

    @abstractmethod
    def steps_per_epoch(self) -> int:
        """Steps in one epoch (the same for every epoch)."""

    @abstractmethod
    def train_step(self, position: Position) -> dict[str, float]:
        """Draw the batch of ``position`` (this rank's share), update the model, return the step's numbers.

        The record may hold ``samples`` (images seen by all ranks together) and ``data_seconds`` (time spent
        waiting for the batch); every other value (a number, or a 0-d tensor left on the device so the step
        needs no host sync) is averaged into the epoch's and the log's rows.
        """

    def end_epoch(self, epoch: int) -> None:
        """After the last step of ``epoch`` (a learning-rate schedule steps here)."""

    def validate(self, epoch: int) -> dict[str, float]:
        """Validation numbers, identical on every rank (all-reduce them). Empty: no validation."""
        return {}

    def after_step(self, position: Position, *, last: bool) -> None:
        """After every step (sample grids at a cadence, progress)."""

    def after_checkpoint(self, epochs: list[dict[str, Any]], steps_log: list[dict[str, Any]]) -> None:
        """After the resume checkpoint was written, on rank 0, with the history so far (curves, logs)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Model, optimiser and scheduler state (tensors on the CPU)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""

    def model_state(self) -> dict[str, torch.Tensor]:
        """The weights kept for the best epoch (a copy is taken)."""
        return {}


@dataclass
class EarlyStopping:
    """Stop when ``monitor`` has not improved for ``patience`` validated epochs; ties are no improvement.

    No stop comes before epoch ``min_epochs`` (Keras' ``start_from_epoch``: a warm-up in which a network that
    has not started to learn is not judged); the best epoch is tracked from the first.
    """

    monitor: str
    patience: int | None = None
    mode: str = "max"
    min_epochs: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    waited: int = 0

    def improved(self, score: float) -> bool:
        signed = score if self.mode == "max" else -score
        return signed > self.best_score

    def update(self, score: float, epoch: int) -> tuple[bool, bool]:
        """Record a validated epoch; return ``(improved, stop)``."""
        if self.improved(score):
            self.best_score = score if self.mode == "max" else -score
            self.best_epoch = epoch
            self.waited = 0
            return True, False
        self.waited += 1
        return False, self.patience is not None and self.waited >= self.patience and epoch >= self.min_epochs

    @property
    def best(self) -> float:
        return self.best_score if self.mode == "max" else -self.best_score


@dataclass
class TimeBudget:
    """Stop *before* a unit of work (an epoch, or a step) that would end past ``max_minutes``.

    Judged by the mean duration of the units run so far in this session, so a run does not overrun its budget
    by a whole epoch.
    """

    max_minutes: float | None
    started: float = field(default_factory=time.perf_counter)
    durations: list[float] = field(default_factory=list)

    def next_would_overrun(self) -> bool:
        if self.max_minutes is None or not self.durations:
            return False
        elapsed = time.perf_counter() - self.started
        return elapsed + float(np.mean(self.durations)) > 60 * self.max_minutes


@dataclass(frozen=True)
class LoopSettings:
    """How long and how a :class:`FitLoop` trains.

    Parameters
    ----------
    seed : int
        Seeds every step (with the step and the rank).
    max_epochs, max_steps : int or None
        Whichever comes first ends training; at least one is needed.
    validate_every : int
        Validate after every that many epochs (and after the last); 0 never.
    monitor, mode, patience, min_epochs
        Early stopping on a validation number, never before epoch ``min_epochs``; ``monitor=None`` keeps no best
        weights.
    max_minutes : float or None
        The time budget of this session; ``budget_unit`` is ``"epoch"`` or ``"step"``.
    checkpoint_every : int or None
        Steps between resume checkpoints (besides every epoch end).
    log_every : int or None
        Steps between rows of the step log (means over the steps since the last row).
    """

    seed: int
    max_epochs: int | None = None
    max_steps: int | None = None
    validate_every: int = 1
    monitor: str | None = None
    mode: str = "max"
    patience: int | None = None
    min_epochs: int = 0
    max_minutes: float | None = None
    budget_unit: str = "epoch"
    checkpoint_every: int | None = None
    log_every: int | None = None


@dataclass
class FitResult:
    """What a fit did: per-epoch rows, step-log rows, the best epoch, why it stopped, and its speed."""

    epochs: list[dict[str, Any]]
    steps_log: list[dict[str, Any]]
    best_epoch: int
    best_score: float
    best_state: dict[str, torch.Tensor] | None
    stopped: str
    step: int
    resumed_from: int
    seconds: float
    samples_per_s: float | None
    data_wait_fraction: float | None


class FitLoop:
    """Run a :class:`TrainTask` under a :class:`~cytolens.engine.runtime.Runtime`, resumable from ``checkpoint``.

    Parameters
    ----------
    runtime : Runtime
    settings : LoopSettings
    checkpoint : Path
        The resume checkpoint (written by rank 0, read by every rank).
    label : str
        How the log lines name this fit (``"3 classes · CNN · fold 2"``).
    on_epoch : callable, optional
        Called on rank 0 with each epoch's row.
    """

    def __init__(self, runtime: Runtime, settings: LoopSettings, checkpoint: Path, *, label: str = "",
                 on_epoch: Callable[[dict[str, Any]], None] | None = None) -> None:
        if settings.max_epochs is None and settings.max_steps is None:
            raise ValueError("a fit needs max_epochs or max_steps")
        self.runtime = runtime
        self.settings = settings
        self.checkpoint = Path(checkpoint)
        self.label = label
        self.on_epoch = on_epoch

    # -- state -----------------------------------------------------------------------------------------------
    def _save(self, task: TrainTask, state: dict[str, Any]) -> None:
        if self.runtime.is_main:
            payload = {
                "format": "cytolens-fit/1",
                "loop": {**{k: v for k, v in state.items() if k not in ("epochs", "steps_log", "best_state")},
                         "epoch_sums": _as_floats(state["epoch_sums"]), "log_sums": _as_floats(state["log_sums"])},
                # History rows are JSON text: any value a row holds survives weights_only loading.
                "history": json.dumps({"epochs": state["epochs"], "steps_log": state["steps_log"]}),
                "best_state": state["best_state"] or {},
                "task": task.state_dict(),
            }
            save_checkpoint(payload, self.checkpoint)
            task.after_checkpoint(state["epochs"], state["steps_log"])
        self.runtime.barrier()

    def _load(self, task: TrainTask) -> dict[str, Any] | None:
        if not self.checkpoint.is_file():
            return None
        payload = load_checkpoint(self.checkpoint)
        if payload.get("format") != "cytolens-fit/1":
            from cytolens.core.errors import CytolensError

            raise CytolensError("not a resume checkpoint of cytolens' fit loop", path=self.checkpoint)
        with loading_state_from(self.checkpoint):
            task.load_state_dict(payload["task"])
        history = json.loads(payload["history"])
        state = dict(payload["loop"])
        # Limits and budgets are this session's (a schedule may have grown); only early stopping is final.
        if state.get("stopped") != "early_stopping":
            state["stopped"] = ""
        state.update(epochs=history["epochs"], steps_log=history["steps_log"],
                     best_state=payload["best_state"] or None)
        return state

    # -- the loop --------------------------------------------------------------------------------------------
    def fit(self, task: TrainTask) -> FitResult:
        """Train until an epoch/step limit, early stopping or the time budget ends it; return what happened."""
        settings, runtime = self.settings, self.runtime
        per_epoch = task.steps_per_epoch()
        if per_epoch < 1:
            raise ValueError("an epoch needs at least one step")
        stopper = EarlyStopping(settings.monitor, settings.patience, settings.mode,
                                 settings.min_epochs) if settings.monitor else None
        state = self._load(task)
        if state is None:
            state = {"epoch": 1, "index": 0, "step": 0, "epoch_sums": {}, "epoch_count": 0, "log_sums": {},
                     "log_count": 0, "best_score": -math.inf, "best_epoch": -1, "waited": 0, "stopped": "",
                     "epochs": [], "steps_log": [], "best_state": None}
            resumed_from = 0
        else:
            resumed_from = int(state["step"])
            if runtime.is_main:
                console.print(f"{self.label}: resuming from step {resumed_from} (epoch {state['epoch']}, batch "
                              f"{state['index']}) of {self.checkpoint}", markup=False)
        if stopper is not None:
            stopper.best_score, stopper.best_epoch, stopper.waited = (
                float(state["best_score"]), int(state["best_epoch"]), int(state["waited"]))
        if state["stopped"]:  # the checkpoint of a finished fit: nothing left to do
            return self._result(state, resumed_from, 0.0, 0, 0.0, 0.0)
        epoch_budget = TimeBudget(settings.max_minutes if settings.budget_unit == "epoch" else None)
        step_budget = TimeBudget(settings.max_minutes if settings.budget_unit == "step" else None)
        started = time.perf_counter()
        samples = 0
        step_seconds = data_seconds = 0.0
        saved_step = int(state["step"])
        epoch_started = time.perf_counter()
        stop_next = False
        try:
            while True:
                epoch, index = int(state["epoch"]), int(state["index"])
                if settings.max_epochs is not None and epoch > settings.max_epochs:
                    state["stopped"] = "epochs"
                    break
                if settings.max_steps is not None and state["step"] >= settings.max_steps:
                    state["stopped"] = "steps"
                    break
                if stop_next:
                    state["stopped"] = "max_minutes"
                    break
                step = int(state["step"]) + 1
                position = Position(epoch, index, step)
                seed = derive_seed(settings.seed, step, runtime.rank)
                torch.manual_seed(seed)
                np.random.seed(seed)
                t0 = time.perf_counter()
                record = task.train_step(position)
                elapsed = time.perf_counter() - t0
                step_budget.durations.append(elapsed)
                step_seconds += elapsed
                data_seconds += float(record.pop("data_seconds", 0.0))
                samples += int(record.pop("samples", 0))
                _accumulate(state, "epoch", record)
                _accumulate(state, "log", record)
                state["step"] = step
                state["index"] = index + 1
                epoch_done = state["index"] >= per_epoch
                last_step = settings.max_steps is not None and step >= settings.max_steps
                # One decision for all ranks: their clocks differ, and the log row below is a collective.
                stop_next = step_budget.max_minutes is not None and bool(
                    runtime.broadcast(step_budget.next_would_overrun()))
                if settings.log_every and (step % settings.log_every == 0 or last_step or stop_next):
                    row = {"step": step, "epoch": epoch, **self._means(state, "log"),
                           "seconds_per_step": step_seconds / max(step - resumed_from, 1)}
                    state["steps_log"].append(row)
                    if runtime.is_main:
                        console.print(f"{self.label}: step {step} epoch {epoch}: " + _format(row), markup=False)
                task.after_step(position, last=last_step or stop_next or epoch_done and settings.max_epochs == epoch)
                if epoch_done:
                    self._end_epoch(task, state, stopper, epoch, epoch_budget,
                                    time.perf_counter() - epoch_started, last_step)
                    epoch_started = time.perf_counter()
                    self._save(task, state)
                    saved_step = int(state["step"])
                    if state["stopped"]:
                        break
                elif settings.checkpoint_every and step % settings.checkpoint_every == 0:
                    self._save(task, state)
                    saved_step = step
        except KeyboardInterrupt:
            # A step interrupted half-way leaves the weights half-updated: only a finished step is saved.
            if int(state["step"]) > saved_step:
                self._save(task, state)
                if runtime.is_main:
                    console.print(f"{self.label}: interrupted; checkpoint at step {state['step']} saved",
                                  markup=False)
            raise
        self._save(task, state)  # records why it stopped, so a rerun does not train again
        seconds = time.perf_counter() - started
        return self._result(state, resumed_from, seconds, samples, step_seconds, data_seconds)

    def _end_epoch(self, task: TrainTask, state: dict[str, Any], stopper: EarlyStopping | None, epoch: int,
                   budget: TimeBudget, seconds: float, last_step: bool) -> None:
        settings, runtime = self.settings, self.runtime
        task.end_epoch(epoch)
        budget.durations.append(seconds)
        out_of_time = budget.max_minutes is not None and bool(runtime.broadcast(budget.next_would_overrun()))
        last_epoch = settings.max_epochs is not None and epoch >= settings.max_epochs
        row: dict[str, Any] = {"epoch": epoch, "step": int(state["step"]), **self._means(state, "epoch")}
        due = settings.validate_every > 0 and (epoch % settings.validate_every == 0 or last_epoch or out_of_time
                                               or last_step)
        if due:
            row.update(task.validate(epoch))
        row["seconds"] = round(seconds, 3)
        state["epochs"].append(row)
        if stopper is not None and due and settings.monitor in row:
            improved, stop = stopper.update(float(row[settings.monitor]), epoch)
            state["best_score"], state["best_epoch"], state["waited"] = (
                stopper.best_score, stopper.best_epoch, stopper.waited)
            if improved:
                state["best_state"] = {k: v.detach().cpu().clone() for k, v in task.model_state().items()}
            if stop:
                state["stopped"] = "early_stopping"
        if out_of_time and not state["stopped"]:
            state["stopped"] = "max_minutes"
        if last_step and not state["stopped"]:
            state["stopped"] = "steps"
        if last_epoch and not state["stopped"]:
            state["stopped"] = "epochs"
        state["epoch"], state["index"] = epoch + 1, 0
        if runtime.is_main:
            console.print(f"{self.label}: epoch {epoch}: " + _format(row), markup=False)
        if self.on_epoch is not None and runtime.is_main:
            self.on_epoch(row)

    def _means(self, state: dict[str, Any], which: str) -> dict[str, float]:
        """Means of the step records since the last row, averaged over ranks; the sums restart."""
        sums, count = _as_floats(state[f"{which}_sums"]), state[f"{which}_count"]
        keys = sorted(sums)
        totals = self.runtime.all_reduce_sum(np.array([sums[k] for k in keys] + [count], dtype=np.float64))
        state[f"{which}_sums"], state[f"{which}_count"] = {}, 0
        return {k: float(totals[i] / max(totals[-1], 1)) for i, k in enumerate(keys)}

    def _result(self, state: dict[str, Any], resumed_from: int, seconds: float, samples: int,
                step_seconds: float, data_seconds: float) -> FitResult:
        best_state = state["best_state"]
        return FitResult(
            epochs=state["epochs"], steps_log=state["steps_log"], best_epoch=int(state["best_epoch"]),
            best_score=float(state["best_score"]) if self.settings.mode == "max" else -float(state["best_score"]),
            best_state=copy.copy(best_state) if best_state else None, stopped=str(state["stopped"]),
            step=int(state["step"]), resumed_from=resumed_from, seconds=seconds,
            samples_per_s=samples / step_seconds if step_seconds > 0 and samples else None,
            data_wait_fraction=data_seconds / step_seconds if step_seconds > 0 else None,
        )


def _accumulate(state: dict[str, Any], which: str, record: dict[str, Any]) -> None:
    # Tensors stay on their device until a row or a checkpoint needs the number: no host sync every step.
    sums = state[f"{which}_sums"]
    for key, value in record.items():
        value = value.detach().double() if isinstance(value, torch.Tensor) else float(value)
        sums[key] = sums.get(key, 0.0) + value
    state[f"{which}_count"] += 1


def _as_floats(sums: dict[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in sums.items()}


def _format(row: dict[str, Any]) -> str:
    shown = {k: v for k, v in row.items() if k not in ("epoch", "step") and isinstance(v, float) and math.isfinite(v)}
    return ", ".join(f"{k} {v:.4g}" for k, v in shown.items())
