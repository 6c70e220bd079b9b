"""The classification experiment's settings (``configs/shpilman2017*.yaml``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from cytolens.core.config import ClassNames, StrictModel
from cytolens.engine.config import ExperimentConfig
from cytolens.data.intensity import IntensityConfig

VARIANTS: tuple[str, ...] = ("CNN", "CNN+T", "CNN+T+S")
Variant = Literal["CNN", "CNN+T", "CNN+T+S"]


class SharpenConfig(StrictModel):
    """The +S variant's filter: Pillow's fixed SHARPEN kernel or its tunable UnsharpMask."""

    filter: Literal["sharpen", "unsharp_mask"] = "sharpen"
    radius: float = Field(default=2.0, gt=0)
    percent: float = Field(default=150.0, ge=0)
    threshold: float = Field(default=3.0, ge=0)


class TrainingConfig(StrictModel):
    """Optimiser and stopping rule."""

    optimizer: Literal["nadam", "adam", "adamw", "sgd"] = "nadam"
    lr: float = Field(default=0.002, gt=0)
    # Keras-style L2: l2 * sum(w**2) over conv/dense kernels (its gradient is applied by the optimiser).
    l2: float = Field(default=0.01, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    batch_size: int = Field(default=32, ge=1)
    max_epochs: int = Field(default=50, ge=1)
    # The paper: stop after 2 epochs without improvement of validation accuracy.
    patience: int = Field(default=2, ge=1)
    # No early stop before this epoch (Keras' start_from_epoch); 0, the paper's rule, can stop from epoch 3.
    min_epochs: int = Field(default=0, ge=0)


class XGBoostConfig(StrictModel):
    """The hand-crafted-feature baseline."""

    enabled: bool = True
    n_estimators: int = Field(default=300, ge=1)
    max_depth: int = Field(default=4, ge=1)
    learning_rate: float = Field(default=0.05, gt=0)
    subsample: float = Field(default=0.8, gt=0, le=1)
    colsample_bytree: float = Field(default=0.8, gt=0, le=1)


class ClassifyConfig(ExperimentConfig):
    """Every setting of a classification run, on top of :class:`~cytolens.engine.config.ExperimentConfig`
    (name, seed, model, precision, time budget, threads, checkpoint cadence).

    ``deviations`` lists, in words, where a config departs from the paper; they are copied into the report.
    """

    name: str = "classify"
    classes: ClassNames | None = None
    group_pattern: str | None = None
    # Data
    test_per_class: int = Field(default=100, ge=1)
    max_train_per_class: int | None = Field(default=None, ge=2)
    input_size: int = Field(default=300, ge=16)
    intensity: IntensityConfig = Field(default_factory=IntensityConfig)
    # Model (options: ``model_options`` of the base)
    model: str = "shpilman2017"
    # Protocol
    folds: int = Field(default=10, ge=2)
    tasks: list[str] = Field(default_factory=lambda: ["all", "pairwise"])
    variants: list[Variant] = Field(default_factory=lambda: list(VARIANTS))
    predict_variant: Variant = "CNN+T+S"
    rotations: list[int] = Field(default_factory=lambda: [90, 180, 270])
    sharpen: SharpenConfig = Field(default_factory=SharpenConfig)
    final_model: Literal["ensemble", "best_fold"] = "ensemble"
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    xgboost: XGBoostConfig = Field(default_factory=XGBoostConfig)
    gradcam_examples: int = Field(default=6, ge=0)
    tta: bool = False

    @field_validator("classes")
    @classmethod
    def _two_classes(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(value) < 2:  # distinct names are ClassNames' rule
            raise ValueError(f"classification needs at least 2 classes, got {value}")
        return value

    @field_validator("rotations")
    @classmethod
    def _rotations_are_quarter_turns(cls, value: list[int]) -> list[int]:
        bad = [angle for angle in value if angle % 90 or not 0 < angle < 360]
        if bad:
            raise ValueError(f"rotations must be 90, 180 or 270 degrees, got {bad}")
        return value

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one task is needed")
        return value

    @model_validator(mode="after")
    def _predict_variant_is_trained(self) -> ClassifyConfig:
        if self.predict_variant not in self.variants:
            raise ValueError(f"predict_variant {self.predict_variant!r} is not among variants {self.variants}")
        return self
