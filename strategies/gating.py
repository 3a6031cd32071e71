"""Near-duplicate gating: wrap any strategy so its batch holds no near-copies.

A pool scraped from logs or the web repeats itself; uncertainty sampling then spends a
batch on ten paraphrases of one confusing request, and a labeler on texts the model has
effectively seen. The gate drops a candidate when its cosine similarity to a labeled
example, or to an example taken earlier in the same batch, is at or above ``threshold``.

Similarities are inner products of the L2-normalised embeddings, computed against the
labeled rows with a FAISS flat inner-product index (k=1, block by block) and against the
batch with small numpy matmuls; memory stays ``O(m)`` plus one block and the batch.
"""

from __future__ import annotations

import dataclasses

import math
from functools import partial
from numbers import Real

import numpy as np

from strategies import selectors
from strategies.base import QueryInputs, Selection, Strategy
from strategies.diversity import BLOCK_BYTES, CandidateBlocks, labeled_vectors, nearest_labeled
from strategies.registry import StrategyOptionError

__all__ = ["gate_near_duplicates", "gated_select"]

# float32 inner products of identical unit vectors land a few ulps either side of 1, so a
# threshold of 1 ("exact copies only") needs this slack to catch them.
_SLACK = 1e-6

#: Times the inner selector is re-run to refill places freed by in-batch duplicates.
MAX_ROUNDS = 8

# Candidates checked against each other at once: bounds the [b, b] and [b, k] products.
_OFFER_ROWS = 1024


def gate_near_duplicates(strategy: Strategy, threshold: float) -> Strategy:
    """``strategy`` with near-duplicates removed from its batches.

    The returned Strategy has the same name and scorer and needs ``embeddings`` besides
    what ``strategy`` needs. ``threshold`` is a cosine similarity in ``(0, 1]``: a
    candidate at or above it (up to float32 rounding) with respect to a labeled example or
    an earlier pick of the batch is dropped. See ``gated_select`` for how the batch is
    refilled and what ``Selection.info`` reports.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, Real):
        raise StrategyOptionError(
            f"near-duplicate threshold must be a number in (0, 1], got {threshold!r}"
        )
    t = float(threshold)
    if not (math.isfinite(t) and 0.0 < t <= 1.0):
        raise StrategyOptionError(f"near-duplicate threshold must be in (0, 1], got {t}")
    return Strategy(
        name=strategy.name,
        selector=partial(gated_select, inner=strategy, threshold=t),
        scorer=strategy.scorer,
        needs=strategy.needs | {"embeddings"},
    )


def gated_select(
    scores: np.ndarray | None,
    inputs: QueryInputs,
    k: int,
    rng: np.random.Generator,
    *,
    inner: Strategy,
    threshold: float,
    max_rounds: int = MAX_ROUNDS,
    chunk_rows: int | None = None,
) -> Selection:
    """``inner``'s selection without near-duplicates: ``k`` unique row positions into
    ``inputs.unlabeled``.

    Candidates at or above ``threshold`` to a labeled example (``inputs.labeled``, pool
    ids) are removed first. Then:

    * score-ranked strategies (``inner.selector`` is ``selectors.top_k``) walk the
      candidates best score first, with the same random tie-break as ``top_k``, skipping
      any candidate too close to one already taken;
    * any other selector is run on the remaining candidates, with the batch so far counted
      as labeled; picks too close to an earlier pick are dropped, every candidate too close
      to an accepted pick is removed, and the selector is re-run for the places left, at
      most ``max_rounds`` times; after that, the rest is walked in row order.

    Without near-duplicates both give exactly ``inner``'s batch for the same ``rng``. When
    too few non-duplicates remain, the batch is filled with the remaining candidates least
    similar to the labeled set and the batch (one ranking, ties to the lower row), instead
    of failing.

    ``info``: the inner selector's info (of its first run), plus ``dedup_threshold``,
    ``dedup_dropped_labeled`` (candidates removed as near-copies of a labeled example and
    not used to fill), ``dedup_dropped_in_batch`` (candidates the selection reached and
    skipped because of an earlier pick), ``dedup_filled`` and ``dedup_rounds``.
    """
    emb = inputs.embeddings
    m = inputs.n_candidates
    cut = np.float32(threshold - _SLACK)
    blocks = CandidateBlocks(emb, inputs.unlabeled, chunk_rows)
    sim_lab = np.empty(m, dtype=np.float32)  # [m] by row position
    sim_lab[blocks.rows] = nearest_labeled(blocks, labeled_vectors(emb, inputs.labeled), "ip")
    dup_lab = sim_lab >= cut  # [m]
    batch = _Batch(emb, inputs.unlabeled, k, cut)
    inner_info: dict = {}
    own: dict[int, float] = {}
    rounds = 0
    if inner.selector is selectors.top_k and scores is not None:
        tiebreak = rng.random(m)  # [m], drawn as top_k draws it, so no duplicates = top_k
        best_first = np.lexsort((tiebreak, -scores))  # [m] rows
        rank = np.empty(m, dtype=np.int64)  # fill ties go to the better score
        rank[best_first] = np.arange(m)
        order = best_first[~dup_lab[best_first]]
        step = max(64, min(4 * k, _OFFER_ROWS))
        for pos in range(0, order.size, step):
            batch.offer(order[pos : pos + step])
            if batch.full:
                break
        rounds = 1
    else:
        rank = np.arange(m)
        avail = np.flatnonzero(~dup_lab)  # [a] rows, ascending
        while not batch.full and avail.size and rounds < max_rounds:
            rounds += 1
            need = k - batch.n
            if avail.size <= need:
                proposal = avail
            else:
                sub = inputs if (avail.size == m) else _subset(inputs, avail, batch.pool_ids())
                out = inner.selector(None if scores is None else scores[avail], sub, need, rng)
                if isinstance(out, Selection):
                    if not inner_info:
                        inner_info = dict(out.info)
                    local = np.asarray(out.rows, dtype=np.int64)
                    if out.scores is not None:
                        own.update(zip(avail[local].tolist(), np.asarray(out.scores).tolist()))
                else:
                    local = np.asarray(out, dtype=np.int64)
                proposal = avail[local]
            accepted = batch.offer(proposal)
            avail = np.setdiff1d(avail, proposal, assume_unique=True)
            if accepted.size and avail.size and not batch.full:
                near = batch.max_sim(avail, emb[inputs.unlabeled[accepted]]) >= cut  # [a]
                avail = avail[~near]
        if not batch.full and avail.size:
            # Out of rounds: take what is left in row order, still without duplicates, so
            # that the fill below only ever happens when the non-duplicates ran out.
            batch.offer(avail)
    n_fill = k - batch.n
    if n_fill:
        rest = np.setdiff1d(np.arange(m), batch.rows(), assume_unique=True)  # [r]
        sim = np.maximum(sim_lab[rest], batch.max_sim(rest))  # [r]
        fill = rest[np.lexsort((rank[rest], sim))[:n_fill]]
        batch.force(fill)
    rows = batch.rows()
    n_lab = int(dup_lab.sum() - dup_lab[rows].sum())
    info = {
        **inner_info,
        "dedup_threshold": float(threshold),
        "dedup_dropped_labeled": n_lab,
        "dedup_dropped_in_batch": batch.dropped,
        "dedup_filled": int(n_fill),
        "dedup_rounds": rounds,
    }
    picked_scores = None
    if own:
        fallback = scores if scores is not None else np.full(m, np.nan)
        picked_scores = np.array([own.get(int(r), fallback[r]) for r in rows], dtype=np.float64)
    return Selection(rows=rows, scores=picked_scores, info=info)


class _Batch:
    """The batch being built: row positions and their float32 embeddings ``[<= k, d]``."""

    def __init__(self, emb: np.ndarray, unlabeled: np.ndarray, k: int, cut: np.float32) -> None:
        self.emb, self.unlabeled, self.k, self.cut = emb, unlabeled, k, cut
        self.x = np.empty((k, emb.shape[1]), dtype=np.float32)  # [k, d]
        self._rows: list[int] = []
        self.dropped = 0

    @property
    def n(self) -> int:
        return len(self._rows)

    @property
    def full(self) -> bool:
        return self.n >= self.k

    def rows(self) -> np.ndarray:
        return np.asarray(self._rows, dtype=np.int64)

    def pool_ids(self) -> np.ndarray:
        return self.unlabeled[self.rows()]

    def _vectors(self, rows: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self.emb[self.unlabeled[rows]], dtype=np.float32)

    def offer(self, rows: np.ndarray) -> np.ndarray:
        """Take ``rows`` (row positions) in order, skipping near-copies of earlier picks,
        until the batch is full; returns the rows taken. Works ``_OFFER_ROWS`` at a time,
        so the largest temporary is ``[_OFFER_ROWS, k]``."""
        taken = [np.empty(0, dtype=np.int64)]
        for s in range(0, rows.size, _OFFER_ROWS):
            if self.full:
                break
            taken.append(self._offer_block(rows[s : s + _OFFER_ROWS]))
        return np.concatenate(taken)

    def _offer_block(self, rows: np.ndarray) -> np.ndarray:
        xb = self._vectors(rows)  # [b, d]
        b = xb.shape[0]
        prev = (xb @ self.x[: self.n].T).max(axis=1) if self.n else np.full(b, -np.inf)  # [b]
        within = xb @ xb.T  # [b, b]
        taken: list[int] = []
        for i in range(b):
            if self.n + len(taken) >= self.k:
                break
            if prev[i] >= self.cut or (taken and within[i, taken].max() >= self.cut):
                self.dropped += 1
                continue
            taken.append(i)
        self.x[self.n : self.n + len(taken)] = xb[taken]
        self._rows.extend(rows[taken].tolist())
        return rows[taken]

    def force(self, rows: np.ndarray) -> None:
        """Append ``rows`` without any check (the fallback fill)."""
        self.x[self.n : self.n + rows.size] = self._vectors(rows)
        self._rows.extend(rows.tolist())

    def max_sim(self, rows: np.ndarray, against: np.ndarray | None = None) -> np.ndarray:
        """float32[len(rows)]: each row's largest inner product with ``against`` ``[j, d]``
        (default: the batch), ``-inf`` when that is empty; ``rows`` are gathered in blocks."""
        against = self.x[: self.n] if against is None else np.asarray(against, np.float32)
        out = np.full(rows.size, -np.inf, dtype=np.float32)
        if against.shape[0] == 0:
            return out
        step = max(256, BLOCK_BYTES // (4 * max(self.emb.shape[1], against.shape[0])))
        for s in range(0, rows.size, step):
            out[s : s + step] = (self._vectors(rows[s : s + step]) @ against.T).max(axis=1)
        return out


def _subset(inputs: QueryInputs, rows: np.ndarray, taken: np.ndarray) -> QueryInputs:
    """``inputs`` restricted to candidate ``rows`` (row positions), with the pool ids in
    ``taken`` (this batch so far) counted as labeled, so that a labeled-aware selector
    (k-center, farthest-from-labeled k-means) spreads its new picks away from them."""
    rows = np.asarray(rows, dtype=np.int64)
    sub = inputs.with_candidates(rows)  # every row-aligned input, sliced alike
    return dataclasses.replace(sub, labeled=np.concatenate([inputs.labeled, taken]).astype(np.int64))
