"""Stop rules: pure functions of the campaign history.

The history is a sequence of ``RoundRecord`` (one per finished round, in round order),
read from the campaign store, so a resumed or re-triggered campaign decides exactly as an
uninterrupted one would. Each rule returns a human-readable reason, or None to continue.

Rules
-----
* ``budget_exhausted``, ``pool_exhausted``, ``max_rounds_reached``: resources.
* ``target_reached``, ``plateau``: the evaluation metric of the history.
* ``stabilizing_predictions``: Bloodgood & Vijay-Shanker (2009), "A method for stopping
  active learning based on stabilizing predictions": Cohen's kappa between consecutive
  rounds' predictions on a fixed unlabeled *stop set* stays >= a threshold for ``window``
  consecutive round pairs. Reads ``RoundRecord.stop_set_pred``.
* ``uncertainty_below``: overall uncertainty of the unlabeled pool under the last round's
  model is below a threshold (Zhu et al. 2008 style "overall uncertainty"). Reads
  ``RoundRecord.pool_uncertainty``, which the caller computes with ``pool_uncertainty``.
* ``forecast_gain``: fits the learning curve ``metric(n) = a - b * n**(-c)`` (inverse power
  law, Figueroa et al. 2012) to (labels, metric) of the history, forecasts the metric after
  the next batch and stops when the forecast gain per label falls below a threshold
  (optionally after each of the last ``patience`` rounds). Returns the forecast too, so the
  caller can log it even when the rule does not fire.

A rule whose input is missing (a round without ``stop_set_pred`` or ``pool_uncertainty``,
too few rounds, a fit that does not converge) never stops; bad arguments and NaN inputs
raise ``ValueError`` (a missing metric ``KeyError``), naming the round.

``decide`` applies the configured rules in ``RULE_ORDER``; the first that fires is reported.
Only numpy at import; scipy (``forecast_gain``) is imported inside the function.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "FORECAST_MODELS",
    "RULE_ORDER",
    "UNCERTAINTY_MEASURES",
    "RoundRecord",
    "StopDecision",
    "budget_exhausted",
    "cohen_kappa",
    "decide",
    "forecast_gain",
    "max_rounds_reached",
    "plateau",
    "pool_exhausted",
    "pool_uncertainty",
    "prediction_kappas",
    "stabilizing_predictions",
    "target_reached",
    "uncertainty_below",
]

#: The order in which ``decide`` applies the rules (the first that fires is reported).
#: Metric/model rules come before resource rules, so a campaign whose budget runs out in
#: the round its curve flattens reports the more informative reason.
RULE_ORDER = ("target", "plateau", "kappa", "uncertainty", "forecast", "budget", "pool", "max_rounds")

UNCERTAINTY_MEASURES = ("least_confidence", "margin", "entropy")
FORECAST_MODELS = ("inverse_power",)

#: Upper bound of the learning-curve exponent ``c`` (in units of the first label count).
_C_MAX = 10.0


@dataclass(frozen=True)
class RoundRecord:
    """What one finished round left behind.

    Attributes
    ----------
    round: the round number (0 = cold start).
    n_labels: labels in the campaign after this round.
    metrics: evaluation metrics of the round's model (``accuracy``, ``macro_f1``...).
    stop_set_pred: optional, for ``stabilizing_predictions``: the round model's predicted
        class (1-D integer array) for every example of a fixed stop set, the same examples in
        the same order every round. Excluded from ``==`` (arrays do not compare to a bool).
    pool_uncertainty: optional, for ``uncertainty_below``: ``pool_uncertainty(probs)`` of the
        round model's class probabilities on the examples still unlabeled after the round.
    """

    round: int
    n_labels: int
    metrics: Mapping[str, float] = field(default_factory=dict)
    stop_set_pred: np.ndarray | None = field(default=None, compare=False, repr=False)
    pool_uncertainty: float | None = None

    def __post_init__(self) -> None:
        if self.stop_set_pred is not None:
            pred = np.asarray(self.stop_set_pred)
            if pred.ndim != 1 or not (np.issubdtype(pred.dtype, np.integer) or pred.dtype == bool):
                raise ValueError(
                    f"round {self.round}: stop_set_pred must be a 1-D integer array, "
                    f"got shape {pred.shape} dtype {pred.dtype}"
                )
            object.__setattr__(self, "stop_set_pred", pred)


@dataclass(frozen=True)
class StopDecision:
    """``stop`` and, when stopping, the rule that fired and why.

    ``forecast`` is the learning-curve forecast (see ``forecast_gain``) whenever the
    forecast rule is configured, whether or not any rule fired; None otherwise.
    """

    stop: bool
    rule: str | None = None
    reason: str | None = None
    forecast: Mapping[str, Any] | None = None


def _metric(history: Sequence[RoundRecord], metric: str) -> list[float]:
    values = []
    for rec in history:
        if metric not in rec.metrics:
            raise KeyError(f"round {rec.round} has no metric '{metric}'")
        value = float(rec.metrics[metric])
        if math.isnan(value):
            raise ValueError(f"round {rec.round}: metric '{metric}' is NaN")
        values.append(value)
    return values


def budget_exhausted(history: Sequence[RoundRecord], budget: int) -> str | None:
    """Stop once the labels reach the budget."""
    if history and history[-1].n_labels >= budget:
        return f"budget exhausted: {history[-1].n_labels} labels / budget {budget}"
    return None


def pool_exhausted(history: Sequence[RoundRecord], pool_size: int) -> str | None:
    """Stop once every pool example is labeled."""
    if history and history[-1].n_labels >= pool_size:
        return f"pool exhausted: all {pool_size} examples labeled"
    return None


def max_rounds_reached(history: Sequence[RoundRecord], max_rounds: int) -> str | None:
    """Stop after ``max_rounds`` rounds (the cold-start round 0 counts as one)."""
    if len(history) >= max_rounds:
        return f"max rounds reached: {len(history)} rounds / max {max_rounds}"
    return None


def target_reached(history: Sequence[RoundRecord], metric: str, target: float) -> str | None:
    """Stop once ``metric`` of the last round reaches ``target``."""
    if not history:
        return None
    value = _metric(history[-1:], metric)[0]
    if value >= target:
        return f"target reached: {metric} {value:.4f} >= {target:.4f}"
    return None


def plateau(
    history: Sequence[RoundRecord], metric: str, patience: int, min_delta: float
) -> str | None:
    """Stop when the last ``patience`` rounds never beat the best before them by ``min_delta``."""
    if patience < 1:
        raise ValueError(f"plateau patience must be >= 1, got {patience}")
    if len(history) <= patience:
        return None
    values = _metric(history, metric)
    best_before = max(values[:-patience])
    best_recent = max(values[-patience:])
    if best_recent < best_before + min_delta:
        return (
            f"plateau: {metric} gained {best_recent - best_before:+.4f} over the last "
            f"{patience} rounds (< {min_delta})"
        )
    return None


# --------------------------------------------------------------------------- kappa
def _class_array(x: Any, name: str, n_classes: int | None) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"cohen_kappa: {name} must be 1-D, got shape {arr.shape}")
    if arr.size and not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise ValueError(f"cohen_kappa: {name} must hold integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if n_classes is not None and arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        raise ValueError(f"cohen_kappa: {name} has classes outside [0, {n_classes})")
    return arr


def cohen_kappa(a: Any, b: Any, n_classes: int | None = None) -> float:
    """Cohen's kappa between two raters' integer labels of the same items.

    ``kappa = (p_o - p_e) / (1 - p_e)`` with ``p_o`` the observed agreement and ``p_e`` the
    agreement expected from the two label marginals. Computed from integer counts, so it is
    exact up to one final division. Range [-1, 1]; symmetric in ``a``, ``b``; invariant to
    renaming classes. ``n_classes`` only checks that every label is in ``[0, n_classes)``
    (classes nobody used do not change kappa).

    Degenerate case: when both raters give the same single class to every item,
    ``p_o = p_e = 1`` and kappa is 0/0. We define it as 1.0 — more generally, identical
    label vectors always give exactly 1.0 — because a stop rule asks "did the predictions
    change?", and they did not. (Both constant but different classes is well defined: 0.)
    """
    if n_classes is not None and n_classes < 1:
        raise ValueError(f"cohen_kappa: n_classes must be >= 1, got {n_classes}")
    x = _class_array(a, "a", n_classes)
    y = _class_array(b, "b", n_classes)
    if x.shape != y.shape:
        raise ValueError(f"cohen_kappa: a and b label different items ({x.size} vs {y.size} labels)")
    if x.size == 0:
        raise ValueError("cohen_kappa: no items to compare")
    if np.array_equal(x, y):
        return 1.0
    _, inv = np.unique(np.concatenate([x, y]), return_inverse=True)
    k = int(inv.max()) + 1
    ca = np.bincount(inv[: x.size], minlength=k)
    cb = np.bincount(inv[x.size :], minlength=k)
    n = int(x.size)
    agree = int(np.count_nonzero(x == y))
    chance = sum(int(p) * int(q) for p, q in zip(ca, cb, strict=True))  # n**2 * p_e, exact
    # not identical => p_e < 1 (p_e = 1 needs both raters on one common class)
    return (n * agree - chance) / (n * n - chance)


def prediction_kappas(history: Sequence[RoundRecord]) -> list[float | None]:
    """Kappa of each round's stop-set predictions with the previous round's (for logging).

    One entry per record; None for the first record and wherever either round lacks
    ``stop_set_pred``. Raises ``ValueError`` if the stop set changed size between rounds.
    """
    out: list[float | None] = [None] * len(history)
    for i in range(1, len(history)):
        out[i] = _pair_kappa(history[i - 1], history[i])
    return out


def _pair_kappa(prev: RoundRecord, cur: RoundRecord) -> float | None:
    if prev.stop_set_pred is None or cur.stop_set_pred is None:
        return None
    if prev.stop_set_pred.shape != cur.stop_set_pred.shape:
        raise ValueError(
            f"stop set changed between rounds {prev.round} and {cur.round} "
            f"({prev.stop_set_pred.size} vs {cur.stop_set_pred.size} predictions); "
            "it must be the same examples every round"
        )
    return cohen_kappa(prev.stop_set_pred, cur.stop_set_pred)


def stabilizing_predictions(history: Sequence[RoundRecord], threshold: float, window: int) -> str | None:
    """Stop when consecutive models agree on the stop set (Bloodgood & Vijay-Shanker 2009).

    Fires when each of the last ``window`` kappas between consecutive rounds' stop-set
    predictions is >= ``threshold`` (so it needs ``window + 1`` rounds with predictions).
    The paper's setting is threshold 0.99 over 3 pairs (it averages the 3; requiring each is
    slightly stricter). ``threshold`` in (0, 1], ``window`` >= 1.
    """
    if not (isinstance(window, int | np.integer) and window >= 1):
        raise ValueError(f"stabilizing predictions: window must be an integer >= 1, got {window!r}")
    if not (0.0 < threshold <= 1.0):
        raise ValueError(f"stabilizing predictions: kappa threshold must be in (0, 1], got {threshold!r}")
    if len(history) < window + 1:
        return None
    recent = history[-(window + 1) :]
    kappas = []
    for prev, cur in zip(recent[:-1], recent[1:], strict=True):
        k = _pair_kappa(prev, cur)
        if k is None:
            return None
        kappas.append(k)
    if all(k >= threshold for k in kappas):
        shown = ", ".join(f"{k:.4f}" for k in kappas)
        return (
            f"stabilizing predictions: kappa between consecutive rounds on the stop set >= "
            f"{threshold} for the last {window} round pairs ({shown})"
        )
    return None


# --------------------------------------------------------------------------- uncertainty
def pool_uncertainty(probs: Any, measure: str = "least_confidence", reduce: str = "mean") -> float:
    """Overall uncertainty of a model on a set of examples, from its class probabilities.

    ``probs``: [m, C], rows summing to 1 (m >= 1). Per-example uncertainty, each in [0, 1]:

    * ``least_confidence``: ``1 - max_c p`` (at most ``1 - 1/C``);
    * ``margin``: ``1 - (p_(1) - p_(2))``, the gap between the two largest probabilities
      (``p_(2) = 0`` when C = 1);
    * ``entropy``: ``-sum p log p / log C`` (0 when C = 1).

    ``reduce``: ``mean`` (overall uncertainty) or ``max`` (the least certain example).
    """
    if measure not in UNCERTAINTY_MEASURES:
        raise ValueError(f"pool_uncertainty: unknown measure {measure!r}; use one of {UNCERTAINTY_MEASURES}")
    if reduce not in ("mean", "max"):
        raise ValueError(f"pool_uncertainty: reduce must be 'mean' or 'max', got {reduce!r}")
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(f"pool_uncertainty: probs must be [m >= 1, C >= 1], got shape {p.shape}")
    if not np.isfinite(p).all():
        raise ValueError("pool_uncertainty: probs contain NaN or inf")
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise ValueError("pool_uncertainty: probs must be non-negative with rows summing to 1")
    c = p.shape[1]
    if measure == "least_confidence":
        u = 1.0 - p.max(axis=1)
    elif measure == "margin":
        if c == 1:
            u = 1.0 - p[:, 0]
        else:
            top2 = np.partition(p, c - 2, axis=1)[:, -2:]
            u = 1.0 - (top2[:, 1] - top2[:, 0])
    elif c == 1:
        u = np.zeros(p.shape[0])
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
        u = -plogp.sum(axis=1) / math.log(c)
    u = np.clip(u, 0.0, 1.0)
    return float(u.mean() if reduce == "mean" else u.max())


def uncertainty_below(history: Sequence[RoundRecord], threshold: float) -> str | None:
    """Stop when the last round's ``pool_uncertainty`` is below ``threshold`` (in (0, 1]).

    None when the last round has no ``pool_uncertainty`` (not measured: never stops).
    """
    if not (0.0 < threshold <= 1.0):
        raise ValueError(f"uncertainty rule: threshold must be in (0, 1], got {threshold!r}")
    if not history or history[-1].pool_uncertainty is None:
        return None
    last = history[-1]
    value = float(last.pool_uncertainty)
    if math.isnan(value):
        raise ValueError(f"round {last.round}: pool_uncertainty is NaN")
    if value < threshold:
        return f"pool uncertainty {value:.4f} < {threshold} under the round {last.round} model"
    return None


# --------------------------------------------------------------------------- forecast
def _inverse_power(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a - b * np.power(x, -c)


def _inverse_power_jac(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    xc = np.power(x, -c)
    return np.stack([np.ones_like(x), -xc, b * xc * np.log(x)], axis=1)


def _fit_inverse_power(n: np.ndarray, y: np.ndarray, lo: float, hi: float) -> tuple[float, float, float]:
    """Least-squares fit of ``y = a - b n^-c``, a in [lo, hi], b >= 0, 0 <= c <= _C_MAX.

    Fitted in units of the first label count (x = n / n[0]) for conditioning, from a fixed
    set of starting points; the lowest residual wins (first on ties). Raises RuntimeError
    when no start converges.
    """
    from scipy.optimize import OptimizeWarning, curve_fit

    scale = float(n[0])
    x = n / scale
    spread = float(y.max() - y.min())
    a0 = min(max(float(y.max()) + max(0.5 * spread, 0.01), lo), hi)
    best: tuple[float, np.ndarray] | None = None
    errors = []
    for c0 in (0.5, 1.0, 0.25, 2.0):
        b0 = max(a0 - float(y[0]), 1e-3)  # x[0] == 1, so a0 - b0 == y[0]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                popt, _ = curve_fit(
                    _inverse_power,
                    x,
                    y,
                    p0=[a0, b0, c0],
                    jac=_inverse_power_jac,
                    bounds=([lo, 0.0, 0.0], [hi, np.inf, _C_MAX]),
                    method="trf",
                    ftol=1e-12,
                    xtol=1e-12,
                    gtol=1e-12,
                    max_nfev=2000,
                )
        except (RuntimeError, ValueError) as exc:
            errors.append(str(exc))
            continue
        if not np.isfinite(popt).all():
            errors.append(f"non-finite parameters {popt.tolist()}")
            continue
        sse = float(np.sum((_inverse_power(x, *popt) - y) ** 2))
        if best is None or sse < best[0]:
            best = (sse, popt)
    if best is None:
        raise RuntimeError("; ".join(dict.fromkeys(errors)) or "no start converged")
    a, b_scaled, c = (float(v) for v in best[1])
    return a, b_scaled * scale**c, c  # b' (n/s)^-c == (b' s^c) n^-c


def forecast_gain(
    history: Sequence[RoundRecord],
    metric: str,
    min_gain_per_label: float,
    min_rounds: int = 3,
    model: str = "inverse_power",
    *,
    next_batch: int | None = None,
    metric_range: tuple[float, float] = (0.0, 1.0),
    max_rmse: float | None = None,
    patience: int = 1,
) -> tuple[str | None, dict[str, Any]]:
    """Forecast the metric after the next batch from a learning curve fitted to the history.

    Fits ``metric(n) = a - b * n**(-c)`` (``model="inverse_power"``, Figueroa et al. 2012)
    to the (``n_labels``, ``metric``) points of every round with ``n_labels > 0``, by
    bounded least squares (``scipy.optimize.curve_fit``, trf, analytic Jacobian) from fixed
    starting points: ``a`` in ``metric_range`` (the asymptote cannot pass the metric's
    maximum: [0, 1] for accuracy and macro F1), ``b >= 0``, ``0 <= c <= 10`` (c in units of
    the first label count), so the curve never decreases. The gain is the *curve's*,
    ``f(n_last + next_batch) - f(n_last)``, not the forecast minus the last observation, so
    one noisy round does not decide; the rule fires when ``gain / next_batch <
    min_gain_per_label``.

    ``next_batch``: labels the next round would add (the caller knows the batch size and what
    is left of the budget); None = the last round's increment.
    ``max_rmse``: optional; a fit whose RMSE exceeds it is reported (status ``poor_fit``) but
    never stops.
    ``patience``: fire only when the forecast made after each of the last ``patience`` rounds
    (each fitted on the history up to that round, each with >= ``min_rounds`` points) was
    below the threshold. With noisy metrics a 3-point fit often forecasts a flat curve; a
    larger ``min_rounds`` or ``patience`` guards against stopping on that.

    Returns ``(reason or None, forecast)``; the forecast is the one made after the last round.
    It always has ``status`` (``ok | too_few_points | no_next_batch | fit_failed |
    poor_fit``), ``message``, ``model``, ``metric``, ``points``, ``min_rounds``; with a fit
    also ``a, b, c, rmse, n_last, next_batch, n_next, predicted_last, predicted_next,
    predicted_gain, gain_per_label, min_gain_per_label, below, rounds_below`` (plain
    floats/ints/bools, ready for MLflow). A status other than ``ok`` never stops.
    """
    if model not in FORECAST_MODELS:
        raise ValueError(f"forecast: unknown model {model!r}; use one of {FORECAST_MODELS}")
    if not (isinstance(min_rounds, int | np.integer) and min_rounds >= 3):
        raise ValueError(
            f"forecast: min_rounds must be an integer >= 3 (the curve has 3 parameters), got {min_rounds!r}"
        )
    if not (math.isfinite(min_gain_per_label) and min_gain_per_label > 0):
        raise ValueError(f"forecast: min_gain_per_label must be a finite number > 0, got {min_gain_per_label!r}")
    lo, hi = (float(v) for v in metric_range)
    if math.isnan(lo) or math.isnan(hi) or not lo < hi:
        raise ValueError(f"forecast: metric_range must be (low, high) with low < high, got {metric_range!r}")
    if next_batch is not None and not (isinstance(next_batch, int | np.integer) and next_batch >= 1):
        raise ValueError(f"forecast: next_batch must be an integer >= 1, got {next_batch!r}")
    if max_rmse is not None and not (max_rmse > 0):
        raise ValueError(f"forecast: max_rmse must be > 0, got {max_rmse!r}")
    if not (isinstance(patience, int | np.integer) and patience >= 1):
        raise ValueError(f"forecast: patience must be an integer >= 1, got {patience!r}")

    values = _metric(history, metric)
    for rec, v in zip(history, values, strict=True):
        if not lo <= v <= hi:
            raise ValueError(f"round {rec.round}: {metric} {v} is outside the metric range [{lo}, {hi}]")
    args = (metric, float(min_gain_per_label), int(min_rounds), model, next_batch, lo, hi, max_rmse)
    fc = _forecast_once(history, values, *args)
    rounds_below = 0
    if fc.get("below"):
        rounds_below = 1
        while rounds_below < patience:
            k = len(history) - rounds_below
            earlier = _forecast_once(history[:k], values[:k], *args)
            if not earlier.get("below"):
                break
            rounds_below += 1
    if "below" in fc:
        fc["rounds_below"] = rounds_below
    if rounds_below < patience:
        if rounds_below:
            fc["message"] += f" (below the threshold after {rounds_below} of the {patience} rounds patience needs)"
        return None, fc
    streak = "" if patience == 1 else f" (and after each of the {patience - 1} rounds before)"
    return f"forecast gain too small: {fc['message']} < {min_gain_per_label:g} per label{streak}", fc


def _forecast_once(
    history: Sequence[RoundRecord],
    values: list[float],
    metric: str,
    min_gain_per_label: float,
    min_rounds: int,
    model: str,
    next_batch: int | None,
    lo: float,
    hi: float,
    max_rmse: float | None,
) -> dict[str, Any]:
    """One fit on ``history`` (already validated); ``below`` says whether it would stop."""
    pts = [(rec.n_labels, v) for rec, v in zip(history, values, strict=True) if rec.n_labels > 0]
    info: dict[str, Any] = {"model": model, "metric": metric, "points": len(pts), "min_rounds": min_rounds}
    if len(pts) < min_rounds:
        return {**info, "status": "too_few_points",
                "message": f"{len(pts)} rounds with labels < min_rounds {min_rounds}"}
    n = np.array([p[0] for p in pts], dtype=np.float64)
    y = np.array([p[1] for p in pts], dtype=np.float64)
    distinct = len(np.unique(n))
    if distinct < 3:
        return {**info, "status": "too_few_points",
                "message": f"only {distinct} distinct label counts; the curve needs 3"}
    n_last = int(history[-1].n_labels)
    if next_batch is None:
        next_batch = n_last - int(history[-2].n_labels)
        if next_batch < 1:
            return {**info, "status": "no_next_batch",
                    "message": f"the last round added {next_batch} labels; pass next_batch"}
    next_batch = int(next_batch)
    order = np.argsort(n, kind="stable")
    try:
        a, b, c = _fit_inverse_power(n[order], y[order], lo, hi)
    except RuntimeError as exc:
        return {**info, "status": "fit_failed", "message": f"learning-curve fit did not converge: {exc}"}
    rmse = float(np.sqrt(np.mean((_inverse_power(n, a, b, c) - y) ** 2)))
    pred_last = float(_inverse_power(np.float64(n_last), a, b, c))
    pred_next = float(_inverse_power(np.float64(n_last + next_batch), a, b, c))
    gain = pred_next - pred_last
    per_label = gain / next_batch
    summary = (
        f"{metric} {pred_last:.4f} -> {pred_next:.4f} over the next {next_batch} labels "
        f"({per_label:.3g} per label; curve a={a:.4f} b={b:.4g} c={c:.4f}, rmse {rmse:.4g})"
    )
    fc = {
        **info,
        "a": a, "b": b, "c": c, "rmse": rmse,
        "n_last": n_last, "next_batch": next_batch, "n_next": n_last + next_batch,
        "predicted_last": pred_last, "predicted_next": pred_next,
        "predicted_gain": gain, "gain_per_label": per_label, "min_gain_per_label": min_gain_per_label,
    }
    if max_rmse is not None and rmse > max_rmse:
        return {**fc, "status": "poor_fit", "below": False,
                "message": f"fit rmse {rmse:.4g} > max_rmse {max_rmse}: {summary}"}
    return {**fc, "status": "ok", "below": per_label < min_gain_per_label, "message": summary}


# --------------------------------------------------------------------------- decide
def _forecast_kwargs(rule: Sequence[Any] | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(rule, Mapping):
        return dict(rule)
    names = ("metric", "min_gain_per_label", "min_rounds", "next_batch")
    if not 2 <= len(rule) <= len(names):
        raise ValueError(
            "forecast_rule must be (metric, min_gain_per_label[, min_rounds[, next_batch]]) "
            f"or a mapping of forecast_gain arguments, got {rule!r}"
        )
    return dict(zip(names, rule, strict=False))


def decide(
    history: Sequence[RoundRecord],
    *,
    budget: int,
    pool_size: int,
    max_rounds: int | None = None,
    plateau_rule: tuple[str, int, float] | None = None,
    target_rule: tuple[str, float] | None = None,
    kappa_rule: tuple[float, int] | None = None,
    uncertainty_rule: float | None = None,
    forecast_rule: Sequence[Any] | Mapping[str, Any] | None = None,
) -> StopDecision:
    """Apply every configured rule; the first in ``RULE_ORDER`` that fires decides.

    Order: target, plateau, kappa (``stabilizing_predictions``, ``kappa_rule=(threshold,
    window)``), uncertainty (``uncertainty_below``, ``uncertainty_rule=threshold``), forecast
    (``forecast_gain``, ``forecast_rule=(metric, min_gain_per_label[, min_rounds[,
    next_batch]])`` or a mapping of its keyword arguments), budget, pool, max_rounds.
    Every configured rule is evaluated (so a bad argument fails even when an earlier rule
    fires), and ``StopDecision.forecast`` carries the forecast whenever it is configured.
    """
    checks: list[tuple[str, str | None]] = []
    forecast: dict[str, Any] | None = None
    if target_rule is not None:
        checks.append(("target", target_reached(history, *target_rule)))
    if plateau_rule is not None:
        checks.append(("plateau", plateau(history, *plateau_rule)))
    if kappa_rule is not None:
        checks.append(("kappa", stabilizing_predictions(history, *kappa_rule)))
    if uncertainty_rule is not None:
        checks.append(("uncertainty", uncertainty_below(history, uncertainty_rule)))
    if forecast_rule is not None:
        reason, forecast = forecast_gain(history, **_forecast_kwargs(forecast_rule))
        checks.append(("forecast", reason))
    checks.append(("budget", budget_exhausted(history, budget)))
    checks.append(("pool", pool_exhausted(history, pool_size)))
    if max_rounds is not None:
        checks.append(("max_rounds", max_rounds_reached(history, max_rounds)))
    for rule, reason in checks:
        if reason is not None:
            return StopDecision(stop=True, rule=rule, reason=reason, forecast=forecast)
    return StopDecision(stop=False, forecast=forecast)
