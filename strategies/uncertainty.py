"""Uncertainty scorers over class probabilities ``probs [m, C]`` (row positions), and BALD
over MC-dropout samples ``prob_samples [m, C, K]``.

Each returns float64[m]; higher means the model is less sure, so more worth a label.
"""

from __future__ import annotations

import numpy as np

from strategies.base import InvalidInputError, MissingInputError, QueryInputs


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


def bald(inputs: QueryInputs) -> np.ndarray:
    """BALD: mutual information between the label and the model, from MC samples.

    ``H[mean_k p_k] - mean_k H[p_k]`` over ``prob_samples [m, C, K]`` (row positions), in
    nats. High when the stochastic passes are individually confident but disagree, i.e. the
    uncertainty is in the model rather than in the example (Houlsby et al., 2011).
    """
    if inputs.prob_samples is None:
        raise MissingInputError("BALD needs MC probability samples, none were given")
    ps = inputs.prob_samples.astype(np.float64, copy=False)  # [m, C, K]
    if ps.shape[2] < 1:
        raise InvalidInputError(f"BALD needs at least 1 MC sample per candidate, got {ps.shape[2]}")
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = ps.mean(axis=2)  # [m, C]
        h_mean = -np.where(mean > 0, mean * np.log(mean), 0.0).sum(axis=1)  # [m]
        h_each = -np.where(ps > 0, ps * np.log(ps), 0.0).sum(axis=1)  # [m, K]
    # Jensen makes the difference >= 0; only rounding can push it below, by ~1e-16.
    return np.maximum(h_mean - h_each.mean(axis=1), 0.0)
