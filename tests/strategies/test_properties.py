"""Hypothesis properties of scorers and selectors."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from strategies import QueryInputs, get_strategy
from strategies.selectors import top_k
from strategies.uncertainty import entropy, least_confidence, margin


@st.composite
def prob_matrices(draw, max_rows=30, max_classes=8):
    m = draw(st.integers(1, max_rows))
    c = draw(st.integers(2, max_classes))
    raw = draw(arrays(np.float64, (m, c), elements=st.floats(0.0, 10.0)))
    raw = raw + 1e-9
    return raw / raw.sum(axis=1, keepdims=True)


@given(prob_matrices())
def test_uncertainty_scores_are_bounded(probs):
    inputs = QueryInputs(unlabeled=np.arange(len(probs)), probs=probs)
    c = probs.shape[1]
    lc, mg, ent = least_confidence(inputs), margin(inputs), entropy(inputs)
    assert ((lc >= -1e-12) & (lc <= 1 - 1 / c + 1e-9)).all()
    assert ((mg <= 1e-12) & (mg >= -1 - 1e-12)).all()
    assert ((ent >= -1e-12) & (ent <= np.log(c) + 1e-9)).all()


@given(prob_matrices())
def test_scores_are_permutation_equivariant(probs):
    perm = np.random.default_rng(0).permutation(len(probs))
    a = QueryInputs(unlabeled=np.arange(len(probs)), probs=probs)
    b = QueryInputs(unlabeled=np.arange(len(probs)), probs=probs[perm])
    for f in (least_confidence, margin, entropy):
        np.testing.assert_allclose(f(a)[perm], f(b))


@given(
    arrays(np.float64, st.integers(1, 50), elements=st.floats(-5, 5)),
    st.integers(0, 2**31 - 1),
    st.data(),
)
def test_top_k_returns_the_k_largest(scores, seed, data):
    k = data.draw(st.integers(1, len(scores)))
    inputs = QueryInputs(unlabeled=np.arange(len(scores)))
    rows = top_k(scores, inputs, k, np.random.default_rng(seed))
    assert len(set(rows.tolist())) == k
    chosen = np.sort(scores[rows])[::-1]
    np.testing.assert_array_equal(chosen, np.sort(scores)[::-1][:k])


@settings(max_examples=25, deadline=None)
@given(st.integers(5, 60), st.integers(0, 1000), st.data())
def test_every_strategy_selects_within_the_candidates(n, seed, data):
    rng = np.random.default_rng(seed)
    n_labeled = data.draw(st.integers(0, n - 2))
    perm = rng.permutation(n)
    emb = rng.normal(size=(n, 6)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    unlabeled = np.sort(perm[n_labeled:])
    inputs = QueryInputs(
        unlabeled=unlabeled,
        labeled=np.sort(perm[:n_labeled]),
        probs=rng.dirichlet(np.ones(3), size=unlabeled.size),
        embeddings=emb,
    )
    k = data.draw(st.integers(1, unlabeled.size))
    name = data.draw(st.sampled_from(["random", "least_confidence", "margin", "entropy", "kmeans"]))
    q = get_strategy(name).query(inputs, k, rng)
    assert len(set(q.pool_ids.tolist())) == k
    assert set(q.pool_ids.tolist()) <= set(unlabeled.tolist())
