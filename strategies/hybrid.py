"""Hybrids built from other registered strategies: a two-stage shortlist and score fusion.

The parts are looked up by name in the registry when the hybrid is built (not when this
module is imported), so they may live in any module of the catalogue; each part is built
with its default options.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial
from numbers import Real

import numpy as np

from strategies.base import InvalidInputError, QueryInputs, Selection, Strategy
from strategies.registry import (
    StrategyOptionError,
    UnknownStrategyError,
    get_spec,
    get_strategy,
    register,
)
from strategies.selectors import top_k

__all__ = ["fuse_scores", "rank_normalise", "two_stage_select"]


def rank_normalise(scores: np.ndarray) -> np.ndarray:
    """Ranks of ``scores`` (float[m], row positions) scaled to [0, 1], float64[m].

    The lowest score maps to 0 and the highest to 1; ties share their average rank, so an
    all-equal array (and a single score) maps to 0.5. Only the order matters, which puts
    scores on different scales (entropy in nats, negative margins) on one footing.
    """
    scores = np.asarray(scores, dtype=np.float64)
    m = scores.size
    if m == 1:
        return np.full(1, 0.5)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts  # [u] 0-based rank of each distinct value's first copy
    average = starts + (counts - 1) / 2.0  # [u] mean of the 0-based ranks it spans
    return average[inverse.reshape(-1)] / (m - 1)


def two_stage_select(
    scores: np.ndarray | None,
    inputs: QueryInputs,
    k: int,
    rng: np.random.Generator,
    *,
    beta: float,
    diversity: Strategy,
    weighted: bool = False,
) -> Selection:
    """Shortlist then diversify: ``k`` row positions into ``inputs.unlabeled``.

    ``scores`` (float64[m], row positions; the first stage's uncertainty) pick the
    ``min(m, ceil(beta * k))`` best rows; ``diversity`` then selects ``k`` among them on
    ``inputs.with_candidates(shortlist)``, and its picks (pool ids) are mapped back to rows.
    ``weighted``: ``diversity`` is given the shortlist's informativeness as its scores
    (``scores - min(scores)``, float64[n]: ``1 - gap`` for margin), which weighted k-means
    uses as sample weights (Zhdanov, 2019); else it is given its own scores.
    """
    if scores is None:
        raise InvalidInputError("two_stage needs the first stage's scores, none were given")
    m = inputs.n_candidates
    n_short = min(m, max(k, math.ceil(beta * k)))
    shortlist = top_k(scores, inputs, n_short, rng)  # [n] rows, best first
    sub = inputs.with_candidates(shortlist)
    if weighted:
        # Shifted by the least informative candidate of all m, not of the shortlist, which
        # would weigh the shortlist's last member 0.
        w = scores[shortlist] - scores.min()  # [n]
        picked = diversity.select(w if w.any() else None, sub, k, rng)  # all tied: unweighted
    else:
        picked = diversity.select(diversity.score(sub), sub, k, rng)
    # sub.unlabeled[j] == inputs.unlabeled[shortlist[j]]: pool id -> j -> row.
    order = np.argsort(sub.unlabeled)
    j = order[np.searchsorted(sub.unlabeled[order], picked.pool_ids)]  # [k]
    info: dict = {"shortlist": int(n_short)}
    if weighted:
        info["weighted"] = True
    if picked.info:
        info["diversity_info"] = dict(picked.info)
    return Selection(rows=shortlist[j], info=info)


def fuse_scores(inputs: QueryInputs, parts: tuple[tuple[Strategy, float], ...]) -> np.ndarray:
    """``sum_i w_i * rank_normalise(score_i)`` with the weights summing to 1: float64[m] in
    [0, 1], row positions."""
    total = np.zeros(inputs.n_candidates)  # [m]
    for strategy, weight in parts:
        total += weight * rank_normalise(strategy.score(inputs))
    return total


# ---------------------------------------------------------------------------- registration



def _scoring_part(hybrid: str, option: str, name) -> Strategy:
    """The registered strategy ``name``, which must have a scorer."""
    if not isinstance(name, str):
        raise StrategyOptionError(f"{hybrid} option {option} must name a strategy, got {name!r}")
    try:
        strategy = get_strategy(name)
    except UnknownStrategyError as err:
        raise StrategyOptionError(f"{hybrid} option {option}: {err}") from None
    if strategy.scorer is None:
        raise StrategyOptionError(
            f"{hybrid} option {option}: '{name}' has no scores (it only selects); use a "
            "scoring strategy such as margin, entropy or bald"
        )
    return strategy


# The ``needs`` registered below are those of the default options; a built strategy's needs
# are the union of its parts' (computed in the factory).


@register(
    "two_stage",
    "the beta*k most uncertain candidates, then a diversity selector among them "
    "(optionally k-means weighted by their uncertainty)",
    frozenset({"probs", "embeddings"}),
)
def _two_stage(
    score: str = "margin", beta: float = 5.0, diversity: str = "kmeans", weighted: bool = False
) -> Strategy:
    first = _scoring_part("two_stage", "score", score)
    if isinstance(beta, bool) or not isinstance(beta, Real) or not (
        math.isfinite(beta) and beta >= 1
    ):
        raise StrategyOptionError(
            f"two_stage option beta must be a finite number >= 1, got {beta!r}"
        )
    if not isinstance(diversity, str):
        raise StrategyOptionError(
            f"two_stage option diversity must name a strategy, got {diversity!r}"
        )
    try:
        second = get_strategy(diversity)
    except UnknownStrategyError as err:
        raise StrategyOptionError(f"two_stage option diversity: {err}") from None
    if not isinstance(weighted, bool):
        raise StrategyOptionError(f"two_stage option weighted must be true or false, got {weighted!r}")
    if weighted:
        if diversity != "kmeans":
            raise StrategyOptionError(
                f"two_stage option weighted needs diversity: kmeans (weighted k-means), got {diversity!r}"
            )
        # the registered kmeans selector with its options, handed the weights by keyword
        second = Strategy(
            name="kmeans", selector=partial(_scores_as_weights, second.selector), needs=second.needs
        )
    needs = get_spec(score).needs | get_spec(diversity).needs
    return Strategy(
        name="two_stage",
        scorer=first.score,
        selector=partial(two_stage_select, beta=float(beta), diversity=second, weighted=weighted),
        needs=needs,
    )


def _scores_as_weights(
    select, scores: np.ndarray | None, inputs: QueryInputs, k: int, rng: np.random.Generator
) -> Selection:
    """``select`` (a ``cluster_select`` partial) with ``scores`` (float64[m], row positions)
    as its k-means sample weights (None: unweighted)."""
    return select(None, inputs, k, rng, sample_weights=scores)


@register(
    "fusion",
    "weighted sum of rank-normalised scores of several scoring strategies "
    "(default: margin 0.5 + entropy 0.5)",
    frozenset({"probs"}),
)
def _fusion(weights: Mapping[str, float] | None = None) -> Strategy:
    """``weights`` maps scoring strategy names to non-negative weights (None: margin and
    entropy, 0.5 each). Weights are rescaled to sum to 1; zero-weight parts are dropped."""
    if weights is None:
        weights = {"margin": 0.5, "entropy": 0.5}
    if not isinstance(weights, Mapping):
        raise StrategyOptionError(
            f"fusion option weights must map strategy names to weights, got {weights!r}"
        )
    for name, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, Real) or not math.isfinite(w):
            raise StrategyOptionError(
                f"fusion weight of '{name}' must be a finite number, got {w!r}"
            )
        if w < 0:
            raise StrategyOptionError(f"fusion weight of '{name}' is negative ({w})")
    total = float(sum(weights.values()))
    if total <= 0:
        raise StrategyOptionError(
            f"fusion weights must not all be zero (got {len(weights)} weights summing to {total})"
        )
    parts = []
    needs: frozenset[str] = frozenset()
    for name, w in weights.items():
        strategy = _scoring_part("fusion", "weights", name)
        if w > 0:
            parts.append((strategy, float(w) / total))
            needs |= get_spec(name).needs
    return Strategy(
        name="fusion", scorer=partial(fuse_scores, parts=tuple(parts)), selector=top_k, needs=needs
    )
