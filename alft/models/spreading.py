"""Label spreading over a k-nearest-neighbour graph of the pool (``trainer.head.semi_supervised``).

Zhou et al. (2004), "Learning with local and global consistency": with ``S = D^-1/2 W D^-1/2``
the symmetrically normalised affinity of the pool's kNN graph and ``Y`` the one-hot human
labels, iterate ``F <- alpha S F + (1 - alpha) Y``. Each unlabeled row of ``F``, normalised,
is its spread label distribution; its top class becomes a pseudo-label weighted by its
confidence in the head's fit.

Index spaces: every ``rows`` argument and every returned row index is a pool **row position**
(0..n-1 over the embeddings given), not a pool id.
"""

from __future__ import annotations

import numpy as np

from alft.errors import TrainerError

#: above this many rows the graph comes from an inverted-file index (exact search is n^2 d)
EXACT_MAX_ROWS = 100_000
BLOCK = 16_384


def knn_graph(x: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """int64[n, k] neighbour row positions and float32[n, k] inner products of each row's ``k``
    nearest other rows (``x``: float32[n, d], L2-normalised, so inner product = cosine).

    Exact (FAISS flat) up to ``EXACT_MAX_ROWS`` rows; above, an IVF index with 4 sqrt(n)
    lists, trained on a seeded sample, probing 16 of them. A row's own entry is dropped;
    missing neighbours (tiny pools, empty lists) are -1 with similarity 0.
    """
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if n < 2:
        raise TrainerError(f"label spreading needs at least 2 pool rows; the pool has {n}")
    kk = min(k + 1, n)
    if n <= EXACT_MAX_ROWS:
        index = faiss.IndexFlatIP(d)
    else:
        nlist = int(4 * np.sqrt(n))
        quant = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quant, d, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(seed).choice(n, size=min(n, 64 * nlist), replace=False)
        index.train(x[np.sort(sample)])
        index.nprobe = 16
    index.add(x)
    nbr = np.full((n, k), -1, dtype=np.int64)  # [n, k]
    sim = np.zeros((n, k), dtype=np.float32)  # [n, k]
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        s, i = index.search(x[start:stop], kk)  # [b, k+1]
        drop = (i == np.arange(start, stop)[:, None]) | (i < 0)  # own hit, or no hit
        # kept hits first, in FAISS's order; a row whose own hit was pushed out by
        # duplicates keeps its first k
        order = np.argsort(drop, axis=1, kind="stable")[:, :k]  # [b, k]
        got_i = np.take_along_axis(i, order, axis=1)
        got_s = np.take_along_axis(s, order, axis=1)
        bad = np.take_along_axis(drop, order, axis=1)
        got_i[bad], got_s[bad] = -1, 0.0
        nbr[start:stop, : got_i.shape[1]] = got_i
        sim[start:stop, : got_s.shape[1]] = got_s
    sim[nbr < 0] = 0.0
    return nbr, sim


def spread_labels(
    nbr: np.ndarray,
    sim: np.ndarray,
    rows: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    alpha: float,
    iterations: int,
) -> np.ndarray:
    """float64[n, C]: label distributions after spreading (rows sum to 1, or 0 where no label
    reached). ``rows``: labeled row positions; ``y``: their class indices (same order).

    Edge weights are ``max(cos, 0)^3`` (sharper than the raw cosine, which is high between
    most sentence embeddings) on the symmetrised graph."""
    import scipy.sparse as sp

    n, k = nbr.shape
    if rows.shape != y.shape:
        raise TrainerError(f"label spreading: {rows.size} labeled rows but {y.size} labels")
    if rows.size and (rows.min() < 0 or rows.max() >= n):
        raise TrainerError(f"label spreading: a labeled row is outside the pool's {n} rows")
    ok = nbr >= 0
    src = np.repeat(np.arange(n), k)[ok.ravel()]
    dst = nbr[ok]
    w = np.maximum(sim[ok], 0.0).astype(np.float64) ** 3
    graph = sp.csr_matrix((w, (src, dst)), shape=(n, n))
    graph = graph + graph.T  # [n, n] symmetric
    deg = np.asarray(graph.sum(axis=1)).ravel()
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-300)), 0.0)
    norm = sp.diags(inv) @ graph @ sp.diags(inv)
    seed = np.zeros((n, n_classes))  # [n, C]
    seed[rows, y] = 1.0
    f = seed.copy()
    for _ in range(iterations):
        f = alpha * (norm @ f) + (1 - alpha) * seed
    total = f.sum(axis=1, keepdims=True)  # [n, 1]
    return np.divide(f, total, out=np.zeros_like(f), where=total > 0)


def pseudo_label_weight(weight: float, n_labels: int, n_classes: int, fade_per_class: float | None) -> float:
    """Sample weight of a confidence-1 pseudo-label: ``weight`` while the head is starved of
    labels, falling linearly to 0 at ``fade_per_class`` labels per class on average
    (``weight * max(0, 1 - n_labels / (n_classes * fade_per_class))``); constant when None.

    >>> pseudo_label_weight(0.3, 770, 77, 20.0)
    0.15
    """
    if n_labels < 0 or n_classes < 1:
        raise TrainerError(f"pseudo-label weight needs n_labels >= 0 and n_classes >= 1, got {n_labels} / {n_classes}")
    if fade_per_class is None:
        return float(weight)
    return float(weight) * max(0.0, 1.0 - n_labels / (n_classes * float(fade_per_class)))


def pseudo_labels(
    x: np.ndarray, rows: np.ndarray, y: np.ndarray, n_classes: int, *, k: int, alpha: float, iterations: int,
    seed: int = 0, graph: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row positions, class indices, confidences) for the unlabeled rows of ``x`` that a label
    reached: the spread distribution's top class and its probability. ``graph``: ``knn_graph(x,
    k)``'s result when the caller keeps it (built here otherwise)."""
    if graph is None:
        nbr, sim = knn_graph(x, k, seed=seed)
    else:
        nbr, sim = graph
        if nbr.shape != (x.shape[0], k) or sim.shape != nbr.shape:
            raise TrainerError(
                f"label spreading: the neighbour graph is {nbr.shape} / {sim.shape}, the pool has "
                f"{x.shape[0]} rows and k={k}"
            )
    dist = spread_labels(nbr, sim, rows, y, n_classes, alpha=alpha, iterations=iterations)  # [n, C]
    unl = np.setdiff1d(np.arange(x.shape[0]), rows)
    conf = dist[unl].max(axis=1)
    reached = conf > 0
    return unl[reached], dist[unl[reached]].argmax(axis=1), conf[reached]
