"""Uncertainty scorers over class probabilities ``probs [m, C]`` (row positions).

Each returns float64[m]; higher means the model is less sure, so more worth a label.
"""

from __future__ import annotations

import numpy as np

from strategies.base import MissingInputError, QueryInputs


def _probs(inputs: QueryInputs) -> np.ndarray:
    if inputs.probs is None:
        raise MissingInputError("uncertainty scores need class probabilities, none were given")
    return inputs.probs.astype(np.float64, copy=False)


def least_confidence(inputs: QueryInputs) -> np.ndarray:
    """``1 - max_c p(c|x)``."""
    return 1.0 - _probs(inputs).max(axis=1)


def margin(inputs: QueryInputs) -> np.ndarray:
    """Negative gap between the two most probable classes ("breaking ties")."""
    probs = _probs(inputs)
    top2 = np.partition(probs, -2, axis=1)[:, -2:]  # [m, 2], unordered
    return -np.abs(top2[:, 1] - top2[:, 0])


def entropy(inputs: QueryInputs) -> np.ndarray:
    """Shannon entropy of the predictive distribution, in nats (0 log 0 = 0)."""
    probs = _probs(inputs)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probs > 0, probs * np.log(probs), 0.0)  # [m, C]
    return -terms.sum(axis=1)
