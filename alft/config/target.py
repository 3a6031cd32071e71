"""The ``target`` section: the model the dataset is for, and the random control it must beat."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from alft.config.base import Strict
from alft.config.trainers import TrainerConfig


class TargetModelConfig(Strict):
    """Fine-tune the target model on the campaign's labels and on random sets of the same size.

    ``alft target CONFIG`` (or the ``target`` deployment) trains ``trainer`` from
    ``model`` on the first ``n`` labels the campaign collected (selection order) for each
    ``n`` in ``labels``, and on ``repeats`` random sets of ``n`` pool examples with gold
    labels, all evaluated on the campaign's eval split.
    """

    model: str = Field(
        description="the target checkpoint: a model folder, hub id, or packaged: name (as model.path)"
    )
    trainer: TrainerConfig = Field(
        default_factory=lambda: TrainerConfig(kind="transformer"),
        description="how the target is fine-tuned (transformer: every weight or LoRA; sft for "
        "generation; head: logistic regression on the target's frozen embeddings)",
    )
    labels: list[int] | None = Field(
        None,
        description="label counts to compare at (the campaign's first n labels, in selection "
        "order); default: every label the campaign has",
    )
    random_labels: list[int] = Field(
        default_factory=list,
        description="extra sizes trained on random sets only (e.g. 2x the campaign's labels: "
        "does alft's set beat a random one twice its size?)",
    )
    control: Literal["random"] = Field(
        "random",
        description="random: sets drawn uniformly from the whole pool with their own generator "
        "(seed, size, repeat), labeled with the data's gold labels (data.label_field)",
    )
    repeats: int = Field(
        3,
        ge=1,
        le=50,
        description="random sets per size; alft's set is trained with the same seeds, so repeat r "
        "pairs alft's set and random set r under one training seed",
    )
    seed: int | None = Field(None, ge=0, description="seed of the control draws and training (default: the campaign's)")

    @model_validator(mode="after")
    def _check(self) -> TargetModelConfig:
        for what, sizes in (("labels", self.labels or []), ("random_labels", self.random_labels)):
            bad = [n for n in sizes if n < 1]
            if bad:
                raise ValueError(f"target.{what} must be label counts >= 1, got {bad}")
            if len(set(sizes)) != len(sizes):
                raise ValueError(f"target.{what} lists a size twice: {sizes}")
        if self.labels is not None and not self.labels:
            raise ValueError("target.labels is empty; leave it out to compare at the campaign's final size")
        return self
