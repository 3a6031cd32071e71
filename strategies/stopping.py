"""Stop rules: pure functions of the campaign history.

The history is a sequence of ``RoundRecord`` (one per finished round, in round order),
read from the campaign store, so a resumed or re-triggered campaign decides exactly as an
uninterrupted one would. Each rule returns a human-readable reason, or None to continue.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "RoundRecord",
    "StopDecision",
    "budget_exhausted",
    "decide",
    "max_rounds_reached",
    "plateau",
    "pool_exhausted",
    "target_reached",
]


@dataclass(frozen=True)
class RoundRecord:
    """What one finished round left behind: its number, total labels so far, its metrics."""

    round: int
    n_labels: int
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StopDecision:
    """``stop`` and, when stopping, the rule that fired and why."""

    stop: bool
    rule: str | None = None
    reason: str | None = None


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


def decide(
    history: Sequence[RoundRecord],
    *,
    budget: int,
    pool_size: int,
    max_rounds: int | None = None,
    plateau_rule: tuple[str, int, float] | None = None,
    target_rule: tuple[str, float] | None = None,
) -> StopDecision:
    """Apply every configured rule in a fixed order; the first that fires decides."""
    checks: list[tuple[str, str | None]] = []
    if target_rule is not None:
        checks.append(("target", target_reached(history, *target_rule)))
    if plateau_rule is not None:
        checks.append(("plateau", plateau(history, *plateau_rule)))
    checks.append(("budget", budget_exhausted(history, budget)))
    checks.append(("pool", pool_exhausted(history, pool_size)))
    if max_rounds is not None:
        checks.append(("max_rounds", max_rounds_reached(history, max_rounds)))
    for rule, reason in checks:
        if reason is not None:
            return StopDecision(stop=True, rule=rule, reason=reason)
    return StopDecision(stop=False)
