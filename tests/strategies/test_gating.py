"""Near-duplicate gating around any strategy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies import QueryInputs, StrategyOptionError, available, get_strategy
from strategies.gating import gate_near_duplicates, gated_select
from tests.strategies.conftest import make_inputs

NAMES = [s.name for s in available()]


def circle(degrees) -> np.ndarray:
    a = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)  # [n, 2]


def margin_probs(gaps) -> np.ndarray:
    """Two-class probabilities whose top-two gap is each of ``gaps``."""
    g = np.asarray(gaps, dtype=np.float64)
    return np.stack([(1 + g) / 2, (1 - g) / 2], axis=1)


def test_drops_a_labeled_near_copy_and_an_in_batch_duplicate():
    # pool id 0 (0 degrees) is labeled; id 1 sits 2 degrees from it (cos 0.9994); ids 2 and 3
    # are 1 degree apart (cos 0.99985); 4 and 5 are far from everything.
    # Margin ranks 2 > 3 > 1 > 4 > 5: ungated, the batch of 3 is [2, 3, 1].
    emb = circle([0, 2, 90, 91, 180, 270])
    inputs = QueryInputs(
        unlabeled=np.array([1, 2, 3, 4, 5]),
        labeled=np.array([0]),
        probs=margin_probs([0.06, 0.02, 0.04, 0.3, 0.6]),
        embeddings=emb,
    )
    plain = get_strategy("margin").query(inputs, 3, np.random.default_rng(0))
    assert plain.pool_ids.tolist() == [2, 3, 1]
    gated = gate_near_duplicates(get_strategy("margin"), 0.999).query(inputs, 3, np.random.default_rng(0))
    assert gated.pool_ids.tolist() == [2, 4, 5]
    np.testing.assert_allclose(gated.scores, [-0.02, -0.3, -0.6])
    assert gated.info["dedup_dropped_labeled"] == 1
    assert gated.info["dedup_dropped_in_batch"] == 1
    assert gated.info["dedup_filled"] == 0
    assert gated.info["dedup_threshold"] == 0.999
    # a looser threshold keeps the pair (cos 0.99985 < 0.99999)
    loose = gate_near_duplicates(get_strategy("margin"), 0.99999).query(inputs, 3, np.random.default_rng(0))
    assert loose.pool_ids.tolist() == [2, 3, 1]


@pytest.mark.parametrize("seed", range(6))
def test_selector_only_strategy_keeps_one_of_a_duplicate_triple(seed):
    # ids 0, 1, 2 are the same vector; 3, 4, 5 distinct: a batch of 4 without duplicates is
    # one of the triple and all of 3, 4, 5, whatever random proposes first.
    emb = circle([10, 10, 10, 100, 190, 280])
    inputs = QueryInputs(unlabeled=np.arange(6), embeddings=emb)
    q = gate_near_duplicates(get_strategy("random"), 1.0).query(inputs, 4, np.random.default_rng(seed))
    assert sorted(q.pool_ids.tolist())[1:] == [3, 4, 5]
    assert q.pool_ids.min() in (0, 1, 2)
    assert q.info["dedup_filled"] == 0


def test_kmeans_batch_after_labeled_copies_are_filtered():
    # three tight clusters on orthogonal axes; the whole first one is near-copies of a
    # labeled example, so the gated kmeans batch comes from the other two clusters.
    rng = np.random.default_rng(0)
    axes = np.eye(4, dtype=np.float32)[:3]
    emb = np.repeat(axes, 10, axis=0) + 0.001 * rng.normal(size=(30, 4)).astype(np.float32)
    emb = np.vstack([emb, axes[:1]])  # pool id 30: labeled, on the first axis
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    inputs = QueryInputs(unlabeled=np.arange(30), labeled=np.array([30]), embeddings=emb)
    q = gate_near_duplicates(get_strategy("kmeans"), 0.99).query(inputs, 2, np.random.default_rng(0))
    assert sorted((q.pool_ids // 10).tolist()) == [1, 2]
    assert q.info["dedup_dropped_labeled"] == 10


def test_falls_back_to_the_least_similar_when_too_few_remain():
    # labeled at 0 degrees; candidates at 1, 3, 5 degrees are all near-copies at 0.99, the one
    # at 90 is not. k=3: the 90-degree one, then the fill by lowest similarity: 5 then 3.
    emb = circle([0, 1, 3, 5, 90])
    inputs = QueryInputs(unlabeled=np.array([1, 2, 3, 4]), labeled=np.array([0]), embeddings=emb)
    for name in ("kcenter", "random"):
        q = gate_near_duplicates(get_strategy(name), 0.99).query(inputs, 3, np.random.default_rng(0))
        assert q.pool_ids.tolist() == [4, 3, 2], name
        assert q.info["dedup_filled"] == 2
        assert q.info["dedup_dropped_labeled"] == 1  # pool id 1 stayed out


def test_fill_in_score_order_path_too():
    emb = circle([0, 1, 3, 5, 90])
    inputs = QueryInputs(
        unlabeled=np.array([1, 2, 3, 4]),
        labeled=np.array([0]),
        probs=margin_probs([0.1, 0.2, 0.3, 0.4]),
        embeddings=emb,
    )
    q = gate_near_duplicates(get_strategy("margin"), 0.99).query(inputs, 3, np.random.default_rng(0))
    assert q.pool_ids.tolist() == [4, 3, 2]
    assert q.info["dedup_filled"] == 2


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, 1.01, math.nan, math.inf, "0.9", True, None])
def test_threshold_is_validated(bad):
    with pytest.raises(StrategyOptionError, match="threshold"):
        gate_near_duplicates(get_strategy("margin"), bad)


def test_wrapper_keeps_name_and_adds_embeddings_to_needs():
    g = gate_near_duplicates(get_strategy("margin"), 0.9)
    assert g.name == "margin"
    assert g.needs == frozenset({"probs", "embeddings"})
    assert g.scorer is get_strategy("margin").scorer


@pytest.mark.parametrize("name", NAMES)
def test_nothing_duplicated_means_the_same_batch(name, inputs):
    # make_inputs' points are distinct, so at threshold 1 only exact copies would go
    a = get_strategy(name).query(inputs, 9, np.random.default_rng(4))
    b = gate_near_duplicates(get_strategy(name), 1.0).query(inputs, 9, np.random.default_rng(4))
    np.testing.assert_array_equal(a.pool_ids, b.pool_ids)
    assert b.info["dedup_dropped_labeled"] == 0 and b.info["dedup_dropped_in_batch"] == 0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("k", [1, 7, 50])
def test_every_gated_strategy_returns_k_unique_pool_ids(name, k):
    # pool ids 100..159 given shuffled, so row positions differ from pool ids
    base = make_inputs(n_pool=160, n_labeled=0)
    perm = np.random.default_rng(0).permutation(np.arange(100, 150))
    inputs = QueryInputs(
        unlabeled=perm,
        labeled=np.arange(0, 100),
        probs=base.probs[:50],
        embeddings=base.embeddings,
        prob_samples=base.prob_samples[:50],
        features=base.features[:50],
        head=base.head,
        history=base.history,
        generation=base.generation.take(np.arange(50)),
    )
    q = gate_near_duplicates(get_strategy(name), 0.95).query(inputs, k, np.random.default_rng(1))
    assert q.pool_ids.shape == (k,) and np.unique(q.pool_ids).size == k
    assert np.isin(q.pool_ids, perm).all()
    assert q.scores.shape == (k,)
    if q.info["dedup_filled"] == 0:
        x = base.embeddings[q.pool_ids]
        sims = x @ x.T
        np.fill_diagonal(sims, -1)
        assert sims.max() < 0.95 + 1e-6
        assert (x @ base.embeddings[:100].T).max() < 0.95 + 1e-6


@pytest.mark.parametrize("name", ["margin", "kcenter", "kmeans", "random"])
def test_chunked_labeled_search_gives_the_same_batch(name):
    inputs = make_inputs(n_pool=900, n_labeled=300, dim=6, seed=3)
    g = get_strategy(name)
    rows = [
        gated_select(g.score(inputs), inputs, 20, np.random.default_rng(0), inner=g, threshold=0.97, chunk_rows=c).rows
        for c in (16, None)
    ]
    np.testing.assert_array_equal(rows[0], rows[1])


@settings(max_examples=40, deadline=None)
@given(
    st.integers(4, 60),
    st.integers(0, 10_000),
    st.floats(0.3, 1.0),
    st.sampled_from(["margin", "kcenter", "kmeans", "random", "entropy"]),
    st.data(),
)
def test_gated_batches_hold_no_near_duplicates(n, seed, threshold, name, data):
    # 3-d unit vectors snapped to a coarse grid, so exact and near duplicates are common
    rng = np.random.default_rng(seed)
    emb = np.round(rng.normal(size=(n, 3)), 1).astype(np.float32) + 1e-3
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    perm = rng.permutation(n)
    n_lab = data.draw(st.integers(0, n - 1))
    unlabeled, labeled = perm[n_lab:], np.sort(perm[:n_lab])
    inputs = QueryInputs(
        unlabeled=unlabeled,
        labeled=labeled,
        probs=rng.dirichlet(np.ones(3), size=unlabeled.size),
        embeddings=emb,
    )
    k = data.draw(st.integers(1, unlabeled.size))
    s = gate_near_duplicates(get_strategy(name), threshold)
    q = s.query(inputs, k, np.random.default_rng(seed))
    again = s.query(inputs, k, np.random.default_rng(seed))
    np.testing.assert_array_equal(q.pool_ids, again.pool_ids)
    assert np.unique(q.pool_ids).size == k
    assert np.isin(q.pool_ids, unlabeled).all()
    x = emb[q.pool_ids]
    if q.info["dedup_filled"] == 0:
        sims = x @ x.T
        np.fill_diagonal(sims, -1)
        assert sims.max(initial=-1) < threshold
        if n_lab:
            assert (x @ emb[labeled].T).max() < threshold
    else:
        # filling only happens when the non-duplicates ran out: every candidate left out
        # is a near-copy of a labeled example or of the batch
        rest = np.setdiff1d(unlabeled, q.pool_ids)
        centres = np.concatenate([labeled, q.pool_ids])
        if rest.size:
            assert ((emb[rest] @ emb[centres].T).max(axis=1) >= threshold - 1e-6).all()
