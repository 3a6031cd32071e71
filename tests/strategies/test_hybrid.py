"""two_stage and fusion: hand-computed cases, option checks, properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from strategies import MissingInputError, QueryInputs, StrategyOptionError, available, get_strategy
from strategies.hybrid import rank_normalise
from tests.strategies.conftest import make_inputs

# the five rows of test_golden: margins -0.85 -0.05 -0.01 -0.21 -0.02,
# entropies 0.39 1.08 1.10 0.72 0.78
PROBS = np.array(
    [
        [0.90, 0.05, 0.05],
        [0.40, 0.35, 0.25],
        [0.34, 0.33, 0.33],
        [0.60, 0.39, 0.01],
        [0.50, 0.48, 0.02],
    ]
)
REGISTERED = {s.name for s in available()}

# ------------------------------------------------------------------------------ fusion


def test_rank_normalisation_by_hand():
    # sorted: 1 (rank 0), 2 and 2 (ranks 1, 2 -> 1.5 each), 3 (rank 3), 5 (rank 4); / 4
    got = rank_normalise(np.array([3.0, 1.0, 2.0, 2.0, 5.0]))
    np.testing.assert_allclose(got, [0.75, 0, 0.375, 0.375, 1])
    np.testing.assert_allclose(rank_normalise(np.array([7.0])), [0.5])
    np.testing.assert_allclose(rank_normalise(np.full(4, -2.0)), [0.5] * 4)
    np.testing.assert_allclose(rank_normalise(np.array([-np.inf, 0.0, np.inf])), [0, 0.5, 1])


def test_fusion_by_hand():
    # margin ranks -> [0, 0.5, 1, 0.25, 0.75]; entropy ranks -> [0, 0.75, 1, 0.25, 0.5]
    inputs = QueryInputs(unlabeled=np.arange(5), probs=PROBS)
    s = get_strategy("fusion", weights={"margin": 0.7, "entropy": 0.3})
    np.testing.assert_allclose(s.score(inputs), [0.0, 0.575, 1.0, 0.25, 0.675])
    assert s.query(inputs, 2, np.random.default_rng(0)).pool_ids.tolist() == [2, 4]
    # the other way round: [0, 0.675, 1, 0.25, 0.575]
    s = get_strategy("fusion", weights={"margin": 0.3, "entropy": 0.7})
    np.testing.assert_allclose(s.score(inputs), [0.0, 0.675, 1.0, 0.25, 0.575])
    assert s.query(inputs, 2, np.random.default_rng(0)).pool_ids.tolist() == [2, 1]


def test_fusion_weights_are_rescaled_and_zero_weights_dropped():
    inputs = QueryInputs(unlabeled=np.arange(5), probs=PROBS)
    a = get_strategy("fusion", weights={"margin": 7, "entropy": 3}).score(inputs)
    b = get_strategy("fusion", weights={"margin": 0.7, "entropy": 0.3}).score(inputs)
    np.testing.assert_allclose(a, b)
    only = get_strategy("fusion", weights={"margin": 1.0, "bald": 0.0})
    assert only.needs == {"probs"}  # bald's prob_samples are not needed at weight 0
    np.testing.assert_allclose(only.score(inputs), [0, 0.5, 1, 0.25, 0.75])


def test_fusion_needs_are_the_union_of_its_parts():
    s = get_strategy("fusion", weights={"bald": 0.5, "egl": 0.5})
    assert s.needs == {"prob_samples", "features", "head"}
    with pytest.raises(MissingInputError, match="'fusion' needs features"):
        s.query(QueryInputs(unlabeled=np.arange(5), probs=PROBS), 1, np.random.default_rng(0))
    q = s.query(make_inputs(), 5, np.random.default_rng(0))
    assert q.pool_ids.size == 5


@pytest.mark.parametrize(
    "weights, match",
    [
        ({"nope": 1.0}, "unknown strategy 'nope'"),
        ({"margin": 1.0, "random": 1.0}, "'random' has no scores"),
        ({"kmeans": 1.0}, "'kmeans' has no scores"),
        ({"margin": -0.5, "entropy": 1.0}, "weight of 'margin' is negative"),
        ({"margin": 0.0, "entropy": 0}, "must not all be zero"),
        ({}, "must not all be zero"),
        ({"margin": "a lot"}, "weight of 'margin' must be a finite number"),
        ({"margin": float("inf")}, "weight of 'margin' must be a finite number"),
        ([("margin", 1.0)], "must map strategy names to weights"),
    ],
)
def test_fusion_options_are_checked(weights, match):
    with pytest.raises(StrategyOptionError, match=match):
        get_strategy("fusion", weights=weights)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(1, 40), elements=st.floats(-3, 3)))
def test_rank_normalisation_properties(scores):
    r = rank_normalise(scores)
    assert ((r >= 0) & (r <= 1)).all()
    # average ranks sum to m (m - 1) / 2 whatever the ties
    assert r.sum() == pytest.approx(scores.size / 2)
    i, j = np.meshgrid(np.arange(scores.size), np.arange(scores.size))
    assert (np.sign(r[i] - r[j]) == np.sign(scores[i] - scores[j])).all()


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 30), st.integers(0, 10_000), st.data())
def test_fusion_of_one_strategy_selects_as_that_strategy(m, seed, data):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(3), size=m)
    probs[: m // 2] = probs[0]  # plenty of ties
    inputs = QueryInputs(unlabeled=np.arange(m), probs=probs)
    k = data.draw(st.integers(1, m))
    name = data.draw(st.sampled_from(["margin", "entropy", "least_confidence"]))
    fusion = get_strategy("fusion", weights={name: 2.0})
    fused = fusion.query(inputs, k, np.random.default_rng(seed))
    plain = get_strategy(name).query(inputs, k, np.random.default_rng(seed))
    np.testing.assert_array_equal(fused.pool_ids, plain.pool_ids)


# --------------------------------------------------------------------------- two_stage


def _margin_line(m: int = 30, seed: int = 0):
    # Row i has top-two gap (i + 1) / 100: the smaller the row, the more uncertain.
    gaps = (np.arange(m) + 1) / 100
    top = (1 + gaps) / 2
    probs = np.stack([top - 0.005, 1 - top - 0.005, np.full(m, 0.01)], axis=1)
    base = make_inputs(n_pool=m + 10, n_labeled=10, seed=seed)
    perm = np.random.default_rng(seed).permutation(m)  # shuffle rows so position means nothing
    return (
        QueryInputs(
            unlabeled=base.unlabeled[perm],
            labeled=base.labeled,
            probs=probs[perm],
            embeddings=base.embeddings,
        ),
        perm,
    )


@pytest.mark.parametrize("diversity", ["kmeans", "random", "kcenter", "kcenter_approx"])
@pytest.mark.parametrize("seed", range(4))
def test_two_stage_picks_only_inside_the_shortlist(diversity, seed):
    assert diversity in REGISTERED
    inputs, perm = _margin_line(seed=seed)
    # beta 2, k 3: the shortlist is the 6 smallest gaps, i.e. original rows 0..5
    s = get_strategy("two_stage", beta=2.0, diversity=diversity)
    q = s.query(inputs, 3, np.random.default_rng(seed))
    shortlist_ids = set(inputs.unlabeled[np.isin(perm, np.arange(6))].tolist())
    assert set(q.pool_ids.tolist()) <= shortlist_ids
    assert len(set(q.pool_ids.tolist())) == 3
    assert q.info["shortlist"] == 6
    # the scores reported are the first stage's (margin) for the picked candidates
    row_of = {int(pid): row for row, pid in enumerate(inputs.unlabeled)}
    rows = np.array([row_of[int(pid)] for pid in q.pool_ids])
    gaps = np.abs(inputs.probs[rows, 0] - inputs.probs[rows, 1])
    np.testing.assert_allclose(q.scores, -gaps)


def test_two_stage_shortlist_is_capped_by_the_pool():
    inputs, _ = _margin_line(m=12)
    q = get_strategy("two_stage", beta=10.0).query(inputs, 5, np.random.default_rng(0))
    assert q.info["shortlist"] == 12
    q = get_strategy("two_stage", beta=1.0).query(inputs, 5, np.random.default_rng(0))
    assert q.info["shortlist"] == 5  # beta 1: the diversity stage gets exactly k


def test_two_stage_beta_rounds_up():
    inputs, _ = _margin_line()
    q = get_strategy("two_stage", beta=1.5).query(inputs, 3, np.random.default_rng(0))
    assert q.info["shortlist"] == 5  # ceil(4.5)


def test_two_stage_needs_are_the_union_of_its_parts():
    assert get_strategy("two_stage").needs == {"probs", "embeddings"}
    assert get_strategy("two_stage", score="bald").needs == {"prob_samples", "embeddings"}
    assert get_strategy("two_stage", score="egl", diversity="badge").needs == {"features", "head"}
    q = get_strategy("two_stage", score="egl", diversity="badge").query(
        make_inputs(), 4, np.random.default_rng(0)
    )
    assert q.info["diversity_info"] == {"badge_path": "exact"}


@pytest.mark.parametrize(
    "options, match",
    [
        ({"beta": 0.5}, "beta must be a finite number >= 1"),
        ({"beta": float("nan")}, "beta must be a finite number >= 1"),
        ({"beta": "5"}, "beta must be a finite number >= 1"),
        ({"score": "kmeans"}, "'kmeans' has no scores"),
        ({"score": "nope"}, "unknown strategy 'nope'"),
        ({"diversity": "nope"}, "unknown strategy 'nope'"),
        ({"diversity": 3}, "diversity must name a strategy"),
    ],
)
def test_two_stage_options_are_checked(options, match):
    with pytest.raises(StrategyOptionError, match=match):
        get_strategy("two_stage", **options)


# ------------------------------------------------------------------ weighted two_stage


def _arc(angles_deg, probs):
    # Unit vectors on a circle (spherical k-means normalises anyway); rows = pool ids 0..n-1.
    a = np.radians(np.asarray(angles_deg, dtype=np.float64))
    emb = np.stack([np.cos(a), np.sin(a), np.zeros_like(a)], axis=1).astype(np.float32)
    n = emb.shape[0]
    return QueryInputs(
        unlabeled=np.arange(n, dtype=np.int64),
        labeled=np.array([], dtype=np.int64),
        probs=np.asarray(probs, dtype=np.float64),
        embeddings=emb,
    )


def test_weighted_two_stage_pulls_the_one_centroid_toward_the_uncertain_end():
    # Five candidates at 0, 10, 20, 30, 40 degrees with gaps 0.9 0.9 0.9 0.9 0.02; beta 5,
    # k 1: all five are shortlisted and one centroid is fitted. Unweighted, the centroid is
    # the mean direction, 20 degrees: pool id 2. The weights are score - min score =
    # 0.9 - gap: 0, 0, 0, 0, 0.88, so the weighted centroid is pool id 4 itself.
    gaps = np.array([0.9, 0.9, 0.9, 0.9, 0.02])
    top = (1 + gaps) / 2
    inputs = _arc([0, 10, 20, 30, 40], np.stack([top, 1 - top], axis=1))
    plain = get_strategy("two_stage", beta=5.0).query(inputs, 1, np.random.default_rng(0))
    weighted = get_strategy("two_stage", beta=5.0, weighted=True).query(
        inputs, 1, np.random.default_rng(0)
    )
    assert plain.pool_ids.tolist() == [2]
    assert weighted.pool_ids.tolist() == [4]
    assert weighted.info["weighted"] is True
    assert weighted.info["diversity_info"]["sample_weights"] is True


def test_weighted_two_stage_weighs_by_informativeness_not_only_the_top():
    # Gaps 0.8 0.7 0.6 0.5 0.1 at 0..40 degrees: weights 0.8 - gap = 0, 0.1, 0.2, 0.3, 0.7.
    # The weighted mean direction is atan2(sum w sin, sum w cos) = 32.35 degrees, nearest
    # pool id 3 (30 degrees); the top score alone would be pool id 4, the plain mean id 2.
    gaps = np.array([0.8, 0.7, 0.6, 0.5, 0.1])
    top = (1 + gaps) / 2
    inputs = _arc([0, 10, 20, 30, 40], np.stack([top, 1 - top], axis=1))
    q = get_strategy("two_stage", beta=5.0, weighted=True).query(inputs, 1, np.random.default_rng(0))
    assert q.pool_ids.tolist() == [3]


def test_weighted_two_stage_with_all_scores_tied_is_the_unweighted_one():
    base, _ = _margin_line(m=30)
    tied = QueryInputs(
        unlabeled=base.unlabeled,
        labeled=base.labeled,
        probs=np.tile([[0.5, 0.3, 0.2]], (30, 1)),
        embeddings=base.embeddings,
    )
    plain = get_strategy("two_stage", beta=2.0).query(tied, 4, np.random.default_rng(3))
    weighted = get_strategy("two_stage", beta=2.0, weighted=True).query(
        tied, 4, np.random.default_rng(3)
    )
    np.testing.assert_array_equal(weighted.pool_ids, plain.pool_ids)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"weighted": "yes"}, "weighted must be true or false"),
        ({"weighted": True, "diversity": "kcenter"}, "weighted needs diversity: kmeans"),
    ],
)
def test_weighted_two_stage_options_are_checked(options, match):
    with pytest.raises(StrategyOptionError, match=match):
        get_strategy("two_stage", **options)
