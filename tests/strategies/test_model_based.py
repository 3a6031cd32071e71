"""BALD, EGL, BADGE and EER: hand-computed cases, reference implementations, properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from strategies import (
    InvalidInputError,
    LinearHead,
    QueryInputs,
    StrategyOptionError,
    get_spec,
    get_strategy,
)
from strategies import error_reduction, model_change
from strategies.error_reduction import expected_error_reduction
from strategies.model_change import (
    egl,
    gradient_embedding,
    gradient_sq_dists,
    kmeanspp_exact,
    sketch_gradients,
)
from strategies.uncertainty import bald, entropy


def _hb(q: float) -> float:
    """Binary entropy in nats."""
    return -(q * math.log(q) + (1 - q) * math.log(1 - q))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _head_inputs(features, weight, bias=None, unlabeled=None, classes=None, probs=None):
    weight = np.asarray(weight, dtype=np.float64)
    k = weight.shape[0]
    return QueryInputs(
        unlabeled=np.arange(len(features)) if unlabeled is None else np.asarray(unlabeled),
        features=np.asarray(features, dtype=np.float64),
        head=LinearHead(
            weight=weight,
            bias=np.zeros(k) if bias is None else np.asarray(bias, dtype=np.float64),
            classes=np.arange(k) if classes is None else np.asarray(classes),
        ),
        probs=probs,
    )


# ---------------------------------------------------------------------------------- BALD


def test_bald_by_hand_on_two_candidates():
    # A: two confident passes that disagree; B: two identical 50/50 passes.
    samples = np.array(
        [
            [[0.9, 0.1], [0.1, 0.9]],  # [C, K] for A
            [[0.5, 0.5], [0.5, 0.5]],  # for B
        ]
    )
    inputs = QueryInputs(unlabeled=np.array([7, 9]), prob_samples=samples)
    # A: H[(0.5, 0.5)] - H[(0.9, 0.1)] = 0.6931472 - 0.3250830; B: ln 2 - ln 2.
    np.testing.assert_allclose(bald(inputs), [0.3680642, 0.0], atol=1e-7)
    # Both have the same mean prediction, so entropy cannot tell them apart; BALD can.
    q = get_strategy("bald").query(inputs, 1, np.random.default_rng(0))
    assert q.pool_ids.tolist() == [7]
    assert q.scores[0] == pytest.approx(0.3680642, abs=1e-7)


def test_bald_handles_zero_probabilities():
    samples = np.array([[[1.0, 0.0], [0.0, 1.0]]])  # [1, C=2, K=2]
    inputs = QueryInputs(unlabeled=np.array([0]), prob_samples=samples)
    np.testing.assert_allclose(bald(inputs), [np.log(2)])


def test_bald_needs_at_least_one_sample():
    inputs = QueryInputs(unlabeled=np.array([0]), prob_samples=np.zeros((1, 2, 0)))
    with pytest.raises(InvalidInputError, match="at least 1 MC sample"):
        bald(inputs)


@st.composite
def sample_tensors(draw):
    m, c, k = draw(st.integers(1, 12)), draw(st.integers(2, 5)), draw(st.integers(1, 6))
    raw = draw(arrays(np.float64, (m, c, k), elements=st.floats(0.0, 10.0))) + 1e-9
    return raw / raw.sum(axis=1, keepdims=True)


@settings(max_examples=50, deadline=None)
@given(sample_tensors())
def test_bald_lies_between_zero_and_the_predictive_entropy(samples):
    inputs = QueryInputs(
        unlabeled=np.arange(samples.shape[0]), prob_samples=samples, probs=samples.mean(axis=2)
    )
    mi = bald(inputs)
    assert (mi >= 0).all()
    assert (mi <= entropy(inputs) + 1e-9).all()
    # identical passes carry no disagreement
    same = np.repeat(samples[:, :, :1], samples.shape[2], axis=2)
    np.testing.assert_allclose(
        bald(QueryInputs(unlabeled=inputs.unlabeled, prob_samples=same)), 0.0, atol=1e-9
    )


# ----------------------------------------------------------------------------------- EGL


def test_egl_by_hand_for_two_classes():
    # Row 0: logits (ln 4, 0) -> p = (0.8, 0.2), ||h||^2 + 1 = 2:
    #   E||g|| = (0.8 * 0.2 * sqrt 2 + 0.2 * 0.8 * sqrt 2) * sqrt 2 = 0.64.
    # Row 1: logits (0, 0) -> p = (0.5, 0.5): (0.5 * 0.5 * sqrt 2 * 2) * sqrt 2 = 1.0.
    inputs = _head_inputs([[1.0, 0.0], [0.0, 1.0]], [[np.log(4), 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(egl(inputs), [0.64, 1.0])
    q = get_strategy("egl").query(inputs, 1, np.random.default_rng(0))
    assert q.pool_ids.tolist() == [1]


def _egl_brute_force(inputs: QueryInputs) -> np.ndarray:
    """Builds every [k, h + 1] gradient explicitly."""
    feats = inputs.features
    logits = inputs.head.logits(feats)
    out = []
    for z, hx in zip(logits, feats):
        p = np.exp(z - z.max())
        p /= p.sum()
        aug = np.append(hx, 1.0)
        norms = [np.linalg.norm(np.outer(p - np.eye(len(p))[y], aug)) for y in range(len(p))]
        out.append(float(np.dot(p, norms)))
    return np.asarray(out)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 10), st.integers(1, 5), st.integers(1, 6), st.integers(0, 10_000))
def test_egl_closed_form_equals_explicit_gradients(m, k, h, seed):
    rng = np.random.default_rng(seed)
    weight, bias = 2.0 * rng.normal(size=(k, h)), rng.normal(size=k)
    inputs = _head_inputs(rng.normal(size=(m, h)), weight, bias)
    np.testing.assert_allclose(egl(inputs), _egl_brute_force(inputs), rtol=1e-9, atol=1e-12)


def test_egl_gradient_formula_matches_finite_differences():
    # (p - e_y) h^T is the gradient of -log p_y w.r.t. W: check it numerically once.
    rng = np.random.default_rng(3)
    w, b, hx, y = rng.normal(size=(3, 4)), rng.normal(size=3), rng.normal(size=4), 2

    def loss(w_):
        z = w_ @ hx + b
        return -(z[y] - np.log(np.exp(z).sum()))

    numeric = np.zeros_like(w)
    for idx in np.ndindex(*w.shape):
        step = np.zeros_like(w)
        step[idx] = 1e-6
        numeric[idx] = (loss(w + step) - loss(w - step)) / 2e-6
    z = w @ hx + b
    p = np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose(numeric, np.outer(p - np.eye(3)[y], hx), atol=1e-6)


def test_egl_uses_the_heads_classes_not_probs():
    # The head knows 2 of 3 labels; probs (3 columns) say something else entirely.
    probs = np.array([[0.98, 0.01, 0.01], [0.01, 0.01, 0.98]])
    inputs = _head_inputs(
        [[1.0, 0.0], [0.0, 1.0]], [[np.log(4), 0.0], [0.0, 0.0]], classes=[0, 2], probs=probs
    )
    np.testing.assert_allclose(egl(inputs), [0.64, 1.0])


def test_a_single_class_head_has_no_gradient():
    inputs = _head_inputs(np.ones((3, 2)), [[1.0, 2.0]])
    np.testing.assert_array_equal(egl(inputs), 0.0)


def test_overflowing_logits_are_refused():
    inputs = _head_inputs([[1e300, 1e300]], [[1e300, 1e300], [0.0, 0.0]])
    with pytest.raises(InvalidInputError, match="row 0"):
        egl(inputs)


# --------------------------------------------------------------------------------- BADGE


def test_pairwise_distances_via_the_identity_equal_explicit_outer_products():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(9, 4)), rng.normal(size=(9, 7))
    g = np.einsum("ik,ih->ikh", a, b).reshape(9, -1)  # [m, k*h], fine for m = 9
    explicit = ((g[:, None, :] - g[None, :, :]) ** 2).sum(axis=2)
    np.testing.assert_allclose(gradient_sq_dists(a, b, np.arange(9)), explicit, atol=1e-10)
    np.testing.assert_allclose(gradient_sq_dists(a, b, [4, 1]), explicit[:, [4, 1]], atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 8), st.integers(1, 4), st.integers(1, 5), st.integers(0, 10_000))
def test_identity_distances_property(m, k, h, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(m, k)), rng.normal(size=(m, h))
    g = np.einsum("ik,ih->ikh", a, b).reshape(m, -1)
    explicit = ((g[:, None, :] - g[None, :, :]) ** 2).sum(axis=2)
    got = gradient_sq_dists(a, b, np.arange(m))
    np.testing.assert_allclose(got, explicit, atol=1e-9 * (1 + explicit.max()))
    assert (got >= 0).all()


def test_gradient_embedding_is_p_minus_onehot_of_the_prediction():
    inputs = _head_inputs([[1.0, 0.0], [0.0, 1.0]], [[np.log(4), 0.0], [0.0, 0.0]])
    a, b = gradient_embedding(inputs)
    np.testing.assert_allclose(a, [[-0.2, 0.2], [-0.5, 0.5]])  # argmax ties -> class 0
    np.testing.assert_array_equal(b, inputs.features)


def _badge_line():
    # The head's logit for class 0 is the third feature, ln 1.5 everywhere: p = (0.6, 0.4)
    # and a = (-0.4, 0.4) for every row, so ||g|| and distances follow the features.
    t = np.log(1.5)
    feats = [[4.0, 0, t], [3.99, 0, t], [3.98, 0, t], [0, 3.0, t], [3.97, 0, t]]
    return _head_inputs(feats, [[0, 0, 1.0], [0, 0, 0]], unlabeled=[10, 11, 12, 13, 14])


def test_badge_takes_the_largest_gradient_then_the_far_point():
    # Row 0 has the largest gradient. D^2 to it: row 3 ~ 0.32 * 25, rows 1, 2, 4 <= 0.32 *
    # 0.0009, so row 3 is drawn with probability > 0.9999.
    inputs = _badge_line()
    for seed in range(10):
        for sketch in (None, 64):
            badge = get_strategy("badge", sketch_dim=sketch)
            q = badge.query(inputs, 2, np.random.default_rng(seed))
            assert q.pool_ids.tolist() == [10, 13]
            assert np.isnan(q.scores).all()
            assert q.info["badge_path"] == ("exact" if sketch is None else "sketch")


def _four_clusters(seed: int):
    # Four tight clusters on orthogonal axes; the head predicts a different class on each
    # (p ~ 0.6 for it), so gradients cluster too.
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), 15)
    feats = 3.0 * np.eye(12)[labels] + 0.05 * rng.normal(size=(60, 12))
    return _head_inputs(feats, 0.5 * np.eye(4, 12)), labels


def test_badge_exact_and_sketched_cover_the_four_clusters_almost_always():
    # D^2 sampling can take a second row of a cluster: on these clusters, by enumeration of
    # every 4-row sequence, with probability 1.4 % on exact distances, ~2.5 % on a 32-wide
    # sketch (it distorts the small within-cluster distances). Over 200 draws each, at most
    # 14 and 24 misses: binomial tails of 1e-7 at those rates (6e-7 at 4 % for the sketch),
    # while a broken sampler fails (uniform draws miss a cluster 90 % of the time).
    inputs, labels = _four_clusters(0)
    misses = {None: 0, 32: 0}
    for seed in range(200):
        for dim in misses:
            q = get_strategy("badge", sketch_dim=dim).query(inputs, 4, np.random.default_rng(seed))
            misses[dim] += set(labels[q.pool_ids]) != {0, 1, 2, 3}
    assert misses[None] <= 14 and misses[32] <= 24, misses


def test_the_sketch_preserves_squared_distances_roughly():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 5)), rng.normal(size=(40, 30))
    exact = gradient_sq_dists(a, b, np.arange(40))
    sk = sketch_gradients(a, b, 1024, np.random.default_rng(1)).astype(np.float64)
    approx = ((sk[:, None, :] - sk[None, :, :]) ** 2).sum(axis=2)
    iu = np.triu_indices(40, 1)
    rel = np.abs(approx[iu] - exact[iu]) / exact[iu]
    assert np.median(rel) < 0.15
    assert np.corrcoef(approx[iu], exact[iu])[0, 1] > 0.95


def test_the_sketch_is_built_in_chunks(monkeypatch):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(50, 6))
    whole = sketch_gradients(a, b, 16, np.random.default_rng(2))
    monkeypatch.setattr(model_change, "_CHUNK_ELEMS", 16 * 7)  # 7 rows per chunk
    chunked = sketch_gradients(a, b, 16, np.random.default_rng(2))
    np.testing.assert_allclose(chunked, whole, rtol=1e-6)


def test_badge_saturated_head_still_returns_unique_rows():
    # Every p is one-hot in float64, so every gradient is exactly 0: D^2 sampling has nothing
    # to go on and falls back to a uniform draw.
    inputs = _head_inputs(np.ones((8, 2)), [[500.0, 500.0], [0.0, 0.0]])
    a, _ = gradient_embedding(inputs)
    assert (a == 0).all()
    rows = kmeanspp_exact(a, inputs.features, 8, np.random.default_rng(0))
    assert sorted(rows.tolist()) == list(range(8))


def test_badge_auto_is_the_exact_path_at_every_size():
    # benchmarks/badge_auto.py: with lazy seeding the sketch saves no time end to end, so
    # "auto" (the default) draws exactly; the same picks as sketch_dim=None for the same rng,
    # also where the rule before this change took a sketch (k * m * width > 2**30)
    rng = np.random.default_rng(5)
    m, h, c = 12_000, 96, 10
    feats = rng.normal(size=(m, h))
    inputs = QueryInputs(
        unlabeled=np.arange(m), labeled=np.array([], dtype=np.int64), features=feats,
        head=LinearHead(weight=rng.normal(size=(c, h)) * 0.3, bias=np.zeros(c), classes=np.arange(c)),
        probs=None,
    )
    auto = get_strategy("badge").query(inputs, 1000, np.random.default_rng(1))
    exact = get_strategy("badge", sketch_dim=None).query(inputs, 1000, np.random.default_rng(1))
    assert 1000 * m * (h + c) > 2**30
    assert auto.info == exact.info == {"badge_path": "exact"}
    assert auto.pool_ids.tolist() == exact.pool_ids.tolist()
    sketched = get_strategy("badge", sketch_dim=64).query(inputs, 1000, np.random.default_rng(1))
    assert sketched.info == {"badge_path": "sketch", "sketch_dim": 64}


@pytest.mark.parametrize("bad", [0, -4, 2.5, "big", True])
def test_badge_rejects_bad_sketch_dims(bad):
    with pytest.raises(StrategyOptionError, match="sketch_dim"):
        get_strategy("badge", sketch_dim=bad)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 30), st.integers(2, 4), st.integers(0, 10_000), st.data())
def test_badge_first_pick_is_the_largest_gradient(m, k_classes, seed, data):
    rng = np.random.default_rng(seed)
    inputs = _head_inputs(rng.normal(size=(m, 5)), rng.normal(size=(k_classes, 5)))
    a, b = gradient_embedding(inputs)
    norms = (a * a).sum(axis=1) * (b * b).sum(axis=1)
    k = data.draw(st.integers(1, m))
    q = get_strategy("badge").query(inputs, k, np.random.default_rng(seed))
    assert norms[q.pool_ids[0]] == norms.max()
    assert len(set(q.pool_ids.tolist())) == k


# ----------------------------------------------------------------------------------- EER


def _eer_toy():
    # Head W = 0, b = 0: p = (0.5, 0.5) everywhere. Five points at (3, 0), one at (0, 3).
    feats = [[3.0, 0.0]] * 5 + [[0.0, 3.0]]
    return _head_inputs(feats, np.zeros((2, 2)), unlabeled=np.arange(20, 26))


def test_eer_by_hand_prefers_the_candidate_that_moves_the_cluster():
    # Candidate in the cluster, label y = 0: delta = (-0.5, 0.5); a cluster point moves by
    # <h_x, h_s> + 1 = 10 -> logits (5, -5), entropy H(sigmoid(10)); the lone point by 1 ->
    # logits (0.5, -0.5), H(sigmoid(1)); y = 1 is the mirror image. The lone candidate moves
    # itself by 10 and the cluster by 1.
    inputs = _eer_toy()
    cluster = math.log(2) - (5 * _hb(_sigmoid(10)) + _hb(_sigmoid(1))) / 6
    lone = math.log(2) - (_hb(_sigmoid(10)) + 5 * _hb(_sigmoid(1))) / 6
    assert cluster == pytest.approx(0.5956967, abs=1e-6)
    assert lone == pytest.approx(0.2078947, abs=1e-6)
    scores, n_short, n_sample = expected_error_reduction(inputs, np.random.default_rng(0))
    np.testing.assert_allclose(scores, [cluster] * 5 + [lone])
    assert (n_short, n_sample) == (6, 6)
    q = get_strategy("eer").query(inputs, 1, np.random.default_rng(0))
    assert q.pool_ids[0] in range(20, 25)
    assert q.scores[0] == pytest.approx(cluster)
    assert q.info == {"shortlist": 6, "sample": 6}


def test_eer_zero_one_loss_by_hand():
    inputs = _eer_toy()
    cluster = 0.5 - (5 * (1 - _sigmoid(10)) + (1 - _sigmoid(1))) / 6
    lone = 0.5 - ((1 - _sigmoid(10)) + 5 * (1 - _sigmoid(1))) / 6
    scores, _, _ = expected_error_reduction(inputs, np.random.default_rng(0), loss="zero_one")
    np.testing.assert_allclose(scores, [cluster] * 5 + [lone])
    assert cluster == pytest.approx(0.4551386, abs=1e-6)


def _eer_reference(inputs: QueryInputs, lr: float, loss: str) -> np.ndarray:
    """Updates W and b explicitly for every (candidate, label); the whole pool is the sample."""
    head, feats = inputs.head, inputs.features

    def probs(w, b):
        z = feats @ w.T + b
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def pool_loss(p):
        if loss == "zero_one":
            return float((1 - p.max(axis=1)).mean())
        return float(-(p * np.log(p)).sum(axis=1).mean())

    p0 = probs(head.weight, head.bias)
    out = []
    for x in range(len(feats)):
        expected = 0.0
        for y in range(p0.shape[1]):
            delta = p0[x] - np.eye(p0.shape[1])[y]
            w = head.weight - lr * np.outer(delta, feats[x])
            b = head.bias - lr * delta
            expected += p0[x, y] * pool_loss(probs(w, b))
        out.append(pool_loss(p0) - expected)
    return np.asarray(out)


@pytest.mark.parametrize("loss", ["log", "zero_one"])
@pytest.mark.parametrize("lr", [0.1, 1.0])
def test_eer_matches_an_explicit_head_update(loss, lr):
    rng = np.random.default_rng(5)
    inputs = _head_inputs(rng.normal(size=(12, 4)), rng.normal(size=(3, 4)), rng.normal(size=3))
    scores, _, _ = expected_error_reduction(inputs, np.random.default_rng(0), lr=lr, loss=loss)
    np.testing.assert_allclose(scores, _eer_reference(inputs, lr, loss), rtol=1e-9, atol=1e-12)


def test_eer_chunking_does_not_change_scores(monkeypatch):
    rng = np.random.default_rng(6)
    inputs = _head_inputs(rng.normal(size=(30, 4)), rng.normal(size=(3, 4)))
    whole, _, _ = expected_error_reduction(inputs, np.random.default_rng(0))
    monkeypatch.setattr(error_reduction, "_CHUNK_ELEMS", 30 * 3 * 4)  # 4 candidates a chunk
    chunked, _, _ = expected_error_reduction(inputs, np.random.default_rng(0))
    np.testing.assert_allclose(chunked, whole)


def test_eer_outside_the_shortlist_ranks_below_it_by_entropy():
    rng = np.random.default_rng(7)
    inputs = _head_inputs(rng.normal(size=(10, 3)), rng.normal(size=(3, 3)))
    scores, n_short, _ = expected_error_reduction(inputs, np.random.default_rng(0), shortlist=3)
    assert n_short == 3
    p = np.exp(inputs.head.logits(inputs.features))
    p /= p.sum(axis=1, keepdims=True)
    ent = -(p * np.log(p)).sum(axis=1)
    short = np.argsort(-ent)[:3]
    rest = np.argsort(-ent)[3:]
    assert np.isfinite(scores).all()
    assert scores[rest].max() == pytest.approx(scores[short].min() - 1.0)
    assert (np.diff(scores[rest]) <= 0).all()  # rest listed by falling entropy


def test_eer_draws_its_loss_sample_with_the_rng():
    rng = np.random.default_rng(8)
    inputs = _head_inputs(rng.normal(size=(40, 3)), rng.normal(size=(3, 3)))
    s = get_strategy("eer", sample=10)
    a = s.query(inputs, 3, np.random.default_rng(1))
    b = s.query(inputs, 3, np.random.default_rng(1))
    np.testing.assert_array_equal(a.pool_ids, b.pool_ids)
    assert a.info == {"shortlist": 40, "sample": 10}
    others = {tuple(s.query(inputs, 3, np.random.default_rng(i)).scores.round(9)) for i in range(5)}
    assert len(others) > 1  # different samples, different estimates


@pytest.mark.parametrize(
    "options, match",
    [
        ({"loss": "hinge"}, "loss must be one of"),
        ({"shortlist": 0}, "shortlist must be an integer >= 1"),
        ({"sample": 2.5}, "sample must be an integer >= 1"),
        ({"lr": 0.0}, "lr must be a finite number > 0"),
        ({"lr": float("nan")}, "lr must be a finite number > 0"),
    ],
)
def test_eer_options_are_checked(options, match):
    with pytest.raises(StrategyOptionError, match=match):
        get_strategy("eer", **options)


def test_model_based_needs_are_declared():
    assert get_spec("bald").needs == {"prob_samples"}
    for name in ("egl", "badge", "eer"):
        assert get_spec(name).needs == {"features", "head"}


def test_eer_shortlist_is_never_just_the_batch():
    """With a shortlist of k the batch would be entropy's top k; it holds at least 2k."""
    import numpy as np

    from strategies import get_strategy
    from tests.strategies.conftest import make_inputs

    inputs = make_inputs(n_pool=200, n_labeled=10)
    q = get_strategy("eer", shortlist=5).query(inputs, 20, np.random.default_rng(0))
    assert q.info["shortlist"] == 40
