"""The base of every experiment config: what any training run has, whatever the capability.

A capability's config (``ClassifyConfig``, ``SegmentConfig``, ``GanConfig``) extends :class:`ExperimentConfig`
and declares in ``SCHEDULE_KEYS`` which of its keys only say how long or how visibly a run trains: a run folder
resumes across changes to those (``--steps 2000`` continues a run that stopped at 1000) and refuses any other
change.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from cytolens.core.config import StrictModel

__all__ = ["ExperimentConfig", "Precision"]

Precision = Literal["auto", "32-true", "bf16-mixed", "16-mixed"]


class ExperimentConfig(StrictModel):
    """Settings every experiment has.

    ``deviations`` lists, in words, where a config departs from its paper; reports copy them. ``precision``
    is the numeric precision (``auto``: bf16 mixed precision where the hardware runs bf16 natively, else fp32);
    ``--precision`` overrides it. ``max_minutes`` is a session's time budget: training stops before an epoch
    (or a step) that would end past it. ``num_threads`` is CPU threads per process (default: the CPUs this
    process may use, shared among the ranks of a machine). ``checkpoint_every`` is steps between resume
    checkpoints (besides one at every epoch end).
    """

    #: Keys a resumed run may change (see the module docstring); a subclass adds its own.
    SCHEDULE_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"description", "deviations", "max_minutes", "num_threads", "checkpoint_every"}
    )

    name: str = "experiment"
    description: str = ""
    deviations: list[str] = Field(default_factory=list)
    seed: int = Field(default=0, ge=0)
    model: str
    model_options: dict[str, Any] = Field(default_factory=dict)
    precision: Precision = "auto"
    max_minutes: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    num_threads: int | None = Field(default=None, ge=1)
    checkpoint_every: int | None = Field(default=None, ge=1)

    @field_validator("name")
    @classmethod
    def _name_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a config needs a non-empty name")
        return value
