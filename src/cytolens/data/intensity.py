"""How raw intensities become network input: the config every capability's input normalisation uses."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cytolens.core.config import StrictModel

__all__ = ["IntensityConfig"]


class IntensityConfig(StrictModel):
    """How raw intensities become network input in [0, 1] (see :func:`cytolens.data.io.normalize_intensity`)."""

    method: Literal["bit_depth", "dtype", "percentile"] = "percentile"
    bit_depth: int | None = Field(default=None, ge=1, le=32)
    percentiles: tuple[float, float] = (0.5, 99.8)

    @model_validator(mode="after")
    def _bit_depth_given(self) -> IntensityConfig:
        if self.method == "bit_depth" and self.bit_depth is None:
            raise ValueError("method 'bit_depth' needs bit_depth (e.g. 14 for a 14-bit camera)")
        if not 0 <= self.percentiles[0] < self.percentiles[1] <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")
        return self
