"""``oracle.kind: mixed``: which proposals are accepted without a human, calibrated on people's labels.

The rule, per round, decided once with the round's proposals (``alft.campaign.prelabel``):

* **Calibration set**: every example of the campaign that has a proposal of the configured
  source with a confidence, a proposal that agreed with the classifier's prediction, and a
  human label (any source but ``auto``). An example is *correct* when the human label equals
  the proposal. Only rounds before the current one contribute (their labels are final).
* **Threshold**: for a candidate ``t`` (each confidence value in the set), ``S_t`` = the set's
  examples with confidence >= t, ``n_t`` = their number, ``e_t`` = the incorrect ones; the
  estimate is the one-sided Clopper-Pearson upper bound ``U(e_t, n_t)`` at level
  ``oracle.mixed.confidence``. ``t*`` = the smallest ``t`` with ``n_t >=
  oracle.mixed.min_calibration`` and ``U(e_t, n_t) <= oracle.mixed.max_error``. Without such a
  ``t`` (too few labels, or too many errors) nothing is auto-accepted. Zero errors need
  n >= 149 for a 2 % bound at 95 %: mixed starts accepting only once people have labeled
  that many agreeing proposals.
* **This round**: a proposal with confidence >= t* that agrees with the classifier would be
  auto-accepted. ``ceil(audit_share * n)`` of those ``n`` (drawn uniformly with
  ``rng(seed, round, RNG_AUDIT)``) go to people instead, without their proposal shown (a blind
  audit: a shown proposal anchors the answer); their measured error is logged each round.

Everything here is a pure function of arrays; the store side is in ``alft.campaign.prelabel``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

AUTO = "auto"
AUDIT = "audit"


def clopper_pearson_upper(errors: np.ndarray | int, n: np.ndarray | int, level: float) -> np.ndarray:
    """One-sided upper confidence bound (at ``level``) of an error rate seen as ``errors`` of ``n``.

    ``n == 0`` gives 1 (nothing is known); ``errors == n`` gives 1.
    """
    from scipy.stats import beta

    e = np.asarray(errors, dtype=np.float64)
    m = np.asarray(n, dtype=np.float64)
    out = np.ones(np.broadcast(e, m).shape, dtype=np.float64)
    ok = np.broadcast_to(m > e, out.shape)
    if ok.any():
        eb, mb = np.broadcast_to(e, out.shape), np.broadcast_to(m, out.shape)
        out[ok] = beta.ppf(level, eb[ok] + 1, mb[ok] - eb[ok])
    return out


@dataclass(frozen=True)
class Threshold:
    """The calibrated threshold (``t`` None: none qualifies) and the numbers behind it."""

    t: float | None
    n: int  # calibration examples at or above t (all of them when t is None)
    errors: int  # of those, proposals the human label contradicted
    upper: float  # their error rate's upper bound (at t; at the lowest confidence when t is None)
    n_calibration: int  # the whole calibration set

    def as_info(self) -> dict:
        return {
            "threshold": self.t,
            "calibration_n": self.n_calibration,
            "n_at_threshold": self.n,
            "errors_at_threshold": self.errors,
            "error_upper_bound": None if math.isnan(self.upper) else round(self.upper, 6),
        }


def auto_threshold(
    confidence: np.ndarray,
    correct: np.ndarray,
    *,
    max_error: float,
    min_labels: int,
    level: float,
) -> Threshold:
    """The smallest confidence threshold whose proposals' error upper bound is <= ``max_error``.

    ``confidence``: float[m], the calibration examples' proposal confidences (already limited
    to proposals that agreed with the classifier); ``correct``: bool[m], the human label equals
    the proposal. See the module docstring for the rule.
    """
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    ok = np.asarray(correct, dtype=bool).reshape(-1)
    if conf.shape != ok.shape:
        raise ValueError(f"{conf.size} confidences for {ok.size} correctness flags")
    if not np.isfinite(conf).all():
        raise ValueError("a calibration confidence is not finite")
    m = conf.size
    if m == 0:
        return Threshold(None, 0, 0, 1.0, 0)
    order = np.argsort(-conf, kind="stable")  # highest confidence first
    c_sorted = conf[order]
    n_at = np.arange(1, m + 1)  # [m] examples with confidence >= c_sorted[i] (before ties)
    e_at = np.cumsum(~ok[order])  # [m]
    # a threshold keeps every tie of its value: evaluate at the last position of each value
    last = np.r_[c_sorted[1:] != c_sorted[:-1], True]
    t_vals, n_vals, e_vals = c_sorted[last], n_at[last], e_at[last]
    upper = clopper_pearson_upper(e_vals, n_vals, level)
    good = (n_vals >= min_labels) & (upper <= max_error)
    if not good.any():
        return Threshold(None, int(m), int(e_at[-1]), float(upper[-1]), int(m))
    i = int(np.flatnonzero(good)[-1])  # values descend: the last qualifying one is the smallest t
    return Threshold(float(t_vals[i]), int(n_vals[i]), int(e_vals[i]), float(upper[i]), int(m))


def audit_size(share: float, n: int) -> int:
    """Would-be-auto examples sent to people: ``ceil(share * n)`` (so every round that would
    accept something is audited when ``share > 0``)."""
    if share <= 0 or n <= 0:
        return 0
    return min(n, math.ceil(share * n - 1e-12))


def decide(
    confidence: np.ndarray,
    agrees: np.ndarray,
    threshold: float | None,
    audit_share: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Per proposal of this round: ``auto``, ``audit`` or None (people label it, proposal shown).

    ``confidence``: float[k] (NaN where there is none), ``agrees``: bool[k], whether the
    classifier predicts the proposed label. Rows follow the batch.
    """
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    agree = np.asarray(agrees, dtype=bool).reshape(-1)
    out = np.full(conf.size, None, dtype=object)
    if threshold is None:
        return out
    eligible = np.flatnonzero(agree & np.isfinite(conf) & (conf >= threshold))
    n_audit = audit_size(audit_share, eligible.size)
    audited = rng.permutation(eligible)[:n_audit] if n_audit else np.empty(0, dtype=np.int64)
    out[eligible] = AUTO
    out[audited] = AUDIT
    return out
