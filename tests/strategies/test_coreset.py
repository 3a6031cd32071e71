"""Core-set / greedy k-center: hand-computed traversals, the 2-approximation, chunking."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies import QueryInputs, StrategyOptionError, get_strategy
from benchmarks.kcenter_reference import eager_kcenter
from strategies.coreset import covering_radius, kcenter_approx_select, kcenter_select


def circle(degrees) -> np.ndarray:
    a = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return np.stack([np.cos(a), np.sin(a)], axis=1).astype(np.float32)  # [n, 2]


def chord(degrees: float) -> float:
    """Euclidean distance between unit vectors ``degrees`` apart."""
    return 2 * math.sin(math.radians(degrees) / 2)


def unit_pool(n, dim, seed):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def test_kcenter_traversal_with_a_labeled_point():
    # labeled: 0 degrees. Candidates at 10, 100, 170, 200, 270 (pool ids 1..5, given shuffled).
    # 1st: 170 (170 degrees from 0). Then nearest-centre angles: 10->10, 100->70, 200->30,
    # 270->90: 2nd is 270. Then 10->10, 100->70, 200->30: 3rd is 100, leaving a radius of
    # 30 degrees (200 to 170).
    emb = circle([0, 10, 100, 170, 200, 270])
    inputs = QueryInputs(unlabeled=np.array([5, 3, 1, 4, 2]), labeled=np.array([0]), embeddings=emb)
    q = get_strategy("kcenter").query(inputs, 3, np.random.default_rng(0))
    assert q.pool_ids.tolist() == [3, 5, 2]
    assert q.info["covering_radius"] == pytest.approx(chord(30), abs=1e-6)
    assert q.info["radius_before"] == pytest.approx(chord(170), abs=1e-6)
    assert q.info["first_pick"] == "farthest_from_labeled"
    assert np.isnan(q.scores).all()


def test_kcenter_cold_start_begins_farthest_from_the_mean():
    # 0, 10, 20 and 180 degrees: the mean leans towards 10 degrees, so 180 comes first, then
    # 0 (a chord of 2 from 180), then 20 (20 degrees from 0; 10 would be only 10).
    emb = circle([0, 10, 20, 180])
    inputs = QueryInputs(unlabeled=np.array([2, 3, 0, 1]), embeddings=emb)
    q = get_strategy("kcenter").query(inputs, 3, np.random.default_rng(0))
    assert q.pool_ids.tolist() == [3, 0, 2]
    assert q.info["first_pick"] == "farthest_from_mean"
    assert q.info["radius_before"] is None
    assert q.info["covering_radius"] == pytest.approx(chord(10), abs=1e-6)


def test_kcenter_ties_go_to_the_lower_pool_id_in_any_row_order():
    # pool ids 2 and 4 are the same vector, both 90 degrees from the labeled one
    emb = circle([0, 30, 90, 45, 90])
    for unlabeled in ([1, 2, 3, 4], [4, 3, 2, 1]):
        inputs = QueryInputs(unlabeled=np.array(unlabeled), labeled=np.array([0]), embeddings=emb)
        q = get_strategy("kcenter").query(inputs, 1, np.random.default_rng(0))
        assert q.pool_ids.tolist() == [2]


def test_kcenter_ignores_the_seed():
    emb = unit_pool(80, 5, 0)
    inputs = QueryInputs(unlabeled=np.arange(10, 80), labeled=np.arange(10), embeddings=emb)
    a = get_strategy("kcenter").query(inputs, 9, np.random.default_rng(1)).pool_ids
    b = get_strategy("kcenter").query(inputs, 9, np.random.default_rng(2)).pool_ids
    np.testing.assert_array_equal(a, b)


def test_kcenter_is_invariant_to_the_order_of_candidates():
    emb = unit_pool(120, 6, 3)
    perm = np.random.default_rng(0).permutation(np.arange(20, 120))
    a = QueryInputs(unlabeled=np.arange(20, 120), labeled=np.arange(20), embeddings=emb)
    b = QueryInputs(unlabeled=perm, labeled=np.arange(20), embeddings=emb)
    qa = get_strategy("kcenter").query(a, 15, np.random.default_rng(0))
    qb = get_strategy("kcenter").query(b, 15, np.random.default_rng(0))
    np.testing.assert_array_equal(qa.pool_ids, qb.pool_ids)


@pytest.mark.parametrize("layout", ["contiguous", "holes", "sparse"])
def test_chunked_path_matches_one_block(layout):
    # ~1,000-2,000 candidates through 37-row blocks: views, views with labeled rows inside
    # them, and gathers of scattered ids
    emb = unit_pool(3000, 8, 4)
    ids = np.arange(3000)
    if layout == "contiguous":
        unlabeled, labeled = np.arange(1000, 3000), np.arange(0, 1000, 7)
    elif layout == "holes":
        unlabeled, labeled = ids[ids % 3 != 0], ids[ids % 3 == 0]
    else:
        unlabeled, labeled = ids[ids % 3 == 0], ids[ids % 3 == 1]
    inputs = QueryInputs(unlabeled=unlabeled, labeled=labeled, embeddings=emb)
    rng = np.random.default_rng(0)
    small = kcenter_select(None, inputs, 25, rng, chunk_rows=37)
    whole = kcenter_select(None, inputs, 25, rng, chunk_rows=10_000)
    np.testing.assert_array_equal(small.rows, whole.rows)
    assert small.info["covering_radius"] == pytest.approx(whole.info["covering_radius"], abs=1e-6)
    assert small.info["covering_radius"] == pytest.approx(
        covering_radius(inputs, small.rows, chunk_rows=50), abs=1e-5
    )


def test_covering_radius_brute_force():
    emb = unit_pool(60, 4, 5)
    inputs = QueryInputs(unlabeled=np.arange(10, 60), labeled=np.arange(10), embeddings=emb)
    rows = np.array([0, 5, 9])
    centres = np.concatenate([np.arange(10), inputs.unlabeled[rows]])
    d = np.linalg.norm(emb[inputs.unlabeled][:, None, :] - emb[centres][None, :, :], axis=2)
    assert covering_radius(inputs, rows) == pytest.approx(d.min(axis=1).max(), abs=1e-5)
    assert covering_radius(QueryInputs(unlabeled=np.arange(5), embeddings=emb), np.array([], int)) == math.inf


@st.composite
def small_problems(draw):
    n = draw(st.integers(3, 9))
    seed = draw(st.integers(0, 10_000))
    dim = draw(st.integers(2, 4))
    n_lab = draw(st.integers(0, n - 2))
    k = draw(st.integers(1, min(3, n - n_lab)))
    emb = unit_pool(n, dim, seed)
    perm = np.random.default_rng(seed).permutation(n)
    inputs = QueryInputs(unlabeled=perm[n_lab:], labeled=np.sort(perm[:n_lab]), embeddings=emb)
    return inputs, k


@settings(max_examples=60, deadline=None)
@given(small_problems())
def test_kcenter_is_within_twice_the_optimal_radius(problem):
    inputs, k = problem
    q = kcenter_select(None, inputs, k, np.random.default_rng(0))
    m = inputs.n_candidates
    best = min(covering_radius(inputs, np.array(c)) for c in itertools.combinations(range(m), k))
    assert q.info["covering_radius"] <= 2 * best + 1e-5
    # and so within twice any other batch's, random ones included
    rnd = np.random.default_rng(1).choice(m, k, replace=False)
    assert q.info["covering_radius"] <= 2 * covering_radius(inputs, rnd) + 1e-5


@settings(max_examples=40, deadline=None)
@given(st.integers(5, 120), st.integers(0, 10_000), st.data())
def test_kcenter_batch_is_spread_at_least_its_covering_radius(n, seed, data):
    # Greedy's own guarantee: each pick was the farthest candidate when taken, so every pair
    # in the batch (and every pick to the labeled set) is at least the final radius apart.
    emb = unit_pool(n, 5, seed)
    perm = np.random.default_rng(seed).permutation(n)
    n_lab = data.draw(st.integers(0, n - 2))
    inputs = QueryInputs(unlabeled=perm[n_lab:], labeled=np.sort(perm[:n_lab]), embeddings=emb)
    k = data.draw(st.integers(1, inputs.n_candidates))
    q = get_strategy("kcenter").query(inputs, k, np.random.default_rng(seed))
    assert np.unique(q.pool_ids).size == k
    assert not np.isin(q.pool_ids, inputs.labeled).any()
    r = q.info["covering_radius"]
    x = emb[q.pool_ids]
    if k > 1:
        d = np.linalg.norm(x[:, None] - x[None], axis=2)[np.triu_indices(k, 1)]
        assert d.min() >= r - 1e-5
    if n_lab:
        d = np.linalg.norm(x[:, None] - emb[inputs.labeled][None], axis=2)
        assert d.min() >= r - 1e-5
    assert r == pytest.approx(covering_radius(inputs, _rows_of(inputs, q.pool_ids)), abs=1e-5)


def _rows_of(inputs: QueryInputs, pool_ids: np.ndarray) -> np.ndarray:
    where = {int(p): i for i, p in enumerate(inputs.unlabeled)}
    return np.array([where[int(p)] for p in pool_ids])


# --- approximate variant -------------------------------------------------------------------


def test_approx_equals_exact_when_the_sample_covers_the_pool():
    emb = unit_pool(400, 6, 6)
    inputs = QueryInputs(unlabeled=np.arange(50, 400), labeled=np.arange(50), embeddings=emb)
    exact = get_strategy("kcenter").query(inputs, 20, np.random.default_rng(0))
    approx = get_strategy("kcenter_approx", sample=1000).query(inputs, 20, np.random.default_rng(0))
    np.testing.assert_array_equal(exact.pool_ids, approx.pool_ids)
    assert approx.info["sampled"] == 350 and approx.info["ivf"] is False


def test_approx_subsamples_deterministically_and_loses_little():
    emb = unit_pool(3000, 4, 7)
    inputs = QueryInputs(unlabeled=np.arange(20, 3000), labeled=np.arange(20), embeddings=emb)
    s = get_strategy("kcenter_approx", sample=500)
    a = s.query(inputs, 30, np.random.default_rng(3))
    b = s.query(inputs, 30, np.random.default_rng(3))
    np.testing.assert_array_equal(a.pool_ids, b.pool_ids)
    assert a.info["sampled"] == 500
    assert np.unique(a.pool_ids).size == 30
    exact = get_strategy("kcenter").query(inputs, 30, np.random.default_rng(3))
    r_exact = exact.info["covering_radius"]
    r_approx = covering_radius(inputs, _rows_of(inputs, a.pool_ids))
    assert r_exact <= r_approx <= 2 * r_exact  # a 1/6 sample of a 4-d sphere covers it well


def test_approx_sample_smaller_than_k_still_takes_k():
    emb = unit_pool(200, 4, 8)
    inputs = QueryInputs(unlabeled=np.arange(200), embeddings=emb)
    q = get_strategy("kcenter_approx", sample=5).query(inputs, 12, np.random.default_rng(0))
    assert np.unique(q.pool_ids).size == 12 and q.info["sampled"] == 12


def test_approx_ivf_over_a_large_labeled_set():
    # 600 labeled: 12 IVF lists; probing all of them is exact, probing one is not, but both
    # give k unique candidates
    emb = unit_pool(1000, 6, 9)
    inputs = QueryInputs(unlabeled=np.arange(600, 1000), labeled=np.arange(600), embeddings=emb)
    exact = kcenter_select(None, inputs, 10, np.random.default_rng(0))
    full = kcenter_approx_select(None, inputs, 10, np.random.default_rng(0), nprobe=64, ivf_min_labeled=100)
    assert full.info["ivf"] is True
    np.testing.assert_array_equal(full.rows, exact.rows)
    one = kcenter_approx_select(None, inputs, 10, np.random.default_rng(0), nprobe=1, ivf_min_labeled=100)
    assert np.unique(one.rows).size == 10


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"sample": 0}, "sample must be an integer >= 1, got 0"),
        ({"sample": 10.5}, "sample must be an integer >= 1, got 10.5"),
        ({"nprobe": False}, "nprobe must be an integer >= 1, got False"),
    ],
)
def test_approx_bad_options(options, fragment):
    with pytest.raises(StrategyOptionError, match=fragment.replace(".", r"\.")):
        get_strategy("kcenter_approx", **options)


def test_kcenter_has_no_options():
    with pytest.raises(StrategyOptionError, match="has no option 'sample'"):
        get_strategy("kcenter", sample=10)


@pytest.mark.parametrize("cell_rows", [1, 7, 64, 1024])
@pytest.mark.parametrize("case", ["cold", "labeled", "sparse_labeled", "duplicates", "grid_ties", "minilm_width"])
def test_lazy_traversal_picks_exactly_what_the_eager_one_did(case, cell_rows):
    rng = np.random.default_rng(17)
    n, d = 600, 16
    emb = unit_pool(n, d, 3)
    labeled = np.array([], dtype=np.int64)
    if case == "labeled":
        labeled = rng.choice(n, 40, replace=False)
    if case == "sparse_labeled":  # most of the pool labeled: candidate spans are gathered
        labeled = rng.choice(n, 450, replace=False)
    if case == "duplicates":  # exact copies: equal distances everywhere, ties by pool id
        emb = emb[rng.integers(0, 60, n)]
        labeled = rng.choice(n, 5, replace=False)
    if case == "minilm_width":  # 384-d, the width FAISS's kernels see in production
        emb = unit_pool(n, 384, 4)
        labeled = rng.choice(n, 10, replace=False)
    if case == "grid_ties":  # integer grid: many candidates at exactly the same distance
        emb = rng.integers(0, 3, size=(n, 4)).astype(np.float32)
        labeled = np.array([0])
    unlabeled = np.setdiff1d(np.arange(n), labeled)
    rng.shuffle(unlabeled)
    k = 60
    inputs = QueryInputs(unlabeled=unlabeled, labeled=labeled, embeddings=emb)
    q = kcenter_select(None, inputs, k, np.random.default_rng(0), cell_rows=cell_rows, chunk_rows=50)
    assert unlabeled[q.rows].tolist() == eager_kcenter(emb, unlabeled, labeled, k)
    # the reported radius is the exact one, though most cells were never brought up to date
    assert q.info["covering_radius"] == pytest.approx(covering_radius(inputs, q.rows), abs=1e-5)


def test_lazy_traversal_takes_every_candidate_when_k_is_the_pool():
    emb = unit_pool(30, 8, 5)
    inputs = QueryInputs(unlabeled=np.arange(1, 30), labeled=np.array([0]), embeddings=emb)
    q = kcenter_select(None, inputs, 29, np.random.default_rng(0), cell_rows=4)
    assert sorted(inputs.unlabeled[q.rows].tolist()) == list(range(1, 30))
    assert q.info["covering_radius"] == 0.0
    assert inputs.unlabeled[q.rows].tolist() == eager_kcenter(emb, inputs.unlabeled, inputs.labeled, 29)
