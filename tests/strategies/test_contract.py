"""One contract, run over every registered strategy."""

from __future__ import annotations

import numpy as np
import pytest

from strategies import (
    InvalidInputError,
    MissingInputError,
    PoolExhaustedError,
    QueryInputs,
    available,
    get_strategy,
)
from tests.strategies.conftest import make_inputs

NAMES = [s.name for s in available()]


def test_the_registry_has_the_foundation_catalogue():
    assert {"random", "least_confidence", "margin", "entropy", "kmeans"} <= set(NAMES)
    assert {"token_entropy", "sequence_nll", "ifd"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("k", [1, 7, 25])
def test_returns_k_unique_unlabeled_pool_ids(name, k, inputs):
    q = get_strategy(name).query(inputs, k, np.random.default_rng(1))
    assert q.pool_ids.shape == (k,)
    assert np.unique(q.pool_ids).size == k
    assert np.isin(q.pool_ids, inputs.unlabeled).all()
    assert not np.isin(q.pool_ids, inputs.labeled).any()
    assert q.scores.shape == (k,)


@pytest.mark.parametrize("name", NAMES)
def test_pool_id_space_not_row_positions(name):
    # Candidates are pool ids 100..139: a strategy returning row positions (0..39) fails here.
    base = make_inputs(n_pool=140, n_labeled=0)
    inputs = QueryInputs(
        unlabeled=np.arange(100, 140),
        labeled=np.arange(0, 100),
        probs=base.probs[:40],
        embeddings=base.embeddings,
        prob_samples=base.prob_samples[:40],
        features=base.features[:40],
        head=base.head,
        history=base.history,
        generation=base.generation.take(np.arange(40)),
    )
    q = get_strategy(name).query(inputs, 10, np.random.default_rng(0))
    assert q.pool_ids.min() >= 100


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_for_a_seed(name, inputs):
    s = get_strategy(name)
    a = s.query(inputs, 12, np.random.default_rng(42)).pool_ids
    b = s.query(inputs, 12, np.random.default_rng(42)).pool_ids
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", NAMES)
def test_takes_the_whole_remaining_pool(name, inputs):
    q = get_strategy(name).query(inputs, inputs.n_candidates, np.random.default_rng(0))
    assert set(q.pool_ids.tolist()) == set(inputs.unlabeled.tolist())


@pytest.mark.parametrize("name", NAMES)
def test_pool_exhausted_names_both_numbers(name, inputs):
    with pytest.raises(PoolExhaustedError, match=r"50 available / 51 requested") as err:
        get_strategy(name).query(inputs, 51, np.random.default_rng(0))
    assert (err.value.available, err.value.requested) == (50, 51)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("k", [0, -3])
def test_rejects_non_positive_k(name, k, inputs):
    with pytest.raises(InvalidInputError, match="positive"):
        get_strategy(name).query(inputs, k, np.random.default_rng(0))


@pytest.mark.parametrize("name", [s.name for s in available() if "probs" in s.needs])
def test_nan_probabilities_are_refused(name, inputs):
    probs = inputs.probs.copy()
    probs[3, 1] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        QueryInputs(unlabeled=inputs.unlabeled, labeled=inputs.labeled, probs=probs)


@pytest.mark.parametrize("name", [s.name for s in available() if s.needs])
def test_missing_inputs_are_named(name, inputs):
    bare = QueryInputs(unlabeled=inputs.unlabeled, labeled=inputs.labeled)
    with pytest.raises(MissingInputError, match=f"'{name}' needs"):
        get_strategy(name).query(bare, 5, np.random.default_rng(0))


@pytest.mark.parametrize("name", [s.name for s in available() if s.needs])
def test_scores_of_wrong_shape_are_refused(name, inputs):
    s = get_strategy(name)
    with pytest.raises(InvalidInputError, match="scores must be"):
        s.select(np.zeros(3), inputs, 5, np.random.default_rng(0))


def test_wrongly_shaped_inputs_are_refused(inputs):
    with pytest.raises(InvalidInputError, match=r"probs must be \[m=50, C\]"):
        QueryInputs(unlabeled=inputs.unlabeled, probs=inputs.probs[:10])
    with pytest.raises(InvalidInputError, match="1-D"):
        QueryInputs(unlabeled=inputs.unlabeled.reshape(5, 10))
    with pytest.raises(InvalidInputError, match="integer"):
        QueryInputs(unlabeled=np.array([0.5, 1.5]))
    with pytest.raises(InvalidInputError, match="duplicate"):
        QueryInputs(unlabeled=np.array([1, 1, 2]))
    with pytest.raises(InvalidInputError, match="both labeled and unlabeled"):
        QueryInputs(unlabeled=np.array([1, 2]), labeled=np.array([2, 3]))
    with pytest.raises(InvalidInputError, match="sum to 1"):
        QueryInputs(unlabeled=np.array([0, 1]), probs=np.array([[0.2, 0.2], [0.5, 0.5]]))
    with pytest.raises(InvalidInputError, match="embeddings has 5 rows"):
        QueryInputs(unlabeled=np.arange(10), embeddings=np.zeros((5, 3), dtype=np.float32))


@pytest.mark.parametrize("field", ["embeddings", "features", "prob_samples"])
def test_non_finite_model_inputs_are_refused_with_their_position(field, inputs):
    import dataclasses

    arr = np.array(getattr(inputs, field), dtype=np.float64 if field != "embeddings" else np.float32)
    arr[7, 0] = np.inf if field == "embeddings" else np.nan
    where = "pool id 7" if field == "embeddings" else ("row 7" if field == "features" else "")
    with pytest.raises(InvalidInputError, match=f"{field} hold.* NaN or inf.*{where}"):
        dataclasses.replace(inputs, **{field: arr})


@pytest.mark.parametrize("part", ["mean_entropy", "mean_nll", "ifd"])
def test_generation_statistics_are_checked_with_their_row(part, inputs):
    import dataclasses

    gen = inputs.generation
    arr = getattr(gen, part).copy()
    arr[4] = np.nan
    with pytest.raises(InvalidInputError, match=f"generation.{part} holds NaN or inf.*row 4"):
        dataclasses.replace(gen, **{part: arr})
    with pytest.raises(InvalidInputError, match=f"generation.{part} has 49 rows|mean_entropy has 49"):
        dataclasses.replace(gen, **{part: getattr(gen, part)[:49]})
    with pytest.raises(InvalidInputError, match=r"generation statistics must be \[m=50\], got 10 rows"):
        dataclasses.replace(inputs, generation=gen.take(np.arange(10)))


def test_non_finite_check_reads_blocks_not_a_copy():
    from strategies.base import _first_non_finite_row

    a = np.zeros((1000, 4), dtype=np.float32)
    assert _first_non_finite_row(a, block_bytes=64) is None
    a[777, 2] = np.nan
    assert _first_non_finite_row(a, block_bytes=64) == 777  # 4 rows per block
    assert _first_non_finite_row(a) == 777
