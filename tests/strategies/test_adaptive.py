"""Adaptive strategies: the schedule's switch rule and the Thompson-sampling bandit, from history alone."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies import PastRound, StrategyOptionError, get_strategy
from strategies.adaptive import bandit_reward, bandit_state, schedule_phase
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


def test_schedule_phase_by_class_coverage():
    h = (PastRound(round=0, n_labels=100, class_coverage=0.74), PastRound(round=1, n_labels=200, class_coverage=0.95))
    assert schedule_phase(h[:1], 100, switch_labels=None, switch_agreement=None, switch_coverage=0.95) == (
        "early", "class coverage 0.740 < 0.95")
    assert schedule_phase(h, 200, switch_labels=None, switch_agreement=None, switch_coverage=0.95) == (
        "late", "class coverage 0.950 >= 0.95")
    phase, reason = schedule_phase((), 10_000, switch_labels=None, switch_agreement=None, switch_coverage=0.5)
    assert phase == "early" and reason == "class coverage not measured yet"


def test_the_default_schedule_switches_on_class_coverage_not_a_label_count():
    base = make_inputs(n_pool=80, n_labeled=10)
    s = get_strategy("schedule")
    low = (PastRound(round=0, n_labels=10, class_coverage=0.5),)
    full = (PastRound(round=0, n_labels=10, class_coverage=1.0),)
    q_low = s.query(dataclasses.replace(base, history=low), 8, np.random.default_rng(0))
    q_full = s.query(dataclasses.replace(base, history=full), 8, np.random.default_rng(0))
    assert (q_low.info["phase"], q_low.info["arm"]) == ("early", "kmeans")
    assert (q_full.info["phase"], q_full.info["arm"]) == ("late", "margin")  # 10 labels: no count needed


def test_schedule_phase_without_agreement_is_immature():
    phase, reason = schedule_phase((), 10_000, switch_labels=None, switch_agreement=0.5)
    assert phase == "early" and "no agreement" in reason


def test_schedule_switches_from_diversity_to_uncertainty():
    base = make_inputs(n_pool=80, n_labeled=10)
    s = get_strategy(
        "schedule", early="kmeans", late="margin", switch_coverage=None, switch_labels=None, switch_agreement=0.9
    )
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
        "schedule", early="kmeans", late="margin", switch_coverage=None, switch_labels=1000, early_share=0.25
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
        ({"switch_coverage": None}, "needs a switch rule"),
        ({"switch_coverage": 0.0}, r"switch_coverage must be in \(0, 1\]"),
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
def pulls(*rows) -> tuple[PastRound, ...]:
    """Round 0 (cold start) then one round per (arm, batch_error, expected_error)."""
    out = [PastRound(round=0, n_labels=100, metrics={"accuracy": 0.9})]
    for r, (arm, err, exp) in enumerate(rows, start=1):
        info = {} if arm is None else {"policy": "thompson", "arm": arm}
        # the eval metric is deliberately misleading: the bandit must never read it
        out.append(PastRound(round=r, n_labels=100 * (r + 1), metrics={"accuracy": 0.9 - 0.1 * r},
                             selection_info=info, batch_error=err, expected_error=exp))
    return tuple(out)


def test_reward_is_the_batch_error_above_what_the_model_expected():
    h = pulls(("a", 0.6, 0.25), ("a", None, None))
    assert bandit_reward(h[1]) == pytest.approx(0.35)
    assert bandit_reward(h[2]) is None and bandit_reward(h[0]) is None
    with pytest.raises(ValueError, match="reward is NaN"):
        bandit_reward(dataclasses.replace(h[1], batch_error=float("nan")))


def test_bandit_state_is_the_gaussian_posterior_by_hand():
    # rewards: a 0.3 and 0.1, b -0.1; prior mean = their mean = 0.1, prior sd 0.1, noise 0.05
    h = pulls(("a", 0.5, 0.2), ("b", 0.1, 0.2), ("a", 0.3, 0.2), (None, 0.9, 0.0), ("c", None, None))
    st_ = bandit_state(h, ["a", "b", "c"], prior_sd=0.1, noise=0.05)
    assert st_["prior"] == pytest.approx(0.1)
    # a: precision 100 + 2 * 400 = 900, mean (0.1 * 100 + 0.4 * 400) / 900 = 170 / 900
    # b: precision 500, mean (10 - 0.1 * 400) / 500 = -0.06; c: pulled once, no reward: the prior
    np.testing.assert_allclose(st_["mean"], [170 / 900, -0.06, 0.1])
    np.testing.assert_allclose(st_["sd"], [1 / 30, 1 / math.sqrt(500), 0.1])
    assert st_["n"].tolist() == [2, 1, 0]
    # the round the bandit did not choose (arm None) is nobody's pull; c's counts without a reward
    assert [p["arm"] for p in st_["pulls"]] == ["a", "b", "a", "c"]


def test_bandit_ignores_rounds_it_did_not_choose():
    # round 0 was the cold start; a kmeans arm must not be credited with it
    h = (PastRound(round=0, n_labels=50, selection_info={"arm": "kmeans"}, batch_error=0.9, expected_error=0.1),)
    st_ = bandit_state(h, ["kmeans", "margin"], prior_sd=0.1, noise=0.05)
    assert st_["pulls"] == [] and st_["n"].tolist() == [0, 0]
    np.testing.assert_allclose(st_["mean"], [0.0, 0.0])


def test_bandit_finds_the_clearly_better_arm_within_ten_rounds():
    """A synthetic campaign: arm "good" finds the model's mistakes 30 points more often than
    expected, the others as often as expected (noise sd 0.05 per round). The bandit runs ten
    rounds from history alone; over 100 campaigns it picks "good" in most of rounds 6-10."""
    inputs = make_inputs(n_pool=80, n_labeled=10)
    s = get_strategy("bandit", arms=["margin", "entropy", "random", "least_confidence"])
    truth = {"margin": 0.3, "entropy": 0.0, "random": 0.0, "least_confidence": 0.0}
    late = []
    for campaign in range(100):
        world = np.random.default_rng(1000 + campaign)
        rows: list[tuple] = []
        for rnd in range(1, 11):
            q = s.query(dataclasses.replace(inputs, history=pulls(*rows)), 5, np.random.default_rng([campaign, rnd]))
            arm = q.info["arm"]
            rows.append((arm, 0.2 + truth[arm] + float(world.normal(0, 0.05)), 0.2))
            if rnd > 5:
                late.append(arm == "margin")
    assert np.mean(late) > 0.75, np.mean(late)  # 0.82 measured; the rest explores never-tried arms


def test_bandit_logs_its_posterior_and_its_choice_is_the_largest_draw():
    inputs = make_inputs(n_pool=80, n_labeled=10)
    hist = pulls(*[("margin", 0.5, 0.2)] * 6)
    s = get_strategy("bandit", arms=["margin", "random"])
    info = s.query(dataclasses.replace(inputs, history=hist), 5, np.random.default_rng(0)).info
    assert info["policy"] == "thompson" and info["pulls"] == {"margin": 6, "random": 0}
    assert info["last_reward"] == pytest.approx(0.3) and info["last_arm"] == "margin"
    assert info["arm"] == max(info["draws"], key=info["draws"].get)
    assert info["posterior_mean"]["margin"] == pytest.approx(0.3, abs=0.01)  # six rewards of 0.3
    assert info["posterior_sd"]["random"] == pytest.approx(0.1)  # never pulled: the prior


def test_bandit_selection_equals_the_chosen_arms():
    inputs = make_inputs(n_pool=80, n_labeled=10)
    s = get_strategy("bandit", arms=["margin", "entropy"])
    q = s.query(inputs, 6, np.random.default_rng(5))
    arm = q.info["arm"]
    # replay the same draws: one normal per arm, then the arm's own tie-breaking
    rng = np.random.default_rng(5)
    rng.normal(np.zeros(2), np.full(2, 0.1))
    np.testing.assert_array_equal(q.pool_ids, get_strategy(arm).query(inputs, 6, rng).pool_ids)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"arms": ["margin"]}, "at least 2"),
        ({"arms": ["margin", "margin"]}, "twice"),
        ({"arms": ["margin", "schedule"]}, "cannot be another adaptive"),
        ({"noise": 0}, "noise must be a finite number > 0"),
        ({"prior_sd": float("inf")}, "prior_sd must be a finite number > 0"),
    ],
)
def test_bandit_options_are_checked(options, message):
    with pytest.raises(StrategyOptionError, match=message):
        get_strategy("bandit", **{"arms": ["margin", "random"], **options})


def test_bandit_needs_probabilities_for_its_reward():
    assert "probs" in get_strategy("bandit", arms=["kcenter", "random"]).needs


@settings(max_examples=60, deadline=None)
@given(
    rewards=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.floats(0, 1), st.floats(0, 1)), max_size=8),
)
def test_bandit_posterior_is_finite_and_tightens_with_pulls(rewards):
    st_ = bandit_state(pulls(*rewards), ["a", "b", "c"], prior_sd=0.1, noise=0.05)
    assert np.isfinite(st_["mean"]).all() and (st_["sd"] > 0).all()
    assert (st_["sd"] <= 0.1 + 1e-12).all()
    # the posterior mean lies between the prior and the arm's own rewards
    for i, arm in enumerate(["a", "b", "c"]):
        own = [e - x for a, e, x in rewards if a == arm]
        lo, hi = min([st_["prior"], *own]), max([st_["prior"], *own])
        assert lo - 1e-9 <= st_["mean"][i] <= hi + 1e-9


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
