"""benchmarks/default_candidates.py: its Welch interval by hand, and every arm is a valid
campaign config whose strategy builds."""

from __future__ import annotations

import pytest

from benchmarks.default_candidates import ARMS, difference
from benchmarks.learning_curve import campaign_config
from strategies import get_strategy


def test_welch_interval_by_hand():
    # a: mean 2, variance 1, n 3 -> se^2 1/3; b constant 0 -> se^2 0; dof = 2 exactly,
    # t(0.975, 2) = 4.302653; half width 4.302653 * sqrt(1/3) = 2.484138
    d = difference([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert d["diff"] == pytest.approx(2.0)
    assert d["low"] == pytest.approx(2.0 - 2.484138, abs=1e-6)
    assert d["high"] == pytest.approx(2.0 + 2.484138, abs=1e-6)


def test_no_spread_gives_a_point_interval():
    assert difference([0.5, 0.5], [0.25, 0.25]) == {"diff": 0.25, "low": 0.25, "high": 0.25}


def test_one_seed_gives_no_interval():
    assert difference([0.5], [0.25, 0.75]) == {"diff": 0.0, "low": None, "high": None}


@pytest.mark.parametrize("arm", sorted(ARMS))
def test_every_arm_is_a_valid_campaign(arm, tmp_path):
    strategy, extra = ARMS[arm]
    cfg = campaign_config("sms_spam", strategy, 0, 2000, 100, 100, tmp_path, extra)
    assert cfg.strategy.name == strategy
    get_strategy(cfg.strategy.name, **cfg.strategy.options)  # options are checked here
    shipped = arm.startswith("default")
    assert (cfg.cold_start.name == "kmeans") is shipped
    assert (cfg.trainer.head.semi_supervised is not None) is shipped
