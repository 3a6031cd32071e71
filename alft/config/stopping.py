"""The ``stop`` section: the stop rules beyond the budget, and the metrics they may watch."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from alft.config.base import Strict

METRICS = {"classification": ("accuracy", "macro_f1"), "generation": ("rouge_l",)}


class PlateauConfig(Strict):
    metric: Literal["accuracy", "macro_f1", "rouge_l"] = "accuracy"
    patience: int = Field(2, ge=1)
    min_delta: float = Field(0.002, ge=0)


class TargetConfig(Strict):
    metric: Literal["accuracy", "macro_f1", "rouge_l"] = "accuracy"
    value: float = Field(gt=0, le=1)


class StabilizingConfig(Strict):
    """Stop once predictions stop changing (Bloodgood & Vijay-Shanker, 2009)."""

    threshold: float = Field(0.99, gt=0, le=1, description="Cohen's kappa between consecutive rounds' predictions")
    window: int = Field(3, ge=1, description="consecutive round pairs that must all reach the threshold")
    stop_set: Literal["eval", "pool_sample"] = Field(
        "eval", description="eval: the eval split's predictions; pool_sample: a fixed sample of the pool"
    )
    stop_set_size: int = Field(2000, ge=1, description="pool_sample: examples in the stop set")


class UncertaintyStopConfig(Strict):
    """Stop once the model is sure about the unlabeled pool."""

    threshold: float = Field(0.05, gt=0, le=1)
    measure: Literal["least_confidence", "margin", "entropy"] = Field(
        "least_confidence", description="entropy is normalised by log C"
    )
    reduce: Literal["mean", "max"] = "mean"


class ForecastConfig(Strict):
    """Fit a learning curve (inverse power law) and stop when the next batch would gain too little."""

    metric: Literal["accuracy", "macro_f1", "rouge_l"] = "accuracy"
    min_gain_per_label: float = Field(
        2e-5, gt=0, description="forecast gain of the next batch per label (2e-5 = 0.2 points per 100 labels)"
    )
    min_rounds: int = Field(5, ge=3, description="rounds before the curve is trusted (3 parameters)")
    patience: int = Field(2, ge=1, description="consecutive rounds the forecast must stay below the threshold")
    max_rmse: float | None = Field(None, gt=0, description="ignore fits worse than this (metric units)")


class StopConfig(Strict):
    """Stop rules beyond the budget (always on) and an exhausted pool (always on)."""

    max_rounds: int | None = Field(None, ge=1, description="rounds including the cold start")
    plateau: PlateauConfig | None = None
    target: TargetConfig | None = None
    stabilizing: StabilizingConfig | None = None
    uncertainty: UncertaintyStopConfig | None = None
    forecast: ForecastConfig | None = None
