"""Stop rules as pure functions of hand-written histories (golden cases and properties)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.stopping import (
    RULE_ORDER,
    RoundRecord,
    StopDecision,
    budget_exhausted,
    cohen_kappa,
    decide,
    forecast_gain,
    max_rounds_reached,
    plateau,
    pool_exhausted,
    pool_uncertainty,
    prediction_kappas,
    stabilizing_predictions,
    target_reached,
    uncertainty_below,
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


# --------------------------------------------------------------------------- issue 6 rules
def preds_hist(*preds, unc=None):
    unc = unc or [None] * len(preds)
    return [
        RoundRecord(round=i, n_labels=100 * (i + 1), metrics={"accuracy": 0.5}, stop_set_pred=p, pool_uncertainty=u)
        for i, (p, u) in enumerate(zip(preds, unc, strict=True))
    ]


# --------------------------------------------------------------------------- RoundRecord
def test_round_record_stays_backwards_compatible():
    r = RoundRecord(round=0, n_labels=10, metrics={"accuracy": 0.5})
    assert r.stop_set_pred is None and r.pool_uncertainty is None
    # arrays are excluded from ==, so records still compare (and the store's dump does too)
    a = RoundRecord(0, 10, {}, stop_set_pred=np.array([0, 1]))
    b = RoundRecord(0, 10, {}, stop_set_pred=np.array([1, 1, 1]))
    assert a == b
    assert isinstance(RoundRecord(0, 10, {}, stop_set_pred=[0, 1]).stop_set_pred, np.ndarray)
    with pytest.raises(ValueError, match="round 3: stop_set_pred must be a 1-D integer array"):
        RoundRecord(3, 10, {}, stop_set_pred=np.zeros((2, 2), dtype=int))
    with pytest.raises(ValueError, match="1-D integer array"):
        RoundRecord(3, 10, {}, stop_set_pred=np.array([0.5, 1.0]))


# --------------------------------------------------------------------------- kappa
def test_kappa_golden_two_classes():
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15.
    # p_o = 35/50 = 0.7; A says yes 25/50, B 30/50: p_e = .5*.6 + .5*.4 = 0.5; kappa = .2/.5
    a = [1] * 20 + [1] * 5 + [0] * 10 + [0] * 15
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4, abs=1e-12)


def test_kappa_golden_three_classes():
    # a = 0 0 1 1 2 2, b = 0 1 1 1 2 0: agree 4/6; marginals a (2,2,2), b (2,3,1)
    # p_e = (2*2 + 2*3 + 2*1) / 36 = 12/36 = 1/3; kappa = (2/3 - 1/3) / (2/3) = 0.5
    assert cohen_kappa([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0], n_classes=3) == pytest.approx(0.5, abs=1e-12)
    # complete disagreement on a balanced pair: p_o = 0, p_e = 1/2 -> -1
    assert cohen_kappa([0, 1], [1, 0]) == -1.0


def test_kappa_degenerate_cases():
    assert cohen_kappa([2, 2, 2], [2, 2, 2]) == 1.0  # 0/0 by the formula, defined as 1
    assert cohen_kappa([0, 0, 0], [1, 1, 1]) == 0.0  # p_o = 0, p_e = 0
    assert cohen_kappa([0, 1, 2], [0, 1, 2]) == 1.0
    # one constant rater: p_e equals p_o whatever the other says -> 0
    assert cohen_kappa([0, 0, 0, 0], [0, 1, 0, 1]) == 0.0


@pytest.mark.parametrize(
    ("a", "b", "kw", "message"),
    [
        ([0, 1], [0, 1, 1], {}, "different items"),
        ([], [], {}, "no items"),
        ([0.0, 1.0], [0, 1], {}, "integer class indices"),
        ([[0, 1]], [[0, 1]], {}, "1-D"),
        ([0, 3], [0, 1], {"n_classes": 3}, r"outside \[0, 3\)"),
        ([0, 1], [0, 1], {"n_classes": 0}, "n_classes must be >= 1"),
    ],
)
def test_kappa_rejects_bad_input(a, b, kw, message):
    with pytest.raises(ValueError, match=message):
        cohen_kappa(a, b, **kw)


labels = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(pairs=labels, perm=st.permutations(range(5)))
def test_kappa_properties(pairs, perm):
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    k = cohen_kappa(a, b)
    assert k == cohen_kappa(b, a)
    assert -1.0 <= k <= 1.0
    assert cohen_kappa(a, a) == 1.0
    relabel = np.array(perm)
    assert cohen_kappa(relabel[a], relabel[b]) == pytest.approx(k, abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(pairs=labels)
def test_kappa_matches_sklearn_where_defined(pairs):
    from sklearn.metrics import cohen_kappa_score

    a = [p[0] for p in pairs]
    b = [p[1] for p in pairs]
    if a == b:
        return  # sklearn gives nan for 0/0; ours is defined as 1
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-9)


# --------------------------------------------------------------------------- stabilizing predictions
def test_stabilizing_predictions_golden():
    r0, r1 = [0, 0, 1, 1], [0, 1, 1, 1]  # kappa(r0, r1) = (4*3 - (2*1 + 2*3)) / (16 - 8) = 0.5
    h = preds_hist(r0, r1, r1, r1)
    assert prediction_kappas(h) == [None, 0.5, 1.0, 1.0]
    reason = stabilizing_predictions(h, threshold=0.99, window=2)
    assert reason == (
        "stabilizing predictions: kappa between consecutive rounds on the stop set >= 0.99 "
        "for the last 2 round pairs (1.0000, 1.0000)"
    )
    assert stabilizing_predictions(h, threshold=0.99, window=3) is None  # includes the 0.5
    assert stabilizing_predictions(h, threshold=0.5, window=3) is not None  # >= is inclusive
    assert stabilizing_predictions(h[:2], threshold=0.5, window=2) is None  # needs window + 1 rounds


def test_stabilizing_predictions_missing_predictions_never_stop():
    h = preds_hist(None, [0, 1], [0, 1], [0, 1])
    assert prediction_kappas(h) == [None, None, 1.0, 1.0]
    assert stabilizing_predictions(h, 0.9, 3) is None
    assert stabilizing_predictions(h, 0.9, 2) is not None
    assert stabilizing_predictions(hist(0.5, 0.6, 0.7), 0.9, 1) is None  # no stop set at all


@pytest.mark.parametrize(
    ("threshold", "window", "message"),
    [
        (0.9, 0, "window must be an integer >= 1"),
        (0.9, 1.5, "window must be an integer >= 1"),
        (0.0, 2, r"threshold must be in \(0, 1\]"),
        (1.01, 2, r"threshold must be in \(0, 1\]"),
        (float("nan"), 2, r"threshold must be in \(0, 1\]"),
    ],
)
def test_stabilizing_predictions_rejects_bad_arguments(threshold, window, message):
    with pytest.raises(ValueError, match=message):
        stabilizing_predictions(preds_hist([0], [0], [0]), threshold, window)


def test_stabilizing_predictions_rejects_a_changed_stop_set():
    with pytest.raises(ValueError, match="stop set changed between rounds 0 and 1"):
        stabilizing_predictions(preds_hist([0, 1], [0, 1, 1]), 0.9, 1)


# --------------------------------------------------------------------------- uncertainty
def test_pool_uncertainty_golden():
    two = [[1.0, 0.0], [0.5, 0.5]]
    assert pool_uncertainty(two, "least_confidence") == pytest.approx((0.0 + 0.5) / 2)
    assert pool_uncertainty(two, "margin") == pytest.approx((0.0 + 1.0) / 2)
    assert pool_uncertainty(two, "entropy") == pytest.approx((0.0 + 1.0) / 2)
    assert pool_uncertainty(two, "least_confidence", reduce="max") == pytest.approx(0.5)
    three = [[0.5, 0.3, 0.2]]
    assert pool_uncertainty(three, "least_confidence") == pytest.approx(0.5)
    assert pool_uncertainty(three, "margin") == pytest.approx(1 - (0.5 - 0.3))
    # -(.5 ln .5 + .3 ln .3 + .2 ln .2) / ln 3 = (0.346574 + 0.361192 + 0.321888) / 1.098612
    assert pool_uncertainty(three, "entropy") == pytest.approx(0.937231, abs=1e-6)
    assert pool_uncertainty([[1.0], [1.0]], "entropy") == 0.0  # one class: no uncertainty
    assert pool_uncertainty([[1.0]], "margin") == 0.0


@pytest.mark.parametrize(
    ("probs", "kw", "message"),
    [
        ([[0.5, 0.5]], {"measure": "bald"}, "unknown measure 'bald'"),
        ([[0.5, 0.5]], {"reduce": "median"}, "reduce must be"),
        (np.zeros((0, 2)), {}, r"\[m >= 1, C >= 1\]"),
        ([0.5, 0.5], {}, r"\[m >= 1, C >= 1\]"),
        ([[0.5, float("nan")]], {}, "NaN or inf"),
        ([[0.7, 0.7]], {}, "rows summing to 1"),
        ([[1.5, -0.5]], {}, "non-negative"),
    ],
)
def test_pool_uncertainty_rejects_bad_input(probs, kw, message):
    with pytest.raises(ValueError, match=message):
        pool_uncertainty(probs, **kw)


def test_uncertainty_below():
    h = preds_hist(None, None, unc=[0.05, 0.2])
    assert uncertainty_below(h, 0.1) is None  # only the last round counts
    assert uncertainty_below(h, 0.25) == "pool uncertainty 0.2000 < 0.25 under the round 1 model"
    assert uncertainty_below(h, 0.2) is None  # strictly below
    assert uncertainty_below(preds_hist(None, None, unc=[0.01, None]), 0.5) is None  # not measured
    assert uncertainty_below([], 0.5) is None
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\]"):
        uncertainty_below(h, 0.0)
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\]"):
        uncertainty_below(h, 2.0)
    with pytest.raises(ValueError, match="round 1: pool_uncertainty is NaN"):
        uncertainty_below(preds_hist(None, None, unc=[0.1, float("nan")]), 0.5)


# --------------------------------------------------------------------------- forecast
def curve(n):
    return 0.9 - 0.5 * n**-0.5


def curve_hist(k, step=100, f=curve):
    return [RoundRecord(round=i, n_labels=step * (i + 1), metrics={"accuracy": f(step * (i + 1))}) for i in range(k)]


def test_forecast_golden_inverse_power_law():
    # acc(n) = 0.9 - 0.5 n^-0.5 at n = 100, 200, ...; next batch 100 labels.
    # Gain per label after round r (n labels) = 0.5 (n^-0.5 - (n + 100)^-0.5) / 100, by hand:
    #   n=300 (round 2): 0.5 (0.0577350 - 0.0500000) / 100 = 3.868e-5
    #   n=400 (round 3): 0.5 (0.0500000 - 0.0447214) / 100 = 2.639e-5
    #   n=500 (round 4): 0.5 (0.0447214 - 0.0408248) / 100 = 1.948e-5   < 2e-5: stop here
    by_hand = {300: 3.868e-5, 400: 2.639e-5, 500: 1.948e-5}
    threshold = 2e-5
    for rounds_done in range(1, 8):
        h = curve_hist(rounds_done)
        reason, fc = forecast_gain(h, "accuracy", threshold, min_rounds=3)
        if rounds_done < 3:
            assert reason is None and fc["status"] == "too_few_points" and fc["points"] == rounds_done
            continue
        assert fc["status"] == "ok"
        assert fc["a"] == pytest.approx(0.9, abs=1e-3)
        assert fc["b"] == pytest.approx(0.5, abs=1e-3)
        assert fc["c"] == pytest.approx(0.5, abs=1e-3)
        assert fc["rmse"] < 1e-9
        n = 100 * rounds_done
        assert (fc["n_last"], fc["next_batch"], fc["n_next"]) == (n, 100, n + 100)
        assert fc["predicted_next"] == pytest.approx(curve(n + 100), abs=1e-9)
        if n in by_hand:
            assert fc["gain_per_label"] == pytest.approx(by_hand[n], rel=1e-3)
        assert (reason is not None) == (rounds_done >= 5), (rounds_done, fc["gain_per_label"])
    assert reason.startswith("forecast gain too small: accuracy ")
    assert "< 2e-05 per label" in reason


def test_forecast_next_batch_and_flat_history():
    # a larger next batch -> a larger total gain, but a smaller gain per label
    _, fc100 = forecast_gain(curve_hist(4), "accuracy", 1e-9, next_batch=100)
    _, fc400 = forecast_gain(curve_hist(4), "accuracy", 1e-9, next_batch=400)
    assert fc400["predicted_gain"] > fc100["predicted_gain"]
    assert fc400["gain_per_label"] < fc100["gain_per_label"]
    # a flat curve forecasts no gain: stops once min_rounds rounds exist
    reason, fc = forecast_gain(hist(0.8, 0.8, 0.8), "accuracy", 1e-6)
    assert reason is not None and fc["predicted_gain"] == pytest.approx(0.0, abs=1e-9)


def test_forecast_asymptote_respects_the_metric_range():
    # accuracy heading for 1.2 (impossible): a stays at the metric's upper bound
    _, fc = forecast_gain(curve_hist(5, f=lambda n: 1.2 - 3.0 * n**-0.5), "accuracy", 1e-9,
                          metric_range=(0.0, 2.0))
    assert fc["a"] == pytest.approx(1.2, abs=1e-3)
    _, fc = forecast_gain(curve_hist(5, f=lambda n: 1.0 - 3.0 * n**-0.5), "accuracy", 1e-9)
    assert fc["a"] <= 1.0


def test_forecast_statuses_that_never_stop(monkeypatch):
    # two distinct label counts only
    h = [RoundRecord(i, n, {"accuracy": 0.5 + 0.01 * i}) for i, n in enumerate([100, 100, 200, 200])]
    reason, fc = forecast_gain(h, "accuracy", 1.0)
    assert reason is None and fc["status"] == "too_few_points" and "distinct" in fc["message"]
    # the last round added no labels and no next_batch was given
    h = [RoundRecord(i, n, {"accuracy": 0.5 + 0.01 * i}) for i, n in enumerate([100, 200, 300, 300])]
    reason, fc = forecast_gain(h, "accuracy", 1.0)
    assert reason is None and fc["status"] == "no_next_batch"
    # a poor fit is reported, never used
    noisy = hist(0.5, 0.9, 0.55, 0.85, 0.6)
    reason, fc = forecast_gain(noisy, "accuracy", 1.0, max_rmse=0.01)
    assert reason is None and fc["status"] == "poor_fit" and fc["rmse"] > 0.01
    # round 0 without labels (zero-shot) is not a point of the curve
    zs = [RoundRecord(0, 0, {"accuracy": 0.3}), *curve_hist(2)]
    assert forecast_gain(zs, "accuracy", 1.0)[1]["points"] == 2
    # the fit does not converge
    import scipy.optimize

    def boom(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found: maxfev reached")

    monkeypatch.setattr(scipy.optimize, "curve_fit", boom)
    reason, fc = forecast_gain(curve_hist(5), "accuracy", 1.0)
    assert reason is None and fc["status"] == "fit_failed" and "maxfev" in fc["message"]


@pytest.mark.parametrize(
    ("kw", "exc", "message"),
    [
        ({"min_rounds": 2}, ValueError, "min_rounds must be an integer >= 3"),
        ({"min_gain_per_label": 0.0}, ValueError, "min_gain_per_label must be a finite number > 0"),
        ({"min_gain_per_label": float("nan")}, ValueError, "min_gain_per_label"),
        ({"model": "exponential"}, ValueError, "unknown model 'exponential'"),
        ({"metric_range": (1.0, 0.0)}, ValueError, "metric_range"),
        ({"next_batch": 0}, ValueError, "next_batch must be an integer >= 1"),
        ({"max_rmse": 0.0}, ValueError, "max_rmse must be > 0"),
        ({"metric": "macro_f1"}, KeyError, "round 0 has no metric 'macro_f1'"),
    ],
)
def test_forecast_rejects_bad_arguments(kw, exc, message):
    args = {"metric": "accuracy", "min_gain_per_label": 1e-5, **kw}
    with pytest.raises(exc, match=message):
        forecast_gain(curve_hist(4), **args)


def test_forecast_rejects_nan_and_out_of_range_metrics():
    with pytest.raises(ValueError, match="round 1: metric 'accuracy' is NaN"):
        forecast_gain(hist(0.5, float("nan"), 0.7), "accuracy", 1e-5)
    with pytest.raises(ValueError, match=r"round 2: accuracy 1.5 is outside the metric range \[0.0, 1.0\]"):
        forecast_gain(hist(0.5, 0.6, 1.5), "accuracy", 1e-5)


@settings(max_examples=60, deadline=None)
@given(
    accs=st.lists(st.floats(0.0, 1.0), min_size=0, max_size=5),
    steps=st.lists(st.integers(1, 500), min_size=5, max_size=5),
    min_rounds=st.integers(3, 6),
    min_gain=st.floats(1e-9, 1.0),
)
def test_forecast_never_stops_with_fewer_than_min_rounds(accs, steps, min_rounds, min_gain):
    accs = accs[: min_rounds - 1]
    n = np.cumsum(steps[: len(accs)])
    h = [RoundRecord(i, int(n[i]), {"accuracy": a}) for i, a in enumerate(accs)]
    reason, fc = forecast_gain(h, "accuracy", min_gain, min_rounds=min_rounds)
    assert reason is None and fc["status"] == "too_few_points"


@settings(max_examples=30, deadline=None)
@given(
    accs=st.lists(st.floats(0.0, 1.0), min_size=3, max_size=8),
    steps=st.lists(st.integers(1, 500), min_size=8, max_size=8),
)
def test_forecast_curve_never_decreases_and_stays_in_range(accs, steps):
    n = np.cumsum(steps[: len(accs)])
    h = [RoundRecord(i, int(n[i]), {"accuracy": a}) for i, a in enumerate(accs)]
    reason, fc = forecast_gain(h, "accuracy", 1e-4)
    assert fc["status"] == "ok"
    assert 0.0 <= fc["a"] <= 1.0 and fc["b"] >= 0 and fc["c"] >= 0
    assert fc["predicted_gain"] >= -1e-12
    assert (reason is not None) == (fc["gain_per_label"] < 1e-4)
    assert all(math.isfinite(fc[k]) for k in ("a", "b", "c", "rmse", "predicted_next"))


# --------------------------------------------------------------------------- decide
def test_decide_new_rules_order_and_forecast_passthrough():
    same = [0, 1, 1, 0]
    h = [
        RoundRecord(i, 100 * (i + 1), {"accuracy": 0.8}, stop_set_pred=same, pool_uncertainty=0.01)
        for i in range(4)
    ]
    everything = {
        "kappa_rule": (0.99, 2),
        "uncertainty_rule": 0.05,
        "forecast_rule": ("accuracy", 1e-4, 3, 100),
    }
    d = decide(h, budget=400, pool_size=1000, target_rule=("accuracy", 0.9), **everything)
    assert (d.rule, d.forecast["status"]) == ("kappa", "ok")
    d = decide(h, budget=400, pool_size=1000, uncertainty_rule=0.05, forecast_rule=everything["forecast_rule"])
    assert d.rule == "uncertainty"
    d = decide(h, budget=400, pool_size=1000, forecast_rule={"metric": "accuracy", "min_gain_per_label": 1e-4})
    assert d.rule == "forecast" and d.reason.startswith("forecast gain too small")
    d = decide(h, budget=400, pool_size=1000)
    assert d == StopDecision(stop=True, rule="budget", reason="budget exhausted: 400 labels / budget 400")
    # not stopping still carries the forecast
    d = decide(curve_hist(3), budget=10_000, pool_size=10_000, forecast_rule=("accuracy", 1e-6))
    assert d.stop is False and d.forecast["status"] == "ok" and d.forecast["gain_per_label"] > 1e-6
    assert decide(hist(0.5), budget=10, pool_size=10).forecast is None
    with pytest.raises(ValueError, match="forecast_rule must be"):
        decide(h, budget=10_000, pool_size=10_000, forecast_rule=("accuracy",))


@settings(max_examples=40, deadline=None)
@given(
    accs=st.lists(st.floats(0.0, 1.0), min_size=0, max_size=6),
    preds=st.lists(st.sampled_from([(0, 1, 1, 0), (0, 1, 1, 1), (1, 1, 1, 1)]), min_size=6, max_size=6),
    unc=st.lists(st.one_of(st.none(), st.floats(0.0, 1.0)), min_size=6, max_size=6),
    budget=st.integers(100, 800),
    pool_size=st.integers(100, 800),
    max_rounds=st.one_of(st.none(), st.integers(1, 8)),
    target=st.one_of(st.none(), st.floats(0.1, 1.0)),
    patience=st.one_of(st.none(), st.integers(1, 3)),
    kappa=st.one_of(st.none(), st.tuples(st.floats(0.1, 1.0), st.integers(1, 3))),
    unc_threshold=st.one_of(st.none(), st.floats(0.01, 1.0)),
    min_gain=st.one_of(st.none(), st.floats(1e-6, 1e-2)),
)
def test_decide_returns_the_first_firing_rule(
    accs, preds, unc, budget, pool_size, max_rounds, target, patience, kappa, unc_threshold, min_gain
):
    h = [
        RoundRecord(i, 100 * (i + 1), {"accuracy": a}, stop_set_pred=preds[i], pool_uncertainty=unc[i])
        for i, a in enumerate(accs)
    ]
    config = {
        "target": (target_reached, ("accuracy", target), "target_rule", ("accuracy", target)),
        "plateau": (plateau, ("accuracy", patience, 0.01), "plateau_rule", ("accuracy", patience, 0.01)),
        "kappa": (stabilizing_predictions, kappa, "kappa_rule", kappa),
        "uncertainty": (uncertainty_below, (unc_threshold,), "uncertainty_rule", unc_threshold),
        "forecast": (
            lambda *a: forecast_gain(*a)[0], ("accuracy", min_gain), "forecast_rule", ("accuracy", min_gain)
        ),
        "budget": (budget_exhausted, (budget,), None, None),
        "pool": (pool_exhausted, (pool_size,), None, None),
        "max_rounds": (max_rounds_reached, (max_rounds,), "max_rounds", max_rounds),
    }
    assert tuple(config) == RULE_ORDER
    on = {"target": target, "plateau": patience, "kappa": kappa, "uncertainty": unc_threshold,
          "forecast": min_gain, "budget": True, "pool": True, "max_rounds": max_rounds}
    expected = None
    kwargs = {}
    for rule, (fn, args, kw, value) in config.items():
        if on[rule] is None:
            continue
        if kw is not None:
            kwargs[kw] = value
        reason = fn(h, *args)
        if expected is None and reason is not None:
            expected = (rule, reason)
    d = decide(h, budget=budget, pool_size=pool_size, **kwargs)
    assert (d.stop, d.rule, d.reason) == ((True, *expected) if expected else (False, None, None))
    assert (d.forecast is not None) == (min_gain is not None)


def test_forecast_patience_needs_consecutive_forecasts_below():
    # on the golden curve the forecast is below 2e-5 from round 4 on (see the golden test)
    for rounds_done, fires in [(5, False), (6, True)]:
        reason, fc = forecast_gain(curve_hist(rounds_done), "accuracy", 2e-5, patience=2)
        assert (reason is not None) == fires
        assert fc["below"] is True and fc["rounds_below"] == (1 if rounds_done == 5 else 2)
    assert "after each of the 1 rounds before" in reason
    _, fc = forecast_gain(curve_hist(5), "accuracy", 2e-5, patience=2)
    assert "1 of the 2 rounds patience needs" in fc["message"]
    # an earlier prefix with too few points breaks the streak
    reason, fc = forecast_gain(hist(0.8, 0.8, 0.8), "accuracy", 1e-6, patience=2)
    assert reason is None and fc["rounds_below"] == 1
    with pytest.raises(ValueError, match="patience must be an integer >= 1"):
        forecast_gain(curve_hist(5), "accuracy", 2e-5, patience=0)
