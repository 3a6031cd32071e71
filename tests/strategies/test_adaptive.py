"""Adaptive strategies: the schedule's switch rule and the EXP3 bandit, from history alone."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies import PastRound, StrategyOptionError, get_strategy
from strategies.adaptive import bandit_state, exp3_probabilities, reward_of, schedule_phase
from tests.strategies.conftest import make_inputs


def rounds(*accs: float, agreements=None, infos=None) -> tuple[PastRound, ...]:
    agreements = agreements or [None] * len(accs)
    infos = infos or [{}] * len(accs)
    return tuple(
        PastRound(round=r, n_labels=100 * (r + 1), metrics={"accuracy": a}, agreement=g, selection_info=i)
        for r, (a, g, i) in enumerate(zip(accs, agreements, infos, strict=True))
    )


# --------------------------------------------------------------------------- schedule
def test_schedule_phase_by_labels():
    assert schedule_phase((), 99, switch_labels=100, switch_agreement=None) == ("early", "99 labels < 100")
    assert schedule_phase((), 100, switch_labels=100, switch_agreement=None) == ("late", "100 labels >= 100")


def test_schedule_phase_needs_every_condition():
    h = rounds(0.5, 0.6, agreements=[None, 0.95])
    phase, reason = schedule_phase(h, 50, switch_labels=100, switch_agreement=0.9)
    assert phase == "early" and "50 labels < 100" in reason and "agreement 0.950 >= 0.9" in reason
    assert schedule_phase(h, 150, switch_labels=100, switch_agreement=0.9)[0] == "late"
    low = rounds(0.5, 0.6, agreements=[None, 0.85])
    assert schedule_phase(low, 150, switch_labels=100, switch_agreement=0.9)[0] == "early"


def test_schedule_phase_without_agreement_is_immature():
    phase, reason = schedule_phase((), 10_000, switch_labels=None, switch_agreement=0.5)
    assert phase == "early" and "no agreement" in reason


def test_schedule_switches_from_diversity_to_uncertainty():
    base = make_inputs(n_pool=80, n_labeled=10)
    s = get_strategy("schedule", early="kmeans", late="margin", switch_labels=None, switch_agreement=0.9)
    early_in = dataclasses.replace(base, history=rounds(0.5, 0.6, agreements=[None, 0.5]))
    late_in = dataclasses.replace(base, history=rounds(0.5, 0.6, agreements=[None, 0.95]))
    rng = lambda: np.random.default_rng(3)  # noqa: E731
    q_early = s.query(early_in, 8, rng())
    q_late = s.query(late_in, 8, rng())
    assert q_early.info["phase"] == "early" and q_early.info["arm"] == "kmeans"
    assert q_late.info["phase"] == "late" and q_late.info["arm"] == "margin"
    np.testing.assert_array_equal(q_early.pool_ids, get_strategy("kmeans").query(early_in, 8, rng()).pool_ids)
    np.testing.assert_array_equal(q_late.pool_ids, get_strategy("margin").query(late_in, 8, rng()).pool_ids)


def test_schedule_blends_shares_without_overlap():
    base = make_inputs(n_pool=80, n_labeled=10)
    s = get_strategy(
        "schedule", early="kmeans", late="margin", switch_labels=1000, switch_agreement=None, early_share=0.25
    )
    q = s.query(base, 8, np.random.default_rng(0))
    assert (q.info["k_early"], q.info["k_late"]) == (2, 6)
    assert np.unique(q.pool_ids).size == 8
    # the uncertain part is margin's own top 6
    top6 = get_strategy("margin").query(base, 6, np.random.default_rng(0)).pool_ids
    assert set(q.pool_ids[:6].tolist()) == set(top6.tolist())
    assert not np.isin(q.pool_ids, base.labeled).any()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"switch_labels": None, "switch_agreement": None}, "needs a switch rule"),
        ({"switch_agreement": 1.5}, r"switch_agreement must be in \(0, 1\]"),
        ({"early_share": -0.1}, r"early_share must be in \[0, 1\]"),
        ({"early": "bandit"}, "cannot be another adaptive strategy"),
        ({"late": "nope"}, "schedule option late: unknown strategy 'nope'"),
        ({"switch_labels": 0}, "switch_labels must be >= 1"),
    ],
)
def test_schedule_options_are_checked(options, message):
    with pytest.raises(StrategyOptionError, match=message):
        get_strategy("schedule", **{"early": "kmeans", **options})


# --------------------------------------------------------------------------- bandit
def test_exp3_probabilities_by_hand():
    # weights 1 and 3 -> 0.25 / 0.75; mixed with 0.4 uniform over 2 arms: 0.6 * w + 0.2
    p = exp3_probabilities(np.array([0.0, math.log(3.0)]), gamma=0.4)
    np.testing.assert_allclose(p, [0.35, 0.65])


def test_reward_maps_metric_change_into_unit_interval():
    assert reward_of(0.0, 0.02) == 0.5
    assert reward_of(0.01, 0.02) == 0.75
    assert reward_of(0.5, 0.02) == 1.0
    assert reward_of(-0.5, 0.02) == 0.0


def test_bandit_state_replays_recorded_pulls_by_hand():
    # round 1 pulled "a" with p=0.5, accuracy 0.50 -> 0.52: reward 1.0 (scale 0.02)
    # round 2 pulled "b" with p=0.25, accuracy 0.52 -> 0.52: reward 0.5
    h = rounds(
        0.50,
        0.52,
        0.52,
        infos=[{}, {"policy": "exp3", "arm": "a", "probability": 0.5}, {"policy": "exp3", "arm": "b", "probability": 0.25}],
    )
    st_ = bandit_state(h, ["a", "b"], gamma=0.2, metric="accuracy", reward_scale=0.02)
    # log w_a = 0.2 * (1.0 / 0.5) / 2 = 0.2 ; log w_b = 0.2 * (0.5 / 0.25) / 2 = 0.2
    np.testing.assert_allclose(st_["log_weights"], [0.2, 0.2])
    np.testing.assert_allclose(st_["probabilities"], [0.5, 0.5])
    assert [p["reward"] for p in st_["pulls"]] == [1.0, 0.5]


def test_bandit_ignores_rounds_it_did_not_choose():
    # round 0 was the cold start; a kmeans arm must not be credited with it
    h = rounds(0.1, 0.5, infos=[{"arm": "kmeans"}, {}])
    st_ = bandit_state(h, ["kmeans", "margin"], gamma=0.2, metric="accuracy", reward_scale=0.02)
    assert st_["pulls"] == []
    np.testing.assert_allclose(st_["probabilities"], [0.5, 0.5])


def test_bandit_prefers_the_arm_that_paid_and_logs_its_choice():
    inputs = make_inputs(n_pool=80, n_labeled=10)
    infos = [{}] + [{"policy": "exp3", "arm": "margin", "probability": 0.5}] * 6
    accs = [0.3 + 0.05 * r for r in range(7)]  # every margin round gained 5 points
    hist = rounds(*accs, infos=infos)
    s = get_strategy("bandit", arms=["margin", "random"], gamma=0.1)
    picks = [s.query(dataclasses.replace(inputs, history=hist), 5, np.random.default_rng(i)).info for i in range(200)]
    # log w_margin = 6 pulls * 0.1 * (1.0 / 0.5) / 2 = 0.6, so
    # p_margin = 0.9 * e^0.6 / (e^0.6 + 1) + 0.05 = 0.6311 (EXP3 learns at rate gamma / arms)
    expected = 0.9 * math.exp(0.6) / (math.exp(0.6) + 1) + 0.05
    assert math.isclose(picks[0]["probabilities"]["margin"], expected, rel_tol=1e-9)
    share = sum(p["arm"] == "margin" for p in picks) / len(picks)
    assert abs(share - expected) < 0.1  # 200 draws: 3 standard deviations is 0.1
    info = picks[0]
    assert info["policy"] == "exp3" and info["pulls"] == {"margin": 6, "random": 0}
    assert info["last_reward"] == 1.0 and info["last_arm"] == "margin"
    assert math.isclose(sum(info["probabilities"].values()), 1.0)


def test_bandit_selection_equals_the_chosen_arms():
    inputs = make_inputs(n_pool=80, n_labeled=10)
    s = get_strategy("bandit", arms=["margin", "entropy"])
    q = s.query(inputs, 6, np.random.default_rng(5))
    arm = q.info["arm"]
    # replay the same draws: one for the arm, then the arm's own tie-breaking
    rng = np.random.default_rng(5)
    rng.choice(2, p=[q.info["probabilities"]["margin"], q.info["probabilities"]["entropy"]])
    np.testing.assert_array_equal(q.pool_ids, get_strategy(arm).query(inputs, 6, rng).pool_ids)


def test_bandit_rejects_a_corrupt_recorded_probability():
    h = rounds(0.5, 0.6, infos=[{}, {"policy": "exp3", "arm": "a", "probability": 0.0}])
    with pytest.raises(ValueError, match=r"probability 0.0 is outside \(0, 1\]"):
        bandit_state(h, ["a", "b"], gamma=0.2, metric="accuracy", reward_scale=0.02)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"arms": ["margin"]}, "at least 2"),
        ({"arms": ["margin", "margin"]}, "twice"),
        ({"arms": ["margin", "schedule"]}, "cannot be another adaptive"),
        ({"gamma": 0}, r"gamma must be in \(0, 1\]"),
        ({"reward_scale": -1}, "reward_scale must be > 0"),
    ],
)
def test_bandit_options_are_checked(options, message):
    with pytest.raises(StrategyOptionError, match=message):
        get_strategy("bandit", **{"arms": ["margin", "random"], **options})


@settings(max_examples=60, deadline=None)
@given(
    deltas=st.lists(st.floats(-0.2, 0.2), min_size=0, max_size=8),
    arms=st.lists(st.sampled_from(["a", "b", "c"]), min_size=8, max_size=8),
    gamma=st.floats(0.01, 1.0),
)
def test_bandit_distribution_is_a_distribution_with_exploration_floor(deltas, arms, gamma):
    accs = np.cumsum([0.5, *deltas]).tolist()
    infos = [{}] + [{"policy": "exp3", "arm": arms[i], "probability": 1 / 3} for i in range(len(deltas))]
    st_ = bandit_state(rounds(*accs, infos=infos), ["a", "b", "c"], gamma=gamma, metric="accuracy", reward_scale=0.02)
    p = st_["probabilities"]
    assert math.isclose(p.sum(), 1.0, rel_tol=1e-9)
    assert (p >= gamma / 3 - 1e-12).all()


def test_schedule_mixes_a_generative_scorer_with_a_diversity_selector():
    """The schedule's second stage must still see the generation statistics it was given."""
    inputs = make_inputs()
    strat = get_strategy("schedule", early="token_entropy", late="kcenter", early_share=0.5)
    q = strat.select(strat.score(inputs), inputs, 6, np.random.default_rng(0))
    assert len(set(q.pool_ids.tolist())) == 6 and set(q.pool_ids.tolist()) <= set(inputs.unlabeled.tolist())
    assert q.info["phase"] == "early"
    gate = get_strategy("token_entropy")
    from strategies.gating import gate_near_duplicates

    gated = gate_near_duplicates(gate, 0.999)
    out = gated.select(gated.score(inputs), inputs, 4, np.random.default_rng(0))
    assert len(out.pool_ids) == 4
