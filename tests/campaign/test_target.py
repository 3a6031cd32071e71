"""The target comparison's pure parts: the plan, alft's set, the random draw, the summary."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from alft.campaign.target import (
    TargetError,
    TargetRun,
    alft_examples,
    headline,
    plan,
    random_pool_ids,
    summarize,
    train_seed,
)
from alft.config import TargetModelConfig


def test_plan_pairs_every_alft_run_with_a_random_one_and_adds_random_only_sizes():
    t = TargetModelConfig(model="m", labels=[40, 20], random_labels=[80], repeats=2)
    runs = plan(t, n_labeled=60)
    assert [r.key for r in runs] == [
        ("alft", 20, 0), ("random", 20, 0), ("alft", 20, 1), ("random", 20, 1),
        ("alft", 40, 0), ("random", 40, 0), ("alft", 40, 1), ("random", 40, 1),
        ("random", 80, 0), ("random", 80, 1),
    ]
    # default: the campaign's final size, once per repeat and arm
    assert [r.key for r in plan(TargetModelConfig(model="m", repeats=1), n_labeled=37)] == [("alft", 37, 0), ("random", 37, 0)]


def test_plan_refuses_sizes_the_campaign_has_not_reached():
    with pytest.raises(TargetError, match=r"asks for \[100\] labels but the campaign has 60"):
        plan(TargetModelConfig(model="m", labels=[20, 100]), n_labeled=60)
    with pytest.raises(TargetError, match="no labels yet"):
        plan(TargetModelConfig(model="m"), n_labeled=0)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"model": "m", "labels": [20, 20]}, "lists a size twice"),
        ({"model": "m", "labels": [0]}, "label counts >= 1"),
        ({"model": "m", "labels": []}, "is empty"),
        ({"model": "m", "repeats": 0}, "greater than or equal to 1"),
        ({"model": "m", "control": "stratified"}, "'random'"),
        ({"model": "m", "unknown": 1}, "Extra inputs are not permitted"),
    ],
)
def test_bad_target_sections_are_refused(section, message):
    with pytest.raises(ValidationError, match=message):
        TargetModelConfig(**section)


def test_alft_set_is_the_first_labeled_examples_in_selection_order():
    sel = [
        {"example_id": "c", "round": 1, "position": 1},
        {"example_id": "a", "round": 0, "position": 1},
        {"example_id": "b", "round": 0, "position": 0},
        {"example_id": "d", "round": 1, "position": 0},  # released unlabeled: skipped
        {"example_id": "e", "round": 2, "position": 0},
    ]
    labels = {"a": "x", "b": "y", "c": "x", "e": "y"}
    assert alft_examples(sel, labels, 3) == ["b", "a", "c"]
    with pytest.raises(TargetError, match="4 labeled examples, 5 requested"):
        alft_examples(sel, labels, 5)


def test_the_random_draw_depends_only_on_seed_size_repeat_and_the_eligible_ids():
    eligible = np.arange(0, 1000, 2)  # every other pool id has gold
    a = random_pool_ids(eligible, 50, seed=3, repeat=0)
    assert len(set(a.tolist())) == 50 and np.all(np.diff(a) > 0) and set(a.tolist()) <= set(eligible.tolist())
    assert np.array_equal(a, random_pool_ids(eligible, 50, seed=3, repeat=0))  # reproducible
    assert not np.array_equal(a, random_pool_ids(eligible, 50, seed=3, repeat=1))  # repeats differ
    assert not np.array_equal(a, random_pool_ids(eligible, 50, seed=4, repeat=0))  # seeds differ
    with pytest.raises(TargetError, match="a random set of 600 needs 600 pool examples with gold labels; the pool has 500"):
        random_pool_ids(eligible, 600, seed=3, repeat=0)


def test_training_seeds_pair_the_arms_of_a_repeat():
    assert train_seed(3, 0) == train_seed(3, 0) != train_seed(3, 1)


def _row(acc: float) -> dict:
    return {"metrics": {"accuracy": acc}}


def test_summary_means_sds_and_paired_differences_hand_computed():
    rows = {
        ("alft", 20, 0): _row(0.60), ("alft", 20, 1): _row(0.70),
        ("random", 20, 0): _row(0.50), ("random", 20, 1): _row(0.54),
        ("random", 40, 0): _row(0.65),
    }
    s20, s40 = summarize(rows, "accuracy")
    assert s20["alft_mean"] == pytest.approx(0.65) and s20["alft_sd"] == pytest.approx(np.std([0.6, 0.7], ddof=1))
    assert s20["random_mean"] == pytest.approx(0.52) and (s20["random_min"], s20["random_max"]) == (0.50, 0.54)
    # paired: (0.60 - 0.50, 0.70 - 0.54) = (0.10, 0.16)
    assert s20["diff_mean"] == pytest.approx(0.13) and s20["diff_sd"] == pytest.approx(np.std([0.10, 0.16], ddof=1))
    assert s20["pairs"] == 2
    assert s40["alft_mean"] is None and s40["random_mean"] == 0.65 and s40["pairs"] == 0
    line = headline([s20, s40])
    assert line == "target model: alft 0.650 vs random 0.520 accuracy at 20 labels (difference +0.130, ±0.042 over 2 repeats)"


def test_a_target_run_names_itself():
    run = TargetRun("random", 1000, 2)
    assert run.key == ("random", 1000, 2) and run.name == "random · 1000 labels · repeat 2"
