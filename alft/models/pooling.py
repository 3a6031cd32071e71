"""Linear opinion pool of the campaign's classifier and the LLM labeler (``oracle.prelabel: pooled``).

    p(c | x) = (1 - λ) · p_model(c | x) + λ · p_llm(c | x)

A mixture, not a product. Early in a campaign the classifier gives (almost) zero to every
class it has no label for, which is most of them at 77 intents; a product keeps those zeros,
so it can never propose an unseen class, and it lets an overconfident source rank everything
(SmolLM2's few-shot rows put 0.55-0.69 on their top label at 20 % accuracy). A mixture
keeps every class either source finds plausible and lets the better-ranking one order them.

λ is chosen on labels people already gave (``fit_share``): the grid value whose pooled
probabilities put the human label highest in the list the labeling page shows (the top
``list_size`` labels at ``min_p`` or more; a label missing from it counts as
``list_size + 2``), ties to the smaller λ (the campaign's own classifier). Ranking, not
log-likelihood: on BANKING77 (seed 0) a log-likelihood-fitted product gave the LLM all the
weight (the classifier's zeros on unseen classes cost it dearly) and saved 16 % of the
simulated labeling seconds where the classifier alone saves 32 %; this mixture saves 31-37 %
over 3 seeds, 2.4 % less time than the classifier alone on average (README, *Pre-labels*;
``benchmarks/results/llm_effort.json``). Until ``MIN_FIT`` such labels exist λ is
``DEFAULT_SHARE``.

Pure numpy: rows are examples, columns the label set in its order.
"""

from __future__ import annotations

import numpy as np

from alft.errors import ModelError

#: λ before ``MIN_FIT`` labeled rows with both sources exist: an equal mixture
DEFAULT_SHARE = 0.5
#: labeled rows (with both sources' probabilities) needed before λ is fitted
MIN_FIT = 20
#: the LLM shares tried
GRID = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


def _check(p: np.ndarray, name: str) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2:
        raise ModelError(f"{name}: probabilities must be [n, C], got shape {p.shape}")
    bad = np.flatnonzero(~(np.isfinite(p).all(axis=1) & (p >= 0).all(axis=1)))
    if bad.size:
        raise ModelError(f"{name}: {bad.size} rows hold a NaN, infinite or negative probability (first: row {int(bad[0])})")
    return p


def pool(p_model: np.ndarray, p_llm: np.ndarray, share: float = DEFAULT_SHARE) -> np.ndarray:
    """float64 ``[n, C]``: ``(1 - share) * p_model + share * p_llm``, rows renormalised."""
    a, b = _check(p_model, "pooled classifier"), _check(p_llm, "pooled LLM")
    if a.shape != b.shape:
        raise ModelError(f"pooled sources disagree in shape: {a.shape} vs {b.shape}")
    share = float(share)
    if not 0.0 <= share <= 1.0:
        raise ModelError(f"the LLM's share of the pool must be in [0, 1], got {share}")
    p = (1.0 - share) * a + share * b  # [n, C]
    s = p.sum(axis=1, keepdims=True)  # [n, 1]
    if (s <= 0).any():
        raise ModelError(f"pooled row {int(np.flatnonzero(s[:, 0] <= 0)[0])} has no probability mass")
    return p / s


def list_positions(p: np.ndarray, y: np.ndarray, list_size: int, min_p: float) -> np.ndarray:
    """int[n]: where label ``y[i]`` stands in row ``i``'s list (1 = first): the ``list_size``
    most probable labels at ``min_p`` or more, ties by label order; ``list_size + 2`` when absent."""
    n, c = p.shape
    order = np.argsort(-p, axis=1, kind="stable")[:, :list_size]  # [n, L]
    listed = np.take_along_axis(p, order, axis=1) >= min_p  # [n, L]
    hit = (order == np.asarray(y)[:, None]) & listed  # [n, L]
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, list_size + 2)


def fit_share(
    p_model: np.ndarray, p_llm: np.ndarray, y: np.ndarray, *, list_size: int, min_p: float,
    grid: tuple[float, ...] = GRID, min_rows: int | None = None,
) -> tuple[float, dict[str, float | int]]:
    """The λ of ``grid`` whose pool puts the labels ``y`` (int[n], column indices) highest in
    the page's list on average, and what the fit saw; ``DEFAULT_SHARE`` under ``min_rows``
    (default ``MIN_FIT``) rows. Ties go to the smaller λ."""
    y = np.asarray(y, dtype=np.int64)
    n = int(y.size)
    if n < (MIN_FIT if min_rows is None else min_rows):
        return DEFAULT_SHARE, {"fit_rows": n, "fitted": 0}
    a, b = _check(p_model, "pooled classifier"), _check(p_llm, "pooled LLM")
    if a.shape != b.shape or a.shape[0] != n:
        raise ModelError(f"pool fit: shapes {a.shape}, {b.shape} for {n} labels")
    if y.min() < 0 or y.max() >= a.shape[1]:
        raise ModelError(f"pool fit: label index out of range 0..{a.shape[1] - 1}")
    best, best_pos = DEFAULT_SHARE, np.inf
    for share in sorted(float(g) for g in grid):
        pos = float(list_positions(pool(a, b, share), y, list_size, min_p).mean())
        if pos < best_pos - 1e-12:
            best, best_pos = share, pos
    return best, {"fit_rows": n, "fitted": 1, "fit_list_position": round(best_pos, 4)}
