"""The eager farthest-first traversal alft shipped before the lazy one (stop 23).

Kept as the reference the lazy ``strategies.coreset._greedy`` must match pick for pick
(tests/strategies/test_coreset.py) and beat on time (benchmarks/kcenter_scale.py). One
pass over every candidate per pick with the same FAISS kernel; ``np.argmax`` takes the first
maximum, so ties go to the lowest pool id. Copies the candidates' vectors once.
"""

from __future__ import annotations

import numpy as np


def eager_kcenter(emb: np.ndarray, unlabeled: np.ndarray, labeled: np.ndarray, k: int) -> list[int]:
    """``k`` pool ids in pick order: greedy k-center over ``unlabeled`` (pool ids) given
    ``labeled`` (pool ids); with nothing labeled the first pick is farthest from the mean."""
    import faiss

    ids = np.sort(np.asarray(unlabeled, dtype=np.int64))  # positions: pool-id order
    x = np.ascontiguousarray(emb[ids], dtype=np.float32)  # [m, d]
    m, d = x.shape
    buf = np.empty(m, dtype=np.float32)

    def dists(y: np.ndarray) -> np.ndarray:
        y = np.ascontiguousarray(y, dtype=np.float32)
        faiss.fvec_L2sqr_ny(faiss.swig_ptr(buf), faiss.swig_ptr(y), faiss.swig_ptr(x), d, m)
        return buf  # [m], overwritten by the next call

    labeled = np.asarray(labeled, dtype=np.int64)
    if labeled.size:
        index = faiss.IndexFlatL2(d)
        index.add(np.ascontiguousarray(emb[labeled], dtype=np.float32))
        mind = np.maximum(index.search(x, 1)[0][:, 0], 0.0)  # [m]
        nxt = int(np.argmax(mind))
    else:
        mean = (x.sum(axis=0, dtype=np.float64) / m).astype(np.float32)
        nxt = int(np.argmax(dists(mean)))
        mind = np.full(m, np.inf, dtype=np.float32)
    picks = []
    for _ in range(k):
        picks.append(nxt)
        np.minimum(mind, dists(x[nxt]), out=mind)
        mind[nxt] = -np.inf
        nxt = int(np.argmax(mind))
    return ids[picks].tolist()
