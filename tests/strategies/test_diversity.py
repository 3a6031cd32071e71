"""Cluster-based diversity (kmeans: nearest / farthest_from_labeled, size weighting) and the
block helpers shared with core-set and gating."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies import QueryInputs, StrategyOptionError, get_strategy
from strategies.diversity import (
    CandidateBlocks,
    allocate,
    cluster_select,
    labeled_vectors,
    nearest_labeled,
)


def circle(degrees) -> np.ndarray:
    a = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)  # [n, 2]


def axis_clusters(sizes, dim=8, noise=0.01, seed=0) -> np.ndarray:
    """Tight clusters around orthogonal axes; cluster j holds the next sizes[j] pool ids."""
    rng = np.random.default_rng(seed)
    centers = np.eye(dim, dtype=np.float32)[: len(sizes)]
    emb = np.repeat(centers, sizes, axis=0) + noise * rng.normal(size=(sum(sizes), dim))
    return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)


# --- allocation ----------------------------------------------------------------------------


def test_allocate_proportional_exact_quotas():
    assert allocate(10, np.array([50, 30, 20]), np.array([50.0, 30, 20])).tolist() == [5, 3, 2]


def test_allocate_largest_remainder():
    # quotas 2.0, 1.2, 0.8: floors 2, 1, 0 and the last seat to the largest remainder (0.8)
    assert allocate(4, np.array([50, 30, 20]), np.array([50.0, 30, 20])).tolist() == [2, 1, 1]


def test_allocate_caps_at_cluster_size_and_ties_go_to_the_larger_then_lower_index():
    # equal quotas 2, 2, 2; cluster 0 has one member, its spare seat goes to cluster 1
    # (clusters 1 and 2 tie on remainder and size: the lower index wins)
    assert allocate(6, np.array([1, 10, 10]), np.ones(3)).tolist() == [1, 3, 2]
    # an empty cluster gets nothing, even with weight
    assert allocate(3, np.array([0, 2, 5]), np.ones(3)).tolist() == [0, 1, 2]


@given(
    st.lists(st.integers(0, 40), min_size=1, max_size=30),
    st.booleans(),
    st.data(),
)
def test_allocate_sums_to_k_within_sizes(sizes, weighted, data):
    sizes = np.array(sizes)
    if sizes.sum() == 0:
        return
    k = data.draw(st.integers(1, int(sizes.sum())))
    w = sizes.astype(float) if weighted else (sizes > 0).astype(float)
    alloc = allocate(k, sizes, w)
    assert alloc.sum() == k
    assert (alloc >= 0).all() and (alloc <= sizes).all()
    quota = k * w / w.sum()
    if (quota <= sizes).all():  # no cap binds: classic largest remainder, within 1 of quota
        assert (np.abs(alloc - quota) < 1).all()


# --- kmeans picks ----------------------------------------------------------------------------


def test_farthest_from_labeled_picks_the_member_away_from_the_labeled_point():
    # one cluster at -20..20 degrees; a labeled example at 15 degrees. Nearest-the-centroid
    # is the 0-degree member, farthest-from-labeled the -20-degree one (35 degrees away).
    emb = circle([-20, -10, 0, 10, 20, 15])
    inputs = QueryInputs(unlabeled=np.array([3, 0, 4, 2, 1]), labeled=np.array([5]), embeddings=emb)
    near = get_strategy("kmeans").query(inputs, 1, np.random.default_rng(0))
    far = get_strategy("kmeans", pick="farthest_from_labeled").query(inputs, 1, np.random.default_rng(0))
    assert near.pool_ids.tolist() == [2]
    assert far.pool_ids.tolist() == [0]
    assert far.info["pick"] == "farthest_from_labeled"


def test_farthest_from_labeled_without_labels_is_nearest():
    emb = circle([-20, -10, 0, 10, 20])
    inputs = QueryInputs(unlabeled=np.arange(5), embeddings=emb)
    q = get_strategy("kmeans", pick="farthest_from_labeled").query(inputs, 1, np.random.default_rng(0))
    assert q.pool_ids.tolist() == [2]


def test_farthest_from_labeled_per_cluster():
    # two clusters (around 0 and 90 degrees), labeled examples at -25 and 115 degrees:
    # the far members are the 20- and 70-degree ones.
    emb = circle([-20, -10, 0, 10, 20, 70, 80, 90, 100, 110, -25, 115])
    inputs = QueryInputs(unlabeled=np.arange(10), labeled=np.array([10, 11]), embeddings=emb)
    q = get_strategy("kmeans", pick="farthest_from_labeled").query(inputs, 2, np.random.default_rng(0))
    assert sorted(q.pool_ids.tolist()) == [4, 5]


def test_weight_by_size_gives_big_clusters_more_picks():
    emb = axis_clusters([30, 10])  # ids 0..29 on one axis, 30..39 on another
    inputs = QueryInputs(unlabeled=np.arange(40), embeddings=emb)
    weighted = get_strategy("kmeans", n_clusters=2, weight_by_size=True).query(inputs, 4, np.random.default_rng(0))
    equal = get_strategy("kmeans", n_clusters=2).query(inputs, 4, np.random.default_rng(0))
    assert np.bincount(weighted.pool_ids // 30, minlength=2).tolist() == [3, 1]
    assert np.bincount(equal.pool_ids // 30, minlength=2).tolist() == [2, 2]


@pytest.mark.parametrize("order", ["ascending", "reversed", "shuffled"])
def test_sample_weights_follow_row_order_whatever_the_pool_id_order(order):
    # Pool ids 0..4 at 0, 10, 20, 30, 40 degrees; one centroid. All the weight on the row
    # holding pool id 4 puts the centroid on it, in whatever order the candidates come.
    ids = np.arange(5)
    if order == "reversed":
        ids = ids[::-1].copy()
    elif order == "shuffled":
        ids = np.array([3, 0, 4, 1, 2])
    inputs = QueryInputs(unlabeled=ids, embeddings=circle([0, 10, 20, 30, 40]))
    w = np.where(ids == 4, 1.0, 0.0)  # [5] row positions
    sel = cluster_select(None, inputs, 1, np.random.default_rng(0), sample_weights=w)
    assert ids[sel.rows].tolist() == [4]
    assert sel.info["sample_weights"] is True
    plain = cluster_select(None, inputs, 1, np.random.default_rng(0))
    assert ids[plain.rows].tolist() == [2]  # the mean direction, 20 degrees


@pytest.mark.parametrize(
    ("weights", "fragment"),
    [
        (np.ones(4), "must be [m=5], got shape (4,)"),
        (np.array([1.0, -0.5, 1.0, 1.0, 1.0]), "1 of 5 are not (first at row 1: -0.5)"),
        (np.array([1.0, 1.0, np.inf, np.nan, 1.0]), "2 of 5 are not (first at row 2: inf)"),
        (np.zeros(5), "all 0 (5 candidates)"),
    ],
)
def test_bad_sample_weights_name_the_problem(weights, fragment):
    from strategies import InvalidInputError

    inputs = QueryInputs(unlabeled=np.arange(5), embeddings=circle([0, 10, 20, 30, 40]))
    with pytest.raises(InvalidInputError) as err:
        cluster_select(None, inputs, 2, np.random.default_rng(0), sample_weights=weights)
    assert fragment in str(err.value)


def test_more_clusters_than_k_weighted_covers_the_big_modes():
    # clusters of 40, 30, 20, 10, k=4 weighted by size: quotas 1.6, 1.2, 0.8, 0.4, floors
    # 1, 1, 0, 0, the two seats left to the largest remainders (0.8, then 0.6)
    emb = axis_clusters([40, 30, 20, 10], noise=0.001)
    inputs = QueryInputs(unlabeled=np.arange(100), embeddings=emb)
    q = get_strategy("kmeans", n_clusters=4, weight_by_size=True).query(inputs, 4, np.random.default_rng(1))
    group = np.searchsorted([40, 70, 90, 100], q.pool_ids, side="right")
    assert np.bincount(group, minlength=4).tolist() == [2, 1, 1, 0]


def test_round_robin_order_puts_every_cluster_first():
    emb = axis_clusters([30, 10])
    inputs = QueryInputs(unlabeled=np.arange(40), embeddings=emb)
    q = get_strategy("kmeans", n_clusters=2, weight_by_size=True).query(inputs, 4, np.random.default_rng(0))
    # largest cluster's first pick, then the small cluster's, then the rest of the big one
    assert (q.pool_ids // 30).tolist() == [0, 1, 0, 0]


def test_fewer_clusters_than_k_takes_several_per_cluster():
    emb = axis_clusters([10, 10, 10])
    inputs = QueryInputs(unlabeled=np.arange(30), embeddings=emb)
    q = get_strategy("kmeans", n_clusters=3).query(inputs, 9, np.random.default_rng(0))
    assert np.bincount(q.pool_ids // 10, minlength=3).tolist() == [3, 3, 3]
    assert q.info["n_clusters"] == 3


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"pick": "middle"}, "pick must be one of nearest, farthest_from_labeled, got 'middle'"),
        ({"weight_by_size": "yes"}, "weight_by_size must be true or false, got 'yes'"),
        ({"n_clusters": 0}, "n_clusters must be an integer >= 1, got 0"),
        ({"n_clusters": 2.5}, "n_clusters must be an integer >= 1, got 2.5"),
        ({"niter": 0}, "niter must be an integer >= 1, got 0"),
        ({"max_points_per_centroid": True}, "max_points_per_centroid must be an integer >= 1, got True"),
        ({"spherical": 1}, "spherical must be true or false, got 1"),
    ],
)
def test_bad_options_name_option_and_value(options, fragment):
    with pytest.raises(StrategyOptionError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        get_strategy("kmeans", **options)


def test_numpy_integer_options_are_accepted():
    inputs = QueryInputs(unlabeled=np.arange(30), embeddings=axis_clusters([10, 10, 10]))
    q = get_strategy("kmeans", n_clusters=np.int64(3), niter=np.int32(5)).query(inputs, 3, np.random.default_rng(0))
    assert q.pool_ids.size == 3


# --- blocks -----------------------------------------------------------------------------------


def test_blocks_cover_every_candidate_in_pool_id_order():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(3000, 4)).astype(np.float32)
    # a dense run, scattered ids (a third of their range), a run with one labeled hole
    ids = np.concatenate([np.arange(100, 1700), np.arange(1700, 2500, 3), np.arange(2500, 3000)])
    ids = ids[ids != 2700]
    unlabeled = rng.permutation(ids)
    blocks = CandidateBlocks(emb, unlabeled, chunk_rows=256)
    np.testing.assert_array_equal(unlabeled[blocks.rows], np.sort(unlabeled))
    kinds = {"view": 0, "view_with_holes": 0, "gather": 0}
    seen = 0
    for s, e, blk, sel in blocks.windows():
        assert s == seen and 0 < e - s <= 256 and blk.shape[0] <= 256
        np.testing.assert_array_equal(blk if sel is None else blk[sel], emb[blocks.ids[s:e]])
        if not np.shares_memory(blk, emb):
            kinds["gather"] += 1
        else:
            kinds["view" if sel is None else "view_with_holes"] += 1
        seen = e
    assert seen == unlabeled.size
    assert all(kinds.values()), kinds
    for s, e, blk in blocks:
        np.testing.assert_array_equal(blk, emb[blocks.ids[s:e]])


def test_nearest_labeled_matches_brute_force():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(500, 6)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    unlabeled, labeled = np.arange(0, 480), np.arange(480, 500)
    blocks = CandidateBlocks(emb, unlabeled, chunk_rows=50)
    ip = nearest_labeled(blocks, labeled_vectors(emb, labeled), "ip")
    l2 = nearest_labeled(blocks, labeled_vectors(emb, labeled), "l2")
    sims = emb[unlabeled] @ emb[labeled].T  # [480, 20]
    np.testing.assert_allclose(ip, sims.max(axis=1), atol=1e-5)
    np.testing.assert_allclose(l2, (2 - 2 * sims).min(axis=1), atol=1e-5)


@pytest.mark.parametrize("pick", ["nearest", "farthest_from_labeled"])
@pytest.mark.parametrize("weight_by_size", [False, True])
def test_chunked_path_gives_the_same_batch(pick, weight_by_size):
    # 1,200 candidates through 64-row blocks, scattered ids (gathered blocks) included
    rng = np.random.default_rng(2)
    emb = axis_clusters([300, 300, 300, 300, 100], dim=8, noise=0.2, seed=2)
    perm = rng.permutation(1300)
    inputs = QueryInputs(unlabeled=np.sort(perm[:1200]), labeled=np.sort(perm[1200:]), embeddings=emb)
    kw = dict(pick=pick, weight_by_size=weight_by_size, n_clusters=12)
    small = cluster_select(None, inputs, 10, np.random.default_rng(5), chunk_rows=64, **kw)
    whole = cluster_select(None, inputs, 10, np.random.default_rng(5), **kw)
    np.testing.assert_array_equal(small.rows, whole.rows)


# --- properties ---------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    st.integers(4, 80),
    st.integers(0, 10_000),
    st.sampled_from(["nearest", "farthest_from_labeled"]),
    st.booleans(),
    st.data(),
)
def test_kmeans_variants_return_k_unique_unlabeled_and_are_deterministic(n, seed, pick, weighted, data):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, 5)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    perm = rng.permutation(n)
    n_lab = data.draw(st.integers(0, n - 1))
    inputs = QueryInputs(unlabeled=perm[n_lab:], labeled=np.sort(perm[:n_lab]), embeddings=emb)
    k = data.draw(st.integers(1, n - n_lab))
    n_clusters = data.draw(st.one_of(st.none(), st.integers(1, 2 * (n - n_lab))))
    s = get_strategy("kmeans", pick=pick, weight_by_size=weighted, n_clusters=n_clusters)
    a = s.query(inputs, k, np.random.default_rng(seed))
    b = s.query(inputs, k, np.random.default_rng(seed))
    assert np.unique(a.pool_ids).size == k
    assert np.isin(a.pool_ids, inputs.unlabeled).all()
    np.testing.assert_array_equal(a.pool_ids, b.pool_ids)
