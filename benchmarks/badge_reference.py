"""The eager k-means++ seeding alft's BADGE shipped before the lazy one (session 27).

Kept as the baseline ``benchmarks/badge_seeding.py`` times the lazy
``strategies.seeding.d2_seeding`` against: after every pick, one pass over all ``m`` rows
brings every distance up to date (exact factors, or FAISS's L2 kernel on the sketch), then
``rng.choice(m, p=...)`` draws the next. Same distribution as the lazy sampler, other rows
for the same seed.
"""

from __future__ import annotations

import numpy as np


def eager_d2(first: int, dist_to, m: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` row positions: ``first``, then D^2 draws; ``dist_to(row) -> float[m]``."""
    chosen = [first]
    taken = np.zeros(m, dtype=bool)
    taken[first] = True
    min_d = np.asarray(dist_to(first), dtype=np.float64)  # [m]
    for _ in range(1, k):
        weights = np.where(taken, 0.0, min_d)  # [m]
        total = weights.sum()
        nxt = int(rng.choice(m, p=weights / total)) if total > 0 else int(rng.choice(np.flatnonzero(~taken)))
        chosen.append(nxt)
        taken[nxt] = True
        if len(chosen) < k:
            min_d = np.minimum(min_d, dist_to(nxt))
    return np.asarray(chosen, dtype=np.int64)


def eager_exact(a: np.ndarray, b: np.ndarray, sq_norms: np.ndarray, first: int, k: int, rng) -> np.ndarray:
    """Exact gradient distances ``||a_i ⊗ b_i - a_c ⊗ b_c||^2``, one pass per pick."""

    def dist_to(row: int) -> np.ndarray:
        return np.maximum(sq_norms + sq_norms[row] - 2.0 * (a @ a[row]) * (b @ b[row]), 0.0)  # [m]

    return eager_d2(first, dist_to, a.shape[0], k, rng)


def eager_sketch(sk: np.ndarray, first: int, k: int, rng) -> np.ndarray:
    """Squared L2 on the float32 sketch ``sk [m, D]`` by FAISS's kernel, one pass per pick."""
    import faiss

    m, dim = sk.shape
    out = np.empty(m, dtype=np.float32)
    centre = np.empty(dim, dtype=np.float32)

    def dist_to(row: int) -> np.ndarray:
        centre[:] = sk[row]
        faiss.fvec_L2sqr_ny(faiss.swig_ptr(out), faiss.swig_ptr(centre), faiss.swig_ptr(sk), dim, m)
        return out.copy()

    return eager_d2(first, dist_to, m, k, rng)
