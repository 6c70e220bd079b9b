"""The segmentation experiment's settings (``configs/midl2019-*.yaml``).

One :class:`SegmentConfig` holds every setting of ``cytolens segment train``; unknown keys are errors. The
defaults are the MIDL 2019 paper's where it states them (patch 224, batch 3, 300 epochs, Adam 1e-3 halved every
50 epochs, categorical cross-entropy, 5-fold image-level CV, the augmentations of section 3) and our documented
choices where it does not (patches per epoch, intensity scaling, inference tiles). A config lists its departures
from the paper in ``deviations``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from cytolens.core.config import ClassNames, StrictModel
from cytolens.engine.config import ExperimentConfig
from cytolens.data.intensity import IntensityConfig
from cytolens.segment.augment import BORDER_MODES, Augmenter

__all__ = ["AugmentationConfig", "InferenceConfig", "SegmentConfig"]

BorderMode = Literal["mirror", "reflect", "nearest", "wrap", "constant"]
assert set(BORDER_MODES) == set(BorderMode.__args__)  # type: ignore[attr-defined]  # kept in step with augment.py


class AugmentationConfig(StrictModel):
    """The paper's random augmentations of training patches (see :class:`~cytolens.segment.augment.Augmenter`).

    ``enabled: false`` trains on plain patches (an ablation, not the paper).
    """

    enabled: bool = True
    dihedral: bool = True
    max_shift: int = Field(default=122, ge=0)
    shift_probability: float = Field(default=1.0, ge=0, le=1)
    # The paper does not say how often it deformed; 0.5 is the Augmenter's documented choice.
    elastic_probability: float = Field(default=0.5, ge=0, le=1)
    elastic_sigma: float = Field(default=15.0, ge=0)
    elastic_points: int = Field(default=2, ge=1)
    mode: BorderMode = "mirror"

    def build(self) -> Augmenter | None:
        """The :class:`Augmenter` these settings describe, or None when augmentation is off."""
        if not self.enabled:
            return None
        return Augmenter(
            dihedral=self.dihedral, max_shift=self.max_shift, shift_probability=self.shift_probability,
            elastic_probability=self.elastic_probability, elastic_sigma=self.elastic_sigma,
            elastic_points=self.elastic_points, mode=self.mode,
        )


class InferenceConfig(StrictModel):
    """Whole-image prediction in blended overlapping tiles (:func:`~cytolens.segment.inference.predict_tiled`).

    Used for validation during training, for ``segment evaluate`` and for ``segment predict``. ``tile`` must be a
    multiple of the model's ``input_multiple`` (checked when training starts).
    """

    tile: int = Field(default=512, ge=8)
    overlap: int = Field(default=64, ge=0)
    batch_size: int = Field(default=2, ge=1)
    tta: bool = False

    @model_validator(mode="after")
    def _overlap_fits(self) -> InferenceConfig:
        if 2 * self.overlap > self.tile:
            raise ValueError(f"overlap must be at most half the tile ({self.tile // 2}), got {self.overlap}")
        return self


class SegmentConfig(ExperimentConfig):
    """Every setting of a segmentation run; stored as ``RUN/config.yaml``.

    The name, seed, model, precision, time budget (``max_minutes``, per training session and fold, judged by
    the epochs run so far), threads and ``checkpoint_every`` come from
    :class:`~cytolens.engine.config.ExperimentConfig`. A resumed run may change ``epochs``, ``patience`` and
    ``train_folds`` besides the base's schedule keys (more epochs continue a fold, more folds add folds).

    ``l2: null`` takes the model's published value from its registry recipe (1e-4 for ``unet``, 0 for the
    others, for which the paper states none). ``train_folds`` is ``"all"`` or a list of fold numbers, so a CPU
    config can train one fold of a K-fold split and still report that fold's validation dice.
    """

    SCHEDULE_KEYS: ClassVar[frozenset[str]] = ExperimentConfig.SCHEDULE_KEYS | {"epochs", "patience", "train_folds"}

    name: str = "segment"
    classes: ClassNames = Field(default_factory=lambda: ["background", "nucleus", "cytoplasm"])
    # Data
    in_chans: int = Field(default=1, ge=1)
    intensity: IntensityConfig = Field(default_factory=IntensityConfig)
    # Model
    model: str = "unet"
    # Training (MIDL 2019 section 3)
    patch_size: int = Field(default=224, ge=8)
    patches_per_epoch: int = Field(default=1000, ge=1)
    batch_size: int = Field(default=3, ge=1)
    epochs: int = Field(default=300, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    lr_halving_epochs: int = Field(default=50, ge=1)
    l2: float | None = Field(default=None, ge=0)
    augmentation: AugmentationConfig = Field(default_factory=AugmentationConfig)
    # Protocol
    folds: int = Field(default=5, ge=2)
    train_folds: Literal["all"] | list[int] = "all"
    final_model: Literal["ensemble", "best_fold"] = "ensemble"
    validate_every: int = Field(default=1, ge=1)
    patience: int | None = Field(default=None, ge=1)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    # Machine (num_threads is the base's)
    num_workers: int = Field(default=0, ge=0)

    @field_validator("classes")
    @classmethod
    def _two_distinct_classes(cls, value: list[str]) -> list[str]:
        if len(value) < 2:  # distinct names are ClassNames' rule
            raise ValueError(f"segmentation needs at least 2 classes, got {value}")
        return value

    @field_validator("model")
    @classmethod
    def _registered_model(cls, value: str) -> str:
        from cytolens.core.errors import OptionError, check_choice
        from cytolens.segment.models import list_models

        try:
            check_choice("model", value, list_models())
        except OptionError as exc:  # pydantic reports ValueErrors with the config key
            raise ValueError(exc.message) from None
        return value

    @model_validator(mode="after")
    def _folds_exist(self) -> SegmentConfig:
        if self.train_folds != "all":
            if not self.train_folds:
                raise ValueError("train_folds must be 'all' or a non-empty list of fold numbers")
            bad = [f for f in self.train_folds if not 0 <= f < self.folds]
            if bad:
                raise ValueError(f"train_folds {bad} are outside 0..{self.folds - 1} for folds={self.folds}")
            if len(set(self.train_folds)) != len(self.train_folds):
                raise ValueError(f"train_folds repeats a fold: {self.train_folds}")
        return self

    def folds_to_train(self) -> list[int]:
        """The fold numbers this config trains, in increasing order."""
        return list(range(self.folds)) if self.train_folds == "all" else sorted(self.train_folds)

    def resolved_l2(self) -> float:
        """The L2 factor in use: ``l2`` if set, else the model's published one (its registry recipe)."""
        if self.l2 is not None:
            return self.l2
        from cytolens.segment.models import segmentation_model_recipe

        return float(segmentation_model_recipe(self.model).get("l2", 0.0))
