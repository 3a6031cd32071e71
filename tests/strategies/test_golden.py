"""Hand-computed cases: each strategy picks what the arithmetic says it must."""

from __future__ import annotations

import numpy as np
import pytest

from strategies import QueryInputs, get_strategy
from strategies.uncertainty import entropy, least_confidence, margin

PROBS = np.array(
    [
        [0.90, 0.05, 0.05],  # confident
        [0.40, 0.35, 0.25],  # close top two (gap 0.05), flat-ish
        [0.34, 0.33, 0.33],  # flattest: max entropy, lowest confidence, gap 0.01
        [0.60, 0.39, 0.01],  # gap 0.21
        [0.50, 0.48, 0.02],  # gap 0.02, but peaked on two classes
    ]
)


def _inputs(probs=PROBS, unlabeled=None):
    return QueryInputs(unlabeled=np.arange(len(probs)) if unlabeled is None else unlabeled, probs=probs)


def test_least_confidence_values():
    np.testing.assert_allclose(least_confidence(_inputs()), [0.10, 0.60, 0.66, 0.40, 0.50])


def test_margin_values_and_order():
    np.testing.assert_allclose(margin(_inputs()), [-0.85, -0.05, -0.01, -0.21, -0.02])
    q = get_strategy("margin").query(_inputs(), 2, np.random.default_rng(0))
    assert q.pool_ids.tolist() == [2, 4]  # gaps 0.01 then 0.02


def test_entropy_values():
    expected = [-sum(p * np.log(p) for p in row) for row in PROBS]
    np.testing.assert_allclose(entropy(_inputs()), expected)
    q = get_strategy("entropy").query(_inputs(), 1, np.random.default_rng(0))
    assert q.pool_ids.tolist() == [2]


def test_margin_and_entropy_disagree_where_they_should():
    # row 4 (0.50/0.48/0.02) is a near-tie for margin but low-entropy; row 1 the reverse
    # entropies: 0.39, 1.08, 1.10, 0.70, 0.78; gaps: 0.85, 0.05, 0.01, 0.21, 0.02
    m = get_strategy("margin").query(_inputs(), 2, np.random.default_rng(0)).pool_ids.tolist()
    e = get_strategy("entropy").query(_inputs(), 2, np.random.default_rng(0)).pool_ids.tolist()
    assert m == [2, 4]
    assert e == [2, 1]


def test_entropy_ignores_zero_probabilities():
    probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    np.testing.assert_allclose(entropy(_inputs(probs)), [0.0, np.log(2)])


def test_scores_follow_pool_ids_not_positions():
    q = get_strategy("least_confidence").query(
        _inputs(unlabeled=np.array([10, 20, 30, 40, 50])), 1, np.random.default_rng(0)
    )
    assert q.pool_ids.tolist() == [30]
    assert q.scores[0] == pytest.approx(0.66)


def test_ties_are_broken_at_random_not_by_position():
    probs = np.tile([0.5, 0.5], (40, 1))
    firsts = {
        int(get_strategy("margin").query(_inputs(probs), 1, np.random.default_rng(s)).pool_ids[0])
        for s in range(20)
    }
    assert len(firsts) > 5


def test_kmeans_takes_one_example_per_well_separated_cluster():
    # four tight clusters on orthogonal axes, 10 points each
    rng = np.random.default_rng(0)
    axes = np.eye(8, dtype=np.float32)[:4]
    emb = np.repeat(axes, 10, axis=0) + 0.01 * rng.normal(size=(40, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    inputs = QueryInputs(unlabeled=np.arange(40), embeddings=emb)
    q = get_strategy("kmeans").query(inputs, 4, np.random.default_rng(3))
    assert sorted((q.pool_ids // 10).tolist()) == [0, 1, 2, 3]


def test_kmeans_picks_the_member_nearest_the_centroid():
    # one cluster of five points at -20..20 degrees (shuffled): the centroid points at 0 degrees
    angles = np.deg2rad([10.0, -20.0, 0.0, 20.0, -10.0])
    emb = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    q = get_strategy("kmeans").query(QueryInputs(unlabeled=np.arange(5), embeddings=emb), 1, np.random.default_rng(0))
    assert q.pool_ids.tolist() == [2]


def test_random_is_uniform_over_candidates():
    inputs = QueryInputs(unlabeled=np.arange(10))
    counts = np.zeros(10)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        counts[get_strategy("random").query(inputs, 2, rng).pool_ids] += 1
    # each id expected 400 times; 5 sigma of a binomial(2000, 0.2) is ~90
    assert np.abs(counts - 400).max() < 90
