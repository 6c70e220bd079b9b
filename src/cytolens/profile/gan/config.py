"""The GAN training settings of ``cytolens profile train`` (``configs/cytogan-*.yaml``).

One :class:`GanConfig` holds every setting; unknown keys are errors. The defaults are CytoGAN's where the paper
or its public code states them (the architecture in :mod:`cytolens.profile.gan.models`, Adam β1 = 0.5, batch 64,
50 epochs, per-GAN learning rates, real labels softened to U[0.8, 1], WGAN-GP λ = 10 with one critic step) and our
documented choices where they do not (sampling and checkpoint cadence, the shuffle buffer). A config lists its
departures from the paper in ``deviations``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from cytolens.engine import ExperimentConfig

__all__ = ["GanConfig"]


class GanConfig(ExperimentConfig):
    """Every setting of a GAN run; stored as ``RUN/config.yaml``.

    ``model`` is the GAN (:data:`cytolens.profile.gan.models.GANS`: ``dcgan``, ``lsgan``, ``wgan-gp``) and
    ``model_options`` reach its builder (``generator_filters``, ...). ``lr_discriminator`` / ``lr_generator`` /
    ``betas`` set to ``null`` take the GAN's published recipe (its registry metadata). ``steps`` (generator
    updates), when set, replaces ``epochs`` (passes over the cell store in batches of ``batch_size``; the last
    incomplete batch of an epoch is dropped, as CytoGAN's trainer did). ``precision``, ``max_minutes``,
    ``num_threads`` and ``checkpoint_every`` are :class:`~cytolens.engine.ExperimentConfig`'s.
    """

    #: Keys that change how long or how visibly a run trains, not what a step does: a run folder resumes
    #: across changes to these (``--steps 2000`` continues a run that stopped at 1000) and refuses any other.
    SCHEDULE_KEYS: ClassVar[frozenset[str]] = ExperimentConfig.SCHEDULE_KEYS | {
        "epochs", "steps", "sample_every", "log_every"}

    name: str = "cytogan"
    model: str = "lsgan"
    model_options: dict[str, Any] = Field(default_factory=dict)
    # Training
    batch_size: int = Field(default=64, ge=1)
    epochs: float = Field(default=50.0, gt=0)
    steps: int | None = Field(default=None, ge=1)
    lr_discriminator: float | None = Field(default=None, gt=0)
    lr_generator: float | None = Field(default=None, gt=0)
    betas: tuple[float, float] | None = None
    real_label_range: tuple[float, float] = (0.8, 1.0)
    gradient_penalty: float = Field(default=10.0, ge=0)
    gp_interpolation: Literal["sample", "pixel"] = "sample"
    critic_steps: int = Field(default=1, ge=1)
    # Data: batches are drawn from windows of whole store chunks (read once per epoch), shuffled in memory.
    shuffle_buffer: int = Field(default=4096, ge=1)
    # Outputs (checkpoint_every, max_minutes, num_threads and precision are the base's)
    sample_every: int = Field(default=1000, ge=1)
    sample_count: int = Field(default=64, ge=1, le=256)
    checkpoint_every: int | None = Field(default=1000, ge=1)
    log_every: int = Field(default=50, ge=1)

    @field_validator("model")
    @classmethod
    def _registered_gan(cls, value: str) -> str:
        from cytolens.core.errors import OptionError, check_choice
        from cytolens.profile.gan.models import GANS

        try:
            check_choice("model", value, GANS.names())
        except OptionError as exc:  # pydantic reports ValueErrors with the config key
            raise ValueError(exc.message) from None
        return value

    @field_validator("real_label_range")
    @classmethod
    def _label_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"real_label_range must satisfy 0 <= low <= high <= 1, got {list(value)}")
        return value

    @field_validator("betas")
    @classmethod
    def _betas(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not all(0.0 <= b < 1.0 for b in value):
            raise ValueError(f"Adam betas must lie in [0, 1), got {list(value)}")
        return value

    @model_validator(mode="after")
    def _options_exist(self) -> GanConfig:
        from cytolens.profile.gan.models import GANS

        unknown = sorted(set(self.model_options) - set(GANS.options(self.model)))
        if unknown:
            raise ValueError(f"gan {self.model!r} has no option(s) {unknown}; its options are "
                             f"{GANS.options(self.model)}")
        return self

    def recipe(self) -> dict[str, object]:
        """The GAN's published optimiser recipe with this config's explicit values on top."""
        from cytolens.profile.gan.models import GANS

        recipe = dict(GANS.metadata(self.model)["recipe"])
        if self.lr_discriminator is not None:
            recipe["lr_discriminator"] = self.lr_discriminator
        if self.lr_generator is not None:
            recipe["lr_generator"] = self.lr_generator
        if self.betas is not None:
            recipe["betas"] = tuple(self.betas)
        return recipe

    def total_steps(self, n_cells: int) -> int:
        """Generator updates this config asks for on a store of ``n_cells`` cells.

        Each generator update consumes ``critic_steps`` real batches, so an epoch has
        ``(n_cells // batch_size) / critic_steps`` of them.
        """
        if self.steps is not None:
            return self.steps
        batches = max(n_cells // self.batch_size, 1)
        return max(int(round(self.epochs * batches / self.critic_steps)), 1)
