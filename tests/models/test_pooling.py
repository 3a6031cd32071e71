"""The linear pool of the classifier and the LLM (``oracle.prelabel: pooled``): hand-computed
cases, the share fit on the page's list, and properties over random rows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from alft.errors import ModelError
from alft.models.pooling import DEFAULT_SHARE, fit_share, list_positions, pool


def test_the_mixture_by_hand():
    a = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    b = np.array([[0.8, 0.2, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(pool(a, b, 0.25), [[0.575, 0.425, 0.0], [0.75, 0.0, 0.25]], atol=1e-12)
    np.testing.assert_allclose(pool(a, b, 0.0), a, atol=1e-12)
    np.testing.assert_allclose(pool(a, b, 1.0), b, atol=1e-12)
    # a class one source rules out stays possible through the other (a product would lose it)
    assert pool(a, b, 0.5)[1, 2] == pytest.approx(0.5)


def test_list_positions_follow_the_pages_list():
    p = np.array([
        [0.50, 0.30, 0.15, 0.05, 0.00],  # listed: 0, 1, 2, 3 (0.05 is at the threshold)
        [0.20, 0.20, 0.20, 0.20, 0.20],  # a tie: label order
        [0.96, 0.01, 0.01, 0.01, 0.01],  # only label 0 reaches 5 %
    ])
    assert list_positions(p, np.array([2, 3, 4]), list_size=9, min_p=0.05).tolist() == [3, 4, 11]
    assert list_positions(p, np.array([3, 1, 0]), list_size=2, min_p=0.05).tolist() == [4, 2, 1]  # beyond 2: absent


def test_fit_takes_the_share_that_lists_the_human_label_highest():
    # three classes; the classifier has never seen class 2 (p = 0), the LLM knows it but
    # ranks class 0 second otherwise. Rows 0-19: truth 2; rows 20-59: truth 0.
    y = np.array([2] * 20 + [0] * 40)
    clf = np.tile([0.6, 0.4, 0.0], (60, 1))
    llm = np.tile([0.3, 0.1, 0.6], (60, 1))
    share, info = fit_share(clf, llm, y, list_size=9, min_p=0.05)
    # λ = 0: truth 2 absent (11) for 20 rows, 1 for 40 -> 4.33; λ = 0.1: [0.57, 0.37, 0.06]:
    # truth 2 third -> (20*3 + 40) / 60 = 1.67; larger λ cannot list 2 above 3rd before 0.5
    # ([0.45, 0.25, 0.30]: 2nd -> 1.33), where 0 stays 1st; at 0.7 ([0.39, 0.19, 0.42]) 2 is
    # 1st and 0 2nd: (20 + 80) / 60 = 1.67. Best: 0.5.
    assert share == 0.5 and info == {"fit_rows": 60, "fitted": 1, "fit_list_position": pytest.approx(80 / 60, abs=1e-4)}
    assert fit_share(clf[:5], llm[:5], y[:5], list_size=9, min_p=0.05) == (DEFAULT_SHARE, {"fit_rows": 5, "fitted": 0})


def test_ties_go_to_the_classifier():
    y = np.zeros(30, dtype=np.int64)
    same = np.tile([0.9, 0.1], (30, 1))
    assert fit_share(same, same, y, list_size=9, min_p=0.05)[0] == 0.0


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (np.array([[0.5, np.nan]]), np.array([[0.5, 0.5]]), "pooled classifier: 1 rows hold a NaN, infinite or negative"),
        (np.array([[0.5, 0.5]]), np.array([[0.5, 0.5, 0.0]]), r"disagree in shape: \(1, 2\) vs \(1, 3\)"),
        (np.array([0.5, 0.5]), np.array([[0.5, 0.5]]), r"must be \[n, C\], got shape \(2,\)"),
        (np.array([[0.0, 0.0]]), np.array([[0.0, 0.0]]), "pooled row 0 has no probability mass"),
    ],
)
def test_bad_rows_are_refused_with_where_they_are(a, b, message):
    with pytest.raises(ModelError, match=message):
        pool(a, b)


def test_a_share_outside_0_1_is_refused():
    with pytest.raises(ModelError, match=r"share of the pool must be in \[0, 1\], got 1.5"):
        pool(np.ones((1, 2)) / 2, np.ones((1, 2)) / 2, 1.5)


rows = st.integers(1, 6).flatmap(
    lambda n: st.tuples(
        arrays(np.float64, (n, 5), elements=st.floats(0.001, 1.0)),
        arrays(np.float64, (n, 5), elements=st.floats(0.001, 1.0)),
    )
)


@settings(max_examples=60, deadline=None)
@given(rows, st.sampled_from([0.0, 0.1, 0.5, 1.0]))
def test_pooled_rows_are_distributions_between_their_sources(ab, share):
    a, b = (x / x.sum(axis=1, keepdims=True) for x in ab)
    p = pool(a, b, share)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    assert (p >= np.minimum(a, b) - 1e-12).all() and (p <= np.maximum(a, b) + 1e-12).all()
