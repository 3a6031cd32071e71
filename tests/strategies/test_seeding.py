"""Lazy D^2 sampling (``strategies.seeding``): its draws follow the k-means++ distribution
exactly (checked against enumeration), across its block tree and its update paths."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from strategies import seeding
from strategies.base import InvalidInputError
from strategies.seeding import d2_seeding

POINTS = np.array([[0, 0], [1, 0], [0, 2], [3, 3], [3, 4], [-2, 1], [5, 0]], dtype=np.float64)


def sq_dists_of(x: np.ndarray):
    def sq(rows, centres):
        return ((x[rows][:, None, :] - x[centres][None, :, :]) ** 2).sum(axis=2)  # [r, c]

    return sq


def exact_pairs(x: np.ndarray, first: int) -> dict[tuple[int, int], float]:
    """P(second, third) of k-means++ from ``first``, by enumeration."""
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)  # [m, m]
    out = {}
    d1 = d[first].copy()
    for j in range(len(x)):
        if d1[j] == 0:
            continue
        d2 = np.minimum(d1, d[j])
        for q in range(len(x)):
            if d2[q] > 0:
                out[(j, q)] = d1[j] / d1.sum() * d2[q] / d2.sum()
    return out


@pytest.mark.parametrize(("block", "max_reject"), [(1024, 8), (2, 8), (3, 1)])
def test_draws_follow_the_d2_distribution(monkeypatch, block, max_reject):
    """Block 2 and 3 make the proposal tree walk several blocks; max_reject 1 forces a full
    update after every rejection. 20,000 draws: each pair's frequency within 4.5 standard
    errors of its enumerated probability (about 1e-5 per pair of a false alarm)."""
    monkeypatch.setattr(seeding, "SUM_BLOCK", block)
    want = exact_pairs(POINTS, 0)
    n = 20_000
    counts: dict[tuple[int, int], int] = {}
    work = {"rejected": 0, "row_updates": 0, "full_updates": 0}
    rng = np.random.default_rng(7)
    for _ in range(n):
        rows, stats = d2_seeding(0, sq_dists_of(POINTS), len(POINTS), 3, rng, max_reject=max_reject)
        assert rows[0] == 0 and len(set(rows.tolist())) == 3
        counts[(int(rows[1]), int(rows[2]))] = counts.get((int(rows[1]), int(rows[2])), 0) + 1
        for key in work:
            work[key] += stats[key]
    assert set(counts) <= set(want)
    for pair, p in want.items():
        se = np.sqrt(p * (1 - p) / n)
        assert abs(counts.get(pair, 0) / n - p) <= 4.5 * se + 1e-12, (pair, counts.get(pair, 0) / n, p)
    # the stale bounds were really used: rows were proposed on old distances, updated, rejected
    assert work["row_updates"] > 0 and work["rejected"] > 0
    assert (work["full_updates"] > 0) == (max_reject == 1)


def test_a_row_up_to_date_is_always_accepted_and_the_second_pick_is_exact():
    # with one centre every bound is exact: no row update, no rejection
    rows, stats = d2_seeding(0, sq_dists_of(POINTS), len(POINTS), 2, np.random.default_rng(0))
    assert stats["rejected"] == 0 and stats["row_updates"] == 0 and stats["proposals"] == 1


def test_coinciding_rows_fall_back_to_uniform_unique_draws():
    x = np.zeros((6, 3))  # every distance is 0: D^2 has nothing to go on
    rows, _ = d2_seeding(2, sq_dists_of(x), 6, 6, np.random.default_rng(0))
    assert rows[0] == 2 and sorted(rows.tolist()) == list(range(6))
    rows, _ = d2_seeding(0, sq_dists_of(x), 6, 10, np.random.default_rng(0))
    assert len(rows) == 6  # never more than m


def test_distances_that_overflow_are_refused():
    def huge(rows, centres):
        return np.full((len(rows), len(centres)), 1e308)

    with pytest.raises(InvalidInputError, match=r"gradient distances overflow \(sum inf\)"):
        d2_seeding(0, huge, 4, 3, np.random.default_rng(0))


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(2, 40), st.integers(1, 4)), elements=st.floats(-5, 5)),
    st.integers(1, 50),
    st.integers(0, 2**32 - 1),
)
def test_any_input_gives_k_unique_rows_in_range(x, k, seed):
    m = x.shape[0]
    rows, stats = d2_seeding(m - 1, sq_dists_of(x), m, k, np.random.default_rng(seed), max_reject=2)
    assert rows[0] == m - 1 and len(rows) == min(k, m)
    assert len(set(rows.tolist())) == len(rows) and rows.min() >= 0 and rows.max() < m
    assert stats["proposals"] >= stats["rejected"]


def test_it_matches_the_eager_loop_in_distribution_on_clusters():
    """Coverage of 5 well-separated clusters by 5 draws: eager D^2 (recomputing every
    distance each pick) and the lazy sampler agree within sampling noise."""
    rng = np.random.default_rng(3)
    x = np.repeat(np.eye(5) * 4, 8, axis=0) + 0.3 * rng.normal(size=(40, 5))
    cluster = np.repeat(np.arange(5), 8)

    def eager(r: np.random.Generator) -> list[int]:
        chosen = [0]
        d = ((x - x[0]) ** 2).sum(axis=1)
        for _ in range(4):
            nxt = int(r.choice(40, p=d / d.sum()))
            chosen.append(nxt)
            d = np.minimum(d, ((x - x[nxt]) ** 2).sum(axis=1))
        return chosen

    n = 3000
    cover = {"eager": 0, "lazy": 0}
    r1, r2 = np.random.default_rng(1), np.random.default_rng(2)
    for _ in range(n):
        cover["eager"] += len(set(cluster[eager(r1)])) == 5
        rows, _ = d2_seeding(0, sq_dists_of(x), 40, 5, r2)
        cover["lazy"] += len(set(cluster[rows])) == 5
    p = cover["eager"] / n
    assert abs(cover["lazy"] / n - p) <= 4.5 * np.sqrt(2 * p * (1 - p) / n) + 1e-9, cover


def test_pairs_enumeration_sums_to_one():
    assert sum(exact_pairs(POINTS, 0).values()) == pytest.approx(1.0)
    assert all(a != b for a, b in exact_pairs(POINTS, 0))
