"""Diversity selection over L2-normalised embeddings with FAISS (no n x n matrices).

The helpers here (``CandidateBlocks``, ``nearest_labeled``) are shared with the core-set and
near-duplicate modules: they serve the candidates' embeddings in bounded blocks so that no
``[m, d]`` copy of the pool (let alone an ``[m, m]`` matrix) is ever made.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from strategies.base import InvalidInputError, MissingInputError, QueryInputs, Selection

#: Bytes of float32 embeddings one block may hold.
BLOCK_BYTES = 32 << 20

# A window of pool ids is read as one view of the embeddings when at least this fraction of
# its rows are candidates (the rest is computed and thrown away: at most 2x the work, but no
# copy); sparser candidates are gathered into blocks instead.
_MIN_DENSITY = 0.5

PICKS = ("nearest", "farthest_from_labeled")


def _faiss():
    import faiss  # heavy import kept local so `alft strategies` stays instant

    return faiss


def default_chunk_rows(d: int) -> int:
    """Rows per block for ``d``-dimensional float32 vectors (``BLOCK_BYTES`` of them)."""
    return max(1024, BLOCK_BYTES // (4 * max(d, 1)))


class CandidateBlocks:
    """The candidates' embeddings, served in blocks of at most ``chunk_rows`` rows.

    Works in *sorted* order: position ``j`` (``0 .. m-1``) stands for pool id ``ids[j]``,
    which is candidate row position ``rows[j]``; ties elsewhere are broken by the lower
    position, that is the lower pool id, whatever order ``unlabeled`` came in.

    The pool-id range is cut into windows of ``chunk_rows`` ids. A window where candidates
    are dense (the usual case: the unlabeled pool is most of the pool) is read as a view of
    ``embeddings``, no copy when it is C-contiguous float32, with the labeled rows inside
    it computed and dropped; sparse candidates are gathered, one block at a time. Extra
    memory: ``O(m)`` plus one block.

    Attributes
    ----------
    rows: int64[m], row positions (into ``unlabeled``) in pool-id order.
    ids: int64[m], pool ids, ascending.
    """

    def __init__(
        self, embeddings: np.ndarray, unlabeled: np.ndarray, chunk_rows: int | None = None
    ) -> None:
        self.embeddings = embeddings
        unlabeled = np.asarray(unlabeled, dtype=np.int64)
        self.rows = np.argsort(unlabeled, kind="stable")  # [m] row positions
        self.ids = unlabeled[self.rows]  # [m] pool ids, ascending
        self.m = int(self.ids.size)
        self.d = int(embeddings.shape[1])
        self.chunk_rows = int(chunk_rows or default_chunk_rows(self.d))
        if self.chunk_rows < 1:
            raise InvalidInputError(f"chunk_rows must be >= 1, got {self.chunk_rows}")
        # (start, end, first pool id of the view or -1 for a gather, picks inside the view)
        self._plan: list[tuple[int, int, int, np.ndarray | None]] = self._make_plan()

    def _make_plan(self) -> list[tuple[int, int, int, np.ndarray | None]]:
        if self.m == 0:
            return []
        c = self.chunk_rows
        _, first = np.unique(self.ids // c, return_index=True)  # windows holding candidates
        bounds = np.append(first, self.m)  # [w + 1] position ranges of the windows
        plan: list[tuple[int, int, int, np.ndarray | None]] = []
        sparse: list[np.ndarray] = []  # positions waiting to be gathered
        n_sparse = 0
        for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            lo, hi = int(self.ids[s]), int(self.ids[e - 1]) + 1
            if (e - s) >= _MIN_DENSITY * (hi - lo):
                sel = None if hi - lo == e - s else self.ids[s:e] - lo
                plan.append((s, e, lo, sel))
                continue
            sparse.append(np.arange(s, e))
            n_sparse += e - s
            if n_sparse >= c:
                plan.extend(self._gathers(np.concatenate(sparse)))
                sparse, n_sparse = [], 0
        if sparse:
            plan.extend(self._gathers(np.concatenate(sparse)))
        plan.sort(key=lambda p: p[0])
        return plan

    def _gathers(self, positions: np.ndarray) -> list[tuple[int, int, int, np.ndarray | None]]:
        # positions come from consecutive sparse windows, so they are ranges; a gather block
        # is a contiguous run of positions, split at chunk_rows
        out = []
        breaks = np.flatnonzero(np.diff(positions) != 1) + 1
        for run in np.split(positions, breaks):
            for a in range(0, run.size, self.chunk_rows):
                part = run[a : a + self.chunk_rows]
                out.append((int(part[0]), int(part[-1]) + 1, -1, None))
        return out

    def _f32(self, a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=np.float32)

    def windows(self) -> Iterator[tuple[int, int, np.ndarray, np.ndarray | None]]:
        """``(start, end, block, sel)``: ``block[sel]`` (or ``block`` when ``sel`` is None)
        holds the embeddings of positions ``start .. end``. For the hot loops: compute on
        the whole block, which may include labeled rows, then keep ``[sel]``."""
        for s, e, lo, sel in self._plan:
            if lo < 0:
                yield s, e, self._f32(self.embeddings[self.ids[s:e]]), None
            else:
                n = (e - s) if sel is None else int(sel[-1]) + 1
                yield s, e, self._f32(self.embeddings[lo : lo + n]), sel

    def __iter__(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(start, end, block [end - start, d])``: exactly the candidates, in order."""
        for s, e, blk, sel in self.windows():
            yield s, e, blk if sel is None else blk[sel]

    def gather(self, positions: np.ndarray) -> np.ndarray:
        """float32 ``[len(positions), d]``, C-contiguous copy of the embeddings at ``positions``."""
        return self._f32(self.embeddings[self.ids[positions]])

    def vector(self, position: int) -> np.ndarray:
        """float32[d], the embedding at ``position``."""
        return self._f32(self.embeddings[int(self.ids[position])])

    @property
    def n_blocks(self) -> int:
        return len(self._plan)

    def to_rows(self, positions: np.ndarray) -> np.ndarray:
        """Row positions (into ``unlabeled``) of sorted ``positions``."""
        return self.rows[np.asarray(positions, dtype=np.int64)]


def labeled_vectors(embeddings: np.ndarray, labeled: np.ndarray) -> np.ndarray:
    """float32 ``[l, d]`` C-contiguous copy of the labeled rows (``labeled``: pool ids)."""
    return np.ascontiguousarray(embeddings[labeled], dtype=np.float32)


def nearest_labeled(
    blocks: CandidateBlocks, labeled_x: np.ndarray, metric: str = "ip"
) -> np.ndarray:
    """Each candidate's similarity (``"ip"``) or squared L2 distance (``"l2"``) to its
    nearest labeled example, float32[m] by *position* of ``blocks``.

    ``labeled_x``: float32 ``[l, d]`` vectors of the labeled examples (see
    ``labeled_vectors``). A FAISS flat index over them is searched one block at a time with
    k=1. With no labeled example the answer is ``-inf`` (ip) or ``+inf`` (l2).
    """
    if metric not in ("ip", "l2"):
        raise InvalidInputError(f"metric must be 'ip' or 'l2', got {metric!r}")
    out = np.empty(blocks.m, dtype=np.float32)
    if labeled_x.shape[0] == 0:
        out.fill(-np.inf if metric == "ip" else np.inf)
        return out
    faiss = _faiss()
    index = faiss.IndexFlatIP(blocks.d) if metric == "ip" else faiss.IndexFlatL2(blocks.d)
    index.add(np.ascontiguousarray(labeled_x, dtype=np.float32))
    for s, e, blk, sel in blocks.windows():
        dist, _ = index.search(blk, 1)  # [b', 1]
        out[s:e] = dist[:, 0] if sel is None else dist[sel, 0]
    if metric == "l2":
        # FAISS expands |x|^2 + |y|^2 - 2 x.y, which rounds below zero for exact copies.
        np.maximum(out, 0.0, out=out)
    return out


def allocate(k: int, sizes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Split ``k`` picks over clusters in proportion to ``weights`` (largest remainder).

    ``sizes``: int[c] members per cluster, an upper bound on each cluster's share.
    Returns int64[c] summing to ``k`` (requires ``sizes.sum() >= k``). Quotas are
    ``left * w / sum(w)`` over the clusters that still have room; each gets the floor of its
    quota (capped at its room), and the seats left go one each to the largest remainders,
    ties to the larger cluster then the lower index. A capped cluster's surplus goes round
    again, so the loop ends after at most ``c`` passes.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    c = sizes.size
    if int(sizes.sum()) < k:
        raise InvalidInputError(f"cannot place {k} picks in clusters of {int(sizes.sum())} members")
    alloc = np.zeros(c, dtype=np.int64)
    left = k
    while left > 0:
        room = sizes - alloc  # [c]
        w = np.where(room > 0, weights, 0.0)
        if w.sum() <= 0:  # every cluster with room has zero weight: share equally
            w = (room > 0).astype(np.float64)
        quota = left * w / w.sum()  # [c]
        take = np.minimum(np.floor(quota).astype(np.int64), room)
        seats = left - int(take.sum())
        if seats > 0:
            rem = quota - take
            order = np.lexsort((np.arange(c), -sizes, -rem))
            order = order[(room - take)[order] > 0][:seats]
            take[order] += 1
        alloc += take
        left = k - int(alloc.sum())
    return alloc


def cluster_select(
    scores: np.ndarray | None,
    inputs: QueryInputs,
    k: int,
    rng: np.random.Generator,
    *,
    niter: int = 20,
    max_points_per_centroid: int = 256,
    spherical: bool = True,
    pick: str = "nearest",
    weight_by_size: bool = False,
    n_clusters: int | None = None,
    chunk_rows: int | None = None,
    sample_weights: np.ndarray | None = None,
) -> Selection:
    """Cluster the candidates with FAISS k-means, then take ``k`` examples cluster by cluster.

    ``scores`` is ignored; returns ``Selection(rows, info)``, ``rows`` being ``k`` unique row
    positions into ``inputs.unlabeled``. ``n_clusters`` (default ``k``, capped at the pool)
    centroids are trained on at most ``max_points_per_centroid * n_clusters`` candidates,
    drawn with ``rng``; every candidate is then assigned to its nearest centroid block by
    block. The picks are shared out over the clusters by ``allocate``: equally, or in
    proportion to cluster size when ``weight_by_size`` (so big modes get more than one
    example). Within a cluster, examples are taken in ``pick`` order:

    ``"nearest"``
        nearest the centroid first (the cluster's most typical member; cold start).
    ``"farthest_from_labeled"``
        largest cosine distance to the nearest labeled example first (labeled rows come
        from ``inputs.labeled``, pool ids, through a FAISS flat inner-product index), ties
        to the one nearer the centroid; with nothing labeled this is ``"nearest"``.

    Ties left after that go to the lower pool id. The batch is ordered round-robin: every
    cluster's first pick (largest cluster first), then every second pick, and so on.
    ``sample_weights`` (float[m], row positions; finite, >= 0, not all 0) makes it weighted
    k-means: each centroid is its members' weighted mean, so the centroids, and the picks
    nearest them, move toward heavy candidates (``two_stage``'s ``weighted`` option).
    Memory: ``O(m)`` plus the training sample and one block; never ``[m, m]``.
    """
    faiss = _faiss()
    if inputs.embeddings is None:
        raise MissingInputError("k-means selection needs embeddings, none were given")
    if pick not in PICKS:
        raise InvalidInputError(f"pick must be one of {PICKS}, got {pick!r}")
    m = inputs.n_candidates
    if sample_weights is not None:
        sample_weights = _check_sample_weights(sample_weights, m)
    c = min(int(n_clusters) if n_clusters is not None else k, m)
    info: dict = {"n_clusters": c, "pick": pick, "weight_by_size": bool(weight_by_size)}
    if sample_weights is not None:
        info["sample_weights"] = True
    if k == m:
        return Selection(rows=np.arange(m), info={**info, "empty_clusters": 0})
    blocks = CandidateBlocks(inputs.embeddings, inputs.unlabeled, chunk_rows)
    d = blocks.d

    # Sample the training set ourselves (FAISS would otherwise copy the whole pool only to
    # subsample it with its own generator).
    n_train = min(m, c * max_points_per_centroid)
    train_pos = np.arange(m) if n_train == m else np.sort(rng.choice(m, n_train, replace=False))
    train_x = np.ascontiguousarray(inputs.embeddings[blocks.ids[train_pos]], dtype=np.float32)
    km = faiss.Kmeans(
        d,
        c,
        niter=niter,
        seed=int(rng.integers(1, 2**31 - 1)),
        spherical=spherical,
        max_points_per_centroid=max_points_per_centroid,
        min_points_per_centroid=1,  # small pools are fine here; silences FAISS's stderr warning
        verbose=False,
    )
    if sample_weights is None:
        km.train(train_x)
    else:
        # train_pos are sorted positions (pool-id order); the weights come in row order
        w_train = sample_weights[blocks.rows[train_pos]]  # [n_train]
        km.train(train_x, weights=np.ascontiguousarray(w_train, dtype=np.float32))
    del train_x
    centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)  # [c, d]

    # Assign by L2 (km.index is inner-product when spherical, where larger means closer).
    by_centroid = faiss.IndexFlatL2(d)
    by_centroid.add(centroids)
    dist = np.empty(m, dtype=np.float32)  # squared L2 to own centroid, by position
    assign = np.empty(m, dtype=np.int64)
    for s, e, blk, sel in blocks.windows():
        dd, aa = by_centroid.search(blk, 1)  # [b', 1] each
        if sel is not None:
            dd, aa = dd[sel], aa[sel]
        dist[s:e], assign[s:e] = dd[:, 0], aa[:, 0]

    far = None
    if pick == "farthest_from_labeled" and inputs.labeled.size:
        lab_x = labeled_vectors(inputs.embeddings, inputs.labeled)
        far = 1.0 - nearest_labeled(blocks, lab_x, "ip")  # [m] cosine distance

    # Rank members inside each cluster; positions are pool-id order, so lexsort's
    # stability gives the last tie-break (lower pool id) for free.
    keys = (dist, assign) if far is None else (dist, -far, assign)
    order = np.lexsort(keys)  # [m] positions, by cluster then pick order
    sorted_assign = assign[order]
    sizes = np.bincount(assign, minlength=c)  # [c]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])  # [c] first slot of each cluster
    rank = np.arange(m) - starts[sorted_assign]  # [m] rank of order[i] inside its cluster

    weights = sizes.astype(np.float64) if weight_by_size else (sizes > 0).astype(np.float64)
    alloc = allocate(k, sizes, weights)  # [c]
    chosen = rank < alloc[sorted_assign]  # [m]
    picked = order[chosen]  # positions
    # Round-robin output: first picks of every cluster (largest first), then second picks...
    p_cluster, p_rank = sorted_assign[chosen], rank[chosen]
    out_order = np.lexsort((p_cluster, -sizes[p_cluster], p_rank))
    rows = blocks.to_rows(picked[out_order])
    info["empty_clusters"] = int((sizes == 0).sum())
    return Selection(rows=rows, info=info)


def _check_sample_weights(weights: np.ndarray, m: int) -> np.ndarray:
    """``weights`` as float64[m] (row positions), or InvalidInputError naming what is wrong."""
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (m,):
        raise InvalidInputError(f"k-means sample weights must be [m={m}], got shape {w.shape}")
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if bad.size:
        raise InvalidInputError(
            f"k-means sample weights must be finite and >= 0: {bad.size} of {m} are not "
            f"(first at row {int(bad[0])}: {float(w[bad[0]])!r})"
        )
    if not w.any():
        raise InvalidInputError(f"k-means sample weights are all 0 ({m} candidates)")
    return w


def kmeans_select(
    scores: np.ndarray | None,
    inputs: QueryInputs,
    k: int,
    rng: np.random.Generator,
    *,
    niter: int = 20,
    max_points_per_centroid: int = 256,
    spherical: bool = True,
) -> np.ndarray:
    """Cluster the candidates into ``k`` groups; take the example nearest each centroid.

    Returns ``k`` unique row positions into ``inputs.unlabeled`` (``cluster_select`` with
    its defaults, without the info). Used for the cold start, where no model exists yet:
    the batch covers the pool's modes instead of its densest region.
    """
    return cluster_select(
        scores,
        inputs,
        k,
        rng,
        niter=niter,
        max_points_per_centroid=max_points_per_centroid,
        spherical=spherical,
    ).rows
