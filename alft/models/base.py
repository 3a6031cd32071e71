"""What every alft model shares: the saved folder's metadata file, the outputs a model gives
the query strategies, the classifier interface, and small helpers of the trainers.

A trained model is saved as a folder holding ``META`` (``alft_model.json``: its kind, plus
whatever the kind needs to load it) next to the kind's own files; ``alft.models.loading``
dispatches on that kind. No pickle anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from alft.errors import TrainerError

META = "alft_model.json"


@dataclass
class ModelOutputs:
    """What a model tells the query strategies about ``n`` texts (rows follow the input).

    probs: float64[n, C] over the full label set.
    features: float64[n, h], the input of the output layer, or None.
    head: (weight [k, h], bias [k], classes [k]) of the output layer, or None.
    prob_samples: float32[n, C, K] from K stochastic (MC-dropout) passes, or None.
    """

    probs: np.ndarray
    features: np.ndarray | None = None
    head: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    prob_samples: np.ndarray | None = None


class ClassifierModel(Protocol):
    kind: str
    labels: list[str]

    def predict_proba(self, texts: Sequence[str], embeddings: np.ndarray | None) -> np.ndarray:
        """Class probabilities ``[n, C]`` over the full label set (columns = ``labels``)."""

    def outputs(
        self,
        texts: Sequence[str],
        embeddings: np.ndarray | None,
        *,
        features: bool,
        samples: int,
        rng: np.random.Generator,
    ) -> ModelOutputs:
        """Probabilities plus, on request, features, the output layer and ``samples`` MC passes."""

    def save(self, path: Path) -> None:
        """Write the model into the (new, empty) folder ``path``."""


def check_training_set(y: np.ndarray, labels: list[str]) -> None:
    if y.size == 0:
        raise TrainerError("no labeled examples to train on")
    if y.min() < 0 or y.max() >= len(labels):
        raise TrainerError(f"label index out of range [0, {len(labels)})")


def progress_callback(advance: Callable[[int], None]):
    """A TrainerCallback advancing alft's progress bar by one per optimizer step."""
    from transformers import TrainerCallback

    class _Cb(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            advance(1)

    return _Cb()
