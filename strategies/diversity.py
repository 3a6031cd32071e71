"""Diversity selection over L2-normalised embeddings with FAISS (no n x n matrices)."""

from __future__ import annotations

import numpy as np

from strategies.base import MissingInputError, QueryInputs


def _faiss():
    import faiss  # heavy import kept local so `alft strategies` stays instant

    return faiss


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

    Returns ``k`` unique row positions into ``inputs.unlabeled``. Used for the cold start,
    where no model exists yet: the batch covers the pool's modes instead of its densest
    region. FAISS subsamples ``max_points_per_centroid * k`` points for training, so the
    cost stays linear in the pool for assignment only.
    """
    faiss = _faiss()
    if inputs.embeddings is None:
        raise MissingInputError("k-means selection needs embeddings, none were given")
    m = inputs.n_candidates
    if k == m:
        return np.arange(m)
    x = np.ascontiguousarray(inputs.embeddings[inputs.unlabeled], dtype=np.float32)  # [m, d]
    d = x.shape[1]
    km = faiss.Kmeans(
        d,
        k,
        niter=niter,
        seed=int(rng.integers(1, 2**31 - 1)),
        spherical=spherical,
        max_points_per_centroid=max_points_per_centroid,
        min_points_per_centroid=1,  # small pools are fine here; silences FAISS's stderr warning
        verbose=False,
    )
    km.train(x)
    centroids = km.centroids  # [k, d]
    # Assign every candidate to its nearest centroid by L2 (km.index is inner-product when
    # spherical, where larger means closer), then keep the closest member of each cluster.
    by_centroid = faiss.IndexFlatL2(d)
    by_centroid.add(np.ascontiguousarray(centroids, dtype=np.float32))
    dist, assign = by_centroid.search(x, 1)  # [m, 1] each
    dist, assign = dist[:, 0], assign[:, 0]
    order = np.lexsort((dist, assign))  # by cluster, then by distance
    first = np.ones(m, dtype=bool)
    first[1:] = assign[order][1:] != assign[order][:-1]
    picked = order[first]  # one row per non-empty cluster
    if picked.size < k:
        # A cluster can end up empty after the last assignment: fill from the empty
        # centroids' nearest candidates that are not already in the batch.
        empty = np.setdiff1d(np.arange(k), assign[picked])
        index = faiss.IndexFlatL2(d)
        index.add(x)
        taken = set(picked.tolist())
        extra: list[int] = []
        _, nn = index.search(np.ascontiguousarray(centroids[empty]), min(m, k + 1))
        for row_nn in nn:
            for row in row_nn:
                if row >= 0 and int(row) not in taken:
                    taken.add(int(row))
                    extra.append(int(row))
                    break
        picked = np.concatenate([picked, np.asarray(extra, dtype=np.int64)])
        if picked.size < k:  # pathological (all candidates identical): top up at random
            rest = np.setdiff1d(np.arange(m), picked)
            picked = np.concatenate([picked, rng.choice(rest, k - picked.size, replace=False)])
    return picked[:k]
