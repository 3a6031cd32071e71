"""Core-set selection: greedy k-center over the embeddings (Sener & Savarese's core-set
approach, with Gonzalez's farthest-first traversal).

The batch is chosen to minimise the *covering radius*, the largest distance from any
candidate to its nearest labeled-or-selected example, by always taking the candidate
farthest from everything taken so far. Greedy is within a factor 2 of the optimal radius.

Distances are Euclidean between embeddings (for unit vectors ``d^2 = 2 - 2 cos``). The
state is one float32 vector over the candidates, the squared distance of each to its
nearest centre as of its last update, brought up to date lazily, a cell of positions at a
time, only where it could still hold the next pick (``_greedy``). Time ``O(m * l * d)``
for the labeled distances plus, at worst, ``O(m * k * d)`` for the picks (in practice a
small fraction of it); extra memory ``O(m)`` plus ``k`` centres and one block; no ``[m, m]``
matrix anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import partial

import numpy as np

from strategies.base import MissingInputError, QueryInputs, Selection, Strategy
from strategies.diversity import CandidateBlocks, labeled_vectors, nearest_labeled
from strategies.registry import StrategyOptionError, register

__all__ = ["covering_radius", "kcenter_approx_select", "kcenter_select"]

#: Below this many labeled examples, the approximate variant still searches them exactly:
#: an IVF index only pays for its training once the labeled set is large.
IVF_MIN_LABELED = 50_000

#: Positions per cell of the lazy traversal (``_greedy``): the unit brought up to date at once.
#: Smaller cells skip more work but pay more Python per refresh (benchmarks/selection_scale.py).
CELL_ROWS = 16384


def _faiss():
    import faiss  # heavy import kept local so `alft strategies` stays instant

    return faiss


def _sq_dists(
    faiss, blocks: CandidateBlocks, y: np.ndarray, buf: np.ndarray
) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(start, end, d2)``: squared L2 distances float32[end - start] from the candidates
    at positions ``start .. end`` to ``y`` float32[d], window by window.

    FAISS's single-threaded SIMD kernel rather than ``blk @ y``: this is a memory-bound
    matrix-vector product, and multi-threaded BLAS pays its thread hand-off on every call,
    several times the work itself on a busy machine (measured 3x slower on 2 shared cores).
    ``buf``: float32 scratch of at least the largest window's rows.
    """
    y_ptr = faiss.swig_ptr(y)
    for s, e, blk, sel in blocks.windows():
        n = blk.shape[0]
        faiss.fvec_L2sqr_ny(faiss.swig_ptr(buf), y_ptr, faiss.swig_ptr(blk), blocks.d, n)
        yield s, e, (buf[:n] if sel is None else buf[sel])  # [b]


def _greedy(
    blocks: CandidateBlocks, init_d2: np.ndarray | None, k: int, cell_rows: int = CELL_ROWS
) -> tuple[np.ndarray, float, str]:
    """Farthest-first traversal over ``blocks``, exact, with lazy distance updates.

    ``init_d2``: float32[m] by position, squared distance of each candidate to its nearest
    labeled example (overwritten), or None when nothing is labeled. Returns the ``k`` picked
    *positions* in pick order, the squared covering radius after them (``-inf`` when every
    candidate is taken) and how the first pick was made.

    With nothing labeled, the first pick is the candidate farthest from the candidates'
    mean: deterministic (no rng draw), and an extreme point of the pool, so the traversal
    starts at the boundary rather than in the middle of a dense mode. Every later pick is
    the candidate with the largest squared distance to its nearest centre; ties go to the
    lowest position, that is the lowest pool id.

    Why lazy: a pass over all ``m`` candidates per pick is bounded by memory bandwidth (1,000
    passes over a 1M x 384 pool read 1.5 TB). Distances to the nearest centre only shrink,
    so a candidate's distance as of its last update is an upper bound. Each candidate keeps
    the number of centres its distance has seen; positions are cut into cells of
    ``cell_rows``, each with the max of its (possibly stale) distances. A pick (``settle``)
    brings up to date only the stale candidates at or above a threshold taken from the top
    cells' maxima, lowering it until the largest distance is known to be exact; candidates
    far from the new centres are rarely touched again. Every stored distance is the same
    FAISS kernel value an eager pass would compute (a GEMM only shortlists the centres) and a
    minimum is exact, so the picks are identical to the eager traversal's
    (``benchmarks/kcenter_reference.py``), ties included: the first cell holding the maximum,
    and its first position, is the lowest position.
    """
    faiss = _faiss()
    m, d = blocks.m, blocks.d
    if init_d2 is None:
        total = np.zeros(d, dtype=np.float64)
        for _, _, blk in blocks:
            total += blk.sum(axis=0, dtype=np.float64)  # [d]
        mean = (total / m).astype(np.float32)  # [d]
        buf = np.empty(blocks.chunk_rows, dtype=np.float32)  # windows never exceed chunk_rows
        to_mean = np.empty(m, dtype=np.float32)
        for s, e, d2 in _sq_dists(faiss, blocks, mean, buf):
            to_mean[s:e] = d2
        first = int(np.argmax(to_mean))
        del to_mean, buf
        mind = np.full(m, np.inf, dtype=np.float32)
        how = "farthest_from_mean"
    else:
        mind = init_d2
        first = int(np.argmax(mind))
        how = "farthest_from_labeled"
    c = max(1, int(cell_rows))
    starts = np.arange(0, m, c)  # [cells] first position of each cell
    n_cells = starts.size
    seen = np.zeros(m, dtype=np.int32)  # [m] centres each candidate's distance accounts for
    centres = np.empty((k + 1, d), dtype=np.float32)  # [k, d] picked vectors, pick order
    neg2c = np.empty((k + 1, d), dtype=np.float32)  # [k, d] -2 x the centres
    sq = np.empty(k + 1, dtype=np.float32)  # [k] their squared norms
    # float32 GEMM distances are within this relative error of the kernel's (d roundings of
    # |x|^2 + |c|^2 - 2 x.c, with a margin of 4)
    rel = 4.0 * d * float(np.finfo(np.float32).eps)
    n = 0  # centres so far

    def refresh(pos: np.ndarray) -> None:
        """Bring the candidates at ``pos`` up to date against the centres they have not seen.

        A float32 GEMM finds, for each candidate, the centres within rounding error of its
        nearest; only those are measured with the FAISS kernel, so the stored distance is
        exactly the kernel value an eager pass would hold (picks identical, ties included).
        """
        lo = int(seen[pos].min())
        x = blocks.gather(pos)  # [r, d]
        # |x - c|^2 = |x|^2 + (|c|^2 - 2 x.c): the first term is the same for a row's every
        # centre, so the row's nearest needs only h. Centres a row has seen are left in:
        # mind is already at most their distance, so they change nothing.
        h = x @ neg2c[lo:n].T  # [r, p]
        h += sq[None, lo:n]
        # the GEMM's rounding, bounded for every centre of the row at once
        tol = 2.0 * rel * (np.einsum("ij,ij->i", x, x) + sq[lo:n].max())  # [r]
        near_t, near_j = np.nonzero(h <= (h.min(axis=1) + tol)[:, None])  # [q]
        exact = np.empty(near_t.size, dtype=np.float32)  # [q] kernel values of those pairs
        xt = np.ascontiguousarray(x[near_t])  # [q, d]
        ids = (near_j + lo).astype(np.int64)
        faiss.fvec_L2sqr_by_idx(
            faiss.swig_ptr(exact), faiss.swig_ptr(xt), faiss.swig_ptr(centres),
            faiss.swig_ptr(ids), d, near_t.size, 1,
        )
        best = np.full(pos.size, np.inf, dtype=np.float32)
        np.minimum.at(best, near_t, exact)
        np.minimum(mind[pos], best, out=best)
        mind[pos] = best
        seen[pos] = n

    def cell_max(cells: np.ndarray) -> np.ndarray:
        return np.array([mind[i * c : i * c + c].max() for i in cells.tolist()], dtype=np.float32)

    cmax = np.empty(n_cells, dtype=np.float32)  # [cells] max (possibly stale) distance

    def settle() -> int:
        """The next pick: the position with the largest exact distance (first on ties).

        Rounds of: take the ``w`` cells with the largest maxima, threshold ``tau`` the
        smallest of those maxima, bring every stale candidate at or above ``tau`` up to date
        (one GEMM). Then every distance >= tau anywhere is exact; if one remains the top is
        exact and it is the pick, else the next round goes lower, with twice the cells.
        """
        w = 8
        while True:
            top = np.argpartition(-cmax, w - 1)[:w] if w < n_cells else np.arange(n_cells)
            tau = cmax[top].min()
            cells = np.flatnonzero(cmax >= tau)  # the top w and any tied with the w-th
            rows = [i * c + np.flatnonzero((mind[i * c : i * c + c] >= tau) & (seen[i * c : i * c + c] < n))
                    for i in cells.tolist()]
            stale = np.concatenate(rows) if rows else np.empty(0, dtype=np.int64)
            if stale.size:
                refresh(stale)
                cmax[cells] = cell_max(cells)
            best = cmax.max()
            if best >= tau:  # every distance >= tau is exact: the top one is the pick
                first = int(np.flatnonzero(cmax == best)[0])
                s = first * c
                return s + int(np.argmax(mind[s : s + c]))
            w *= 2

    from threadpoolctl import threadpool_limits

    picks = np.empty(k, dtype=np.int64)
    nxt = first
    # The traversal is sequential: small GEMMs and FAISS calls, one after the other. Thread
    # pools pay a hand-off on each (measured on 2 shared cores: 38 CPU s at 100k with the
    # default pools against 1.4 s with one thread, the same picks).
    with threadpool_limits(limits=1):
        for t in range(k):
            picks[t] = nxt
            centres[n] = blocks.vector(nxt)
            sq[n] = float(np.dot(centres[n], centres[n]))
            neg2c[n] = -2.0 * centres[n]
            mind[nxt] = -np.inf  # never again
            n += 1
            if t == 0:
                cmax[:] = np.maximum.reduceat(mind, starts)
            else:
                cmax[nxt // c] = mind[nxt // c * c : nxt // c * c + c].max()
            if t + 1 < k:
                nxt = settle()
        radius2 = mind[settle()] if m > k else -np.inf
    return picks, float(radius2), how


def _radius(d2: float) -> float:
    """Euclidean radius from a squared one; 0 when every candidate is taken (``-inf``)."""
    return math.sqrt(max(d2, 0.0)) if d2 != -np.inf else 0.0


def kcenter_select(
    scores: np.ndarray | None,
    inputs: QueryInputs,
    k: int,
    rng: np.random.Generator,
    *,
    chunk_rows: int | None = None,
    cell_rows: int = CELL_ROWS,
) -> Selection:
    """Exact greedy k-center: ``k`` row positions into ``inputs.unlabeled``, farthest first.

    ``scores`` and ``rng`` are unused (the result is a deterministic function of the
    embeddings). The distance of every candidate to its nearest labeled example
    (``inputs.labeled``, pool ids) is found with a FAISS ``IndexFlatL2`` over the labeled
    rows, searched block by block; then ``k`` picks, each the candidate farthest from the
    labeled set and the batch so far, the distances brought up to date lazily (``_greedy``).
    ``chunk_rows`` bounds the rows per block (default: 32 MiB of float32); ``cell_rows`` is
    the lazy traversal's cell (``_greedy``; it changes speed, never the picks).

    ``info``: ``covering_radius`` (Euclidean, max over candidates of the distance to the
    nearest labeled or selected example, after selection), ``radius_before`` (the same
    before selection; None with nothing labeled) and ``first_pick``.
    """
    if inputs.embeddings is None:
        raise MissingInputError("k-center selection needs embeddings, none were given")
    blocks = CandidateBlocks(inputs.embeddings, inputs.unlabeled, chunk_rows)
    init = None
    if inputs.labeled.size:
        init = nearest_labeled(blocks, labeled_vectors(inputs.embeddings, inputs.labeled), "l2")
    before = _radius(float(init.max())) if init is not None else None
    picks, radius2, how = _greedy(blocks, init, k, cell_rows)
    return Selection(
        rows=blocks.to_rows(picks),
        info={"covering_radius": _radius(radius2), "radius_before": before, "first_pick": how},
    )


def _ivf_nearest_labeled(
    blocks: CandidateBlocks, labeled_x: np.ndarray, rng: np.random.Generator, nprobe: int
) -> np.ndarray:
    """Approximate squared L2 distance to the nearest labeled example, float32[m].

    An IVF-flat index with about ``4 sqrt(l)`` lists (and at least 39 training points per
    list, FAISS's own floor) probed ``nprobe`` lists deep; a miss overestimates the
    distance, which at worst makes k-center prefer that candidate a little too early.
    """
    faiss = _faiss()
    n_lab, d = labeled_x.shape
    nlist = max(1, min(int(4 * math.sqrt(n_lab)), n_lab // 39))
    quantizer = faiss.IndexFlatL2(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_L2)
    index.cp.seed = int(rng.integers(1, 2**31 - 1))
    index.train(labeled_x)
    index.add(labeled_x)
    index.nprobe = min(nprobe, nlist)
    out = np.empty(blocks.m, dtype=np.float32)
    for s, e, blk in blocks:
        dist, ids = index.search(blk, 1)  # [b, 1] each
        out[s:e] = np.where(ids[:, 0] >= 0, dist[:, 0], np.inf)
    np.maximum(out, 0.0, out=out)
    return out


def kcenter_approx_select(
    scores: np.ndarray | None,
    inputs: QueryInputs,
    k: int,
    rng: np.random.Generator,
    *,
    sample: int = 100_000,
    nprobe: int = 16,
    ivf_min_labeled: int = IVF_MIN_LABELED,
    chunk_rows: int | None = None,
    cell_rows: int = CELL_ROWS,
) -> Selection:
    """Greedy k-center on a random subsample, for pools too large for ``kcenter_select``.

    Row positions into ``inputs.unlabeled``. ``max(sample, k)`` candidates are drawn with
    ``rng`` and copied into one contiguous block, so each greedy pass reads ``sample`` rows
    instead of ``m``: time ``O(sample * (l + k) * d)``, extra memory ``O(sample * d)``; a
    pool no larger than the sample is run exactly, in place. When at least
    ``ivf_min_labeled`` examples are labeled, their distances come from an IVF index
    (``nprobe`` lists probed) instead of a flat one. Candidates outside the sample are never
    picked, which is the quality cost (measured in benchmarks/selection_scale.py).

    ``info``: ``covering_radius_sample`` (the covering radius over the sample only;
    ``covering_radius`` computes the true one), ``sampled`` and ``ivf``.
    """
    if inputs.embeddings is None:
        raise MissingInputError("k-center selection needs embeddings, none were given")
    m = inputs.n_candidates
    n_s = min(m, max(int(sample), k))
    if n_s < m:
        sub_rows = np.sort(rng.choice(m, n_s, replace=False))  # [s] row positions
        # One contiguous copy of the sample: the greedy passes then read views, not gathers.
        x = np.ascontiguousarray(inputs.embeddings[inputs.unlabeled[sub_rows]], dtype=np.float32)
        blocks = CandidateBlocks(x, np.arange(n_s), chunk_rows)
    else:  # the sample is the pool: exact k-center, no copy
        sub_rows = np.arange(m)
        blocks = CandidateBlocks(inputs.embeddings, inputs.unlabeled, chunk_rows)
    use_ivf = inputs.labeled.size >= ivf_min_labeled
    init = None
    if inputs.labeled.size:
        lab_x = labeled_vectors(inputs.embeddings, inputs.labeled)
        if use_ivf:
            init = _ivf_nearest_labeled(blocks, lab_x, rng, nprobe)
        else:
            init = nearest_labeled(blocks, lab_x, "l2")
        del lab_x
    picks, radius2, how = _greedy(blocks, init, k, cell_rows)
    return Selection(
        rows=sub_rows[blocks.to_rows(picks)],
        info={
            "covering_radius_sample": _radius(radius2),
            "sampled": int(n_s),
            "ivf": bool(use_ivf),
            "first_pick": how,
        },
    )


def covering_radius(
    inputs: QueryInputs, rows: np.ndarray, chunk_rows: int | None = None
) -> float:
    """Largest Euclidean distance from a candidate to its nearest labeled or selected example.

    ``rows``: row positions into ``inputs.unlabeled`` (the selection). Exact (FAISS flat L2
    over the ``l + k`` centres, searched block by block); ``inf`` when there is no centre.
    Used to compare selections (tests, the scale benchmark), not by the strategies.
    """
    if inputs.embeddings is None:
        raise MissingInputError("covering radius needs embeddings, none were given")
    rows = np.asarray(rows, dtype=np.int64)
    centres = np.concatenate([inputs.labeled, inputs.unlabeled[rows]])
    if centres.size == 0:
        return math.inf
    blocks = CandidateBlocks(inputs.embeddings, inputs.unlabeled, chunk_rows)
    d2 = nearest_labeled(blocks, labeled_vectors(inputs.embeddings, centres), "l2")
    return math.sqrt(float(d2.max())) if d2.size else 0.0


# Registration lives with the code; registry.py imports this module after defining
# ``register``, so this import sees a registry that already has it.

_EMB = frozenset({"embeddings"})


def _count(opt: str, value: object, low: int) -> int:
    # __index__: Python and numpy integers, not floats; bool is an int but not a count
    if isinstance(value, bool) or not hasattr(value, "__index__") or value < low:  # type: ignore[operator]
        raise StrategyOptionError(
            f"kcenter_approx option {opt} must be an integer >= {low}, got {value!r}"
        )
    return int(value)  # type: ignore[call-overload]


@register(
    "kcenter",
    "core-set: greedy k-center, each pick the candidate farthest from the labeled set and the "
    "batch so far (exact; O(m k d) time, O(m) memory)",
    _EMB,
)
def _kcenter() -> Strategy:
    return Strategy(name="kcenter", selector=kcenter_select, needs=_EMB)


@register(
    "kcenter_approx",
    "core-set for very large pools: greedy k-center over a random sample of the candidates "
    "(IVF search of a large labeled set)",
    _EMB,
)
def _kcenter_approx(sample: int = 100_000, nprobe: int = 16) -> Strategy:
    n_sample = _count("sample", sample, 1)
    n_probe = _count("nprobe", nprobe, 1)
    return Strategy(
        name="kcenter_approx",
        selector=partial(kcenter_approx_select, sample=n_sample, nprobe=n_probe),
        needs=_EMB,
    )
