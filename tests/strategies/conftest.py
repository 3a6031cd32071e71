from __future__ import annotations

import numpy as np
import pytest

from strategies import QueryInputs


def make_inputs(n_pool: int = 60, n_labeled: int = 10, n_classes: int = 4, dim: int = 8, seed: int = 0) -> QueryInputs:
    """A pool with clustered L2-normalised embeddings and Dirichlet probabilities."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(5, dim))
    emb = centers[rng.integers(0, 5, n_pool)] + 0.1 * rng.normal(size=(n_pool, dim))  # [n, d]
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    perm = rng.permutation(n_pool)
    labeled, unlabeled = np.sort(perm[:n_labeled]), np.sort(perm[n_labeled:])
    probs = rng.dirichlet(np.ones(n_classes), size=unlabeled.size)  # [m, C]
    return QueryInputs(unlabeled=unlabeled, labeled=labeled, probs=probs, embeddings=emb)


@pytest.fixture
def inputs() -> QueryInputs:
    return make_inputs()
