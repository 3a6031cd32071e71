"""token_entropy, sequence_nll, ifd: hand-computed rankings, missing inputs, hybrids."""

from __future__ import annotations

import numpy as np
import pytest

from strategies import InvalidInputError, MissingInputError, QueryInputs, get_spec, get_strategy
from strategies.base import GenerationStats

# five candidate prompts (pool ids 10..14); by hand:
#   entropy ranks 12 > 10 > 14 > 13 > 11;  nll ranks 11 > 13 > 10 > 12 > 14;
#   ifd ranks 13 > 14 > 10 > 12 > 11
ENTROPY = np.array([1.5, 0.2, 2.9, 0.7, 1.1])
NLL = np.array([0.8, 3.0, 0.4, 1.6, 0.1])
IFD = np.array([0.55, 0.10, 0.30, 1.20, 0.95])


def gen_inputs(ifd: np.ndarray | None = IFD) -> QueryInputs:
    return QueryInputs(
        unlabeled=np.arange(10, 15),
        labeled=np.arange(10),
        generation=GenerationStats(mean_entropy=ENTROPY, mean_nll=NLL, ifd=ifd),
    )


@pytest.mark.parametrize(
    "name, expected, batch",
    [
        ("token_entropy", ENTROPY, [12, 10, 14]),
        ("sequence_nll", NLL, [11, 13, 10]),
        ("ifd", IFD, [13, 14, 10]),
    ],
)
def test_scores_are_the_statistics_and_the_batch_is_their_top_k(name, expected, batch):
    s = get_strategy(name)
    assert s.needs == {"generation"} == get_spec(name).needs
    inputs = gen_inputs()
    np.testing.assert_array_equal(s.score(inputs), expected)
    q = s.query(inputs, 3, np.random.default_rng(0))
    assert q.pool_ids.tolist() == batch
    np.testing.assert_array_equal(q.scores, expected[np.array(batch) - 10])


def test_ifd_without_candidates_says_which_column_is_missing():
    inputs = gen_inputs(ifd=None)
    with pytest.raises(MissingInputError, match=r"needs candidate responses \(data.candidate_field\)"):
        get_strategy("ifd").query(inputs, 2, np.random.default_rng(0))
    # the other two do not need candidates
    assert get_strategy("token_entropy").query(inputs, 2, np.random.default_rng(0)).pool_ids.tolist() == [12, 10]


def test_missing_generation_is_named():
    bare = QueryInputs(unlabeled=np.arange(5))
    for name in ("token_entropy", "sequence_nll", "ifd"):
        with pytest.raises(MissingInputError, match=f"'{name}' needs generation"):
            get_strategy(name).query(bare, 1, np.random.default_rng(0))


def test_statistics_are_validated():
    with pytest.raises(InvalidInputError, match=r"generation.mean_nll has 4 rows, generation.mean_entropy has 5"):
        GenerationStats(mean_entropy=ENTROPY, mean_nll=NLL[:4])
    with pytest.raises(InvalidInputError, match=r"generation.ifd holds NaN or inf \(first at row 2\)"):
        GenerationStats(mean_entropy=ENTROPY, mean_nll=NLL, ifd=np.array([1, 1, np.inf, 1, 1.0]))
    with pytest.raises(InvalidInputError, match="1-D"):
        GenerationStats(mean_entropy=ENTROPY[:, None], mean_nll=NLL)
    with pytest.raises(InvalidInputError, match=r"must be \[m=3\], got 5 rows"):
        QueryInputs(unlabeled=np.arange(3), generation=GenerationStats(ENTROPY, NLL))
    with pytest.raises(InvalidInputError, match="must be a GenerationStats"):
        QueryInputs(unlabeled=np.arange(5), generation={"mean_entropy": ENTROPY})  # type: ignore[arg-type]


def test_candidate_subsets_carry_their_rows_statistics():
    sub = gen_inputs().with_candidates(np.array([3, 0]))
    assert sub.unlabeled.tolist() == [13, 10]
    np.testing.assert_array_equal(sub.generation.mean_entropy, [0.7, 1.5])
    np.testing.assert_array_equal(sub.generation.mean_nll, [1.6, 0.8])
    np.testing.assert_array_equal(sub.generation.ifd, [1.20, 0.55])


def test_two_stage_token_entropy_then_kcenter_by_hand():
    # Six candidates on the unit circle, one labeled example at 0 degrees (pool id 6).
    # Entropy shortlists (beta 2, k 2) the 4 most uncertain: ids 0 (2.0), 1 (1.9), 2 (1.8),
    # 3 (1.7). k-center then takes the shortlisted id farthest from the labeled point, id 3
    # at 180 degrees, and next the one farthest from {0 deg, 180 deg}: id 1 at 95 degrees
    # (ids 0 and 2 sit at 5 and 170 degrees, near the two centres).
    # Ids 4, 5 (270, 260 degrees) would be the farthest of all but are not shortlisted.
    deg = np.deg2rad([5, 95, 170, 180, 270, 260, 0])
    emb = np.stack([np.cos(deg), np.sin(deg)], axis=1).astype(np.float32)  # [7, 2]
    inputs = QueryInputs(
        unlabeled=np.arange(6),
        labeled=np.array([6]),
        embeddings=emb,
        generation=GenerationStats(
            mean_entropy=np.array([2.0, 1.9, 1.8, 1.7, 0.1, 0.2]), mean_nll=np.zeros(6)
        ),
    )
    s = get_strategy("two_stage", score="token_entropy", beta=2.0, diversity="kcenter")
    assert s.needs == {"generation", "embeddings"}
    q = s.query(inputs, 2, np.random.default_rng(0))
    assert q.pool_ids.tolist() == [3, 1]
    np.testing.assert_array_equal(q.scores, [1.7, 1.9])
    assert q.info["shortlist"] == 4
    with pytest.raises(MissingInputError, match="'two_stage' needs embeddings"):
        s.query(gen_inputs(), 2, np.random.default_rng(0))


def test_fusion_of_entropy_and_ifd_by_hand():
    # rank-normalised: entropy [0.75, 0, 1, 0.25, 0.5], ifd [0.5, 0, 0.25, 1, 0.75]
    s = get_strategy("fusion", weights={"token_entropy": 0.5, "ifd": 0.5})
    assert s.needs == {"generation"}
    np.testing.assert_allclose(s.score(gen_inputs()), [0.625, 0.0, 0.625, 0.625, 0.625])
    s = get_strategy("fusion", weights={"token_entropy": 0.25, "ifd": 0.75})
    np.testing.assert_allclose(s.score(gen_inputs()), [0.5625, 0.0, 0.4375, 0.8125, 0.6875])
    assert s.query(gen_inputs(), 2, np.random.default_rng(0)).pool_ids.tolist() == [13, 14]
