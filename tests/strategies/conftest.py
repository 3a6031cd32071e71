from __future__ import annotations

import numpy as np
import pytest

from strategies import LinearHead, PastRound, QueryInputs
from strategies.base import GenerationStats


def make_inputs(
    n_pool: int = 60, n_labeled: int = 10, n_classes: int = 4, dim: int = 8, seed: int = 0, samples: int = 5
) -> QueryInputs:
    """A pool with every input a strategy may need.

    Clustered L2-normalised embeddings, Dirichlet probabilities, MC samples scattered around
    them, the candidates' embeddings as penultimate features with a random linear head, a
    three-round history, and a generative model's statistics (entropy, NLL, IFD).
    """
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(5, dim))
    emb = centers[rng.integers(0, 5, n_pool)] + 0.1 * rng.normal(size=(n_pool, dim))  # [n, d]
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    perm = rng.permutation(n_pool)
    labeled, unlabeled = np.sort(perm[:n_labeled]), np.sort(perm[n_labeled:])
    probs = rng.dirichlet(np.ones(n_classes), size=unlabeled.size)  # [m, C]
    conc = 20.0 * probs[:, :, None] + 0.05  # [m, C, 1]
    samples_ = rng.gamma(np.broadcast_to(conc, (*probs.shape, samples)))  # [m, C, K]
    samples_ /= samples_.sum(axis=1, keepdims=True)
    head = LinearHead(
        weight=rng.normal(size=(n_classes, dim)), bias=rng.normal(size=n_classes), classes=np.arange(n_classes)
    )
    history = tuple(
        PastRound(round=r, n_labels=10 * (r + 1), metrics={"accuracy": 0.5 + 0.1 * r}, strategy="random", agreement=0.5 + 0.1 * r)
        for r in range(3)
    )
    # A stream of its own, so the arrays above stay what they were before generation existed.
    gen_rng = np.random.default_rng([seed, 1])
    generation = GenerationStats(
        mean_entropy=gen_rng.gamma(2.0, 1.0, unlabeled.size),  # [m] nats
        mean_nll=gen_rng.gamma(2.0, 0.5, unlabeled.size),  # [m] nats
        ifd=gen_rng.uniform(0.2, 1.2, unlabeled.size),  # [m]
    )
    return QueryInputs(
        unlabeled=unlabeled,
        labeled=labeled,
        probs=probs,
        embeddings=emb,
        prob_samples=samples_,
        features=emb[unlabeled].astype(np.float64),
        head=head,
        history=history,
        generation=generation,
    )


@pytest.fixture
def inputs() -> QueryInputs:
    return make_inputs()
