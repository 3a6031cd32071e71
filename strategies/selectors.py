"""Selectors: turn a score array into a batch of row positions."""

from __future__ import annotations

import numpy as np

from strategies.base import QueryInputs, Strategy


def top_k(
    scores: np.ndarray | None, inputs: QueryInputs, k: int, rng: np.random.Generator
) -> np.ndarray:
    """The ``k`` highest scores, ties broken at random; row positions, best first.

    Ties are common (identical texts, saturated probabilities); breaking them by position
    would bias every batch towards the start of the pool.
    """
    if scores is None:
        raise ValueError("top_k needs scores; compose it with a scorer")
    tiebreak = rng.random(scores.shape[0])  # [m]
    # lexsort sorts by the last key first: descending score, then the random key.
    order = np.lexsort((tiebreak, -scores))
    return order[:k]


def uniform(
    scores: np.ndarray | None, inputs: QueryInputs, k: int, rng: np.random.Generator
) -> np.ndarray:
    """``k`` row positions drawn uniformly without replacement; scores are ignored."""
    return rng.choice(inputs.n_candidates, size=k, replace=False)


def ranked(name: str, scorer, needs: frozenset[str]) -> Strategy:
    """A strategy that takes the ``k`` highest-scoring rows of one scorer (``top_k``)."""
    return Strategy(name=name, scorer=scorer, selector=top_k, needs=needs)
