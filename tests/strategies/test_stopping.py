"""Stop rules as pure functions of hand-written histories."""

from __future__ import annotations

import pytest

from strategies.stopping import (
    RoundRecord,
    budget_exhausted,
    decide,
    max_rounds_reached,
    plateau,
    pool_exhausted,
    target_reached,
)


def hist(*accs, step=100):
    return [RoundRecord(round=i, n_labels=step * (i + 1), metrics={"accuracy": a}) for i, a in enumerate(accs)]


def test_budget():
    assert budget_exhausted(hist(0.5, 0.6), budget=300) is None
    assert budget_exhausted(hist(0.5, 0.6, 0.7), budget=300) == "budget exhausted: 300 labels / budget 300"
    assert budget_exhausted([], budget=1) is None


def test_pool():
    assert pool_exhausted(hist(0.5), pool_size=100) == "pool exhausted: all 100 examples labeled"
    assert pool_exhausted(hist(0.5), pool_size=101) is None


def test_max_rounds_counts_round_zero():
    assert max_rounds_reached(hist(0.1, 0.2), 3) is None
    assert max_rounds_reached(hist(0.1, 0.2, 0.3), 3) == "max rounds reached: 3 rounds / max 3"


def test_target():
    assert target_reached(hist(0.5, 0.79), "accuracy", 0.8) is None
    assert target_reached(hist(0.5, 0.8), "accuracy", 0.8).startswith("target reached: accuracy 0.8000")


def test_plateau_needs_more_than_patience_rounds():
    assert plateau(hist(0.5, 0.5), "accuracy", patience=2, min_delta=0.01) is None


def test_plateau_fires_when_recent_rounds_do_not_beat_the_best_by_min_delta():
    # best before the window 0.80; window best 0.805 < 0.80 + 0.01
    reason = plateau(hist(0.6, 0.8, 0.79, 0.805), "accuracy", patience=2, min_delta=0.01)
    assert reason is not None and "+0.0050" in reason


def test_plateau_holds_off_while_gains_continue():
    assert plateau(hist(0.6, 0.8, 0.79, 0.82), "accuracy", patience=2, min_delta=0.01) is None


def test_plateau_rejects_bad_patience_and_missing_metric():
    with pytest.raises(ValueError, match="patience"):
        plateau(hist(0.5, 0.6), "accuracy", patience=0, min_delta=0.0)
    with pytest.raises(KeyError, match="no metric 'macro_f1'"):
        plateau(hist(0.5, 0.6, 0.7), "macro_f1", patience=1, min_delta=0.0)


def test_plateau_refuses_nan():
    with pytest.raises(ValueError, match="NaN"):
        plateau(hist(0.5, float("nan"), 0.7), "accuracy", patience=1, min_delta=0.0)


def test_decide_order_and_no_stop():
    h = hist(0.5, 0.9, 0.9)
    d = decide(h, budget=300, pool_size=1000, target_rule=("accuracy", 0.85))
    assert (d.stop, d.rule) == (True, "target")
    d = decide(h, budget=300, pool_size=1000)
    assert (d.stop, d.rule) == (True, "budget")
    d = decide(h, budget=10_000, pool_size=1000, max_rounds=10)
    assert d.stop is False and d.reason is None
