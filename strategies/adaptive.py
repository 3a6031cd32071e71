"""Adaptive selection: strategies that choose other strategies, from the campaign history.

Both keep no state of their own. Everything they decide follows from ``inputs.history``
(finished rounds, read from the campaign store) and the ``rng`` of the round, so a
re-run or resumed round decides exactly as it did the first time.

``schedule``
    Diversity-heavy while the model is immature, uncertainty-heavy after. Maturity is a
    configurable rule over the labels so far and the agreement between the last two
    rounds' predictions on the held-out set; the share of the batch each side gets in each
    phase is configurable (1/0 switches outright; 0.5/0.1 blends). The phase and the
    reason are recorded for the round.
``bandit``
    EXP3 over registered strategies (the arms), in the spirit of Active Learning by
    Learning (Hsu & Lin, 2015): each round draws one arm from the exponential-weights
    distribution mixed with uniform exploration; the reward of an arm's round is the
    change of the evaluation metric it led to, mapped to [0, 1]. The evaluation set is
    labeled already, so the signal costs no label beyond what the loop has (it does mean
    the selection sees evaluation results: the final metric is then a slightly optimistic
    estimate, as with any choice tuned on a validation set). Weights are rebuilt each round
    by replaying the recorded choices, their probabilities and the rewards.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from strategies.base import (
    InvalidInputError,
    PastRound,
    QueryInputs,
    Selection,
    Strategy,
)
from strategies.registry import (
    StrategyOptionError,
    UnknownStrategyError,
    get_strategy,
    register,
)

__all__ = ["bandit_state", "exp3_probabilities", "schedule_phase"]


def _rest(inputs: QueryInputs, taken_rows: np.ndarray) -> tuple[QueryInputs, np.ndarray]:
    """Inputs without candidate rows ``taken_rows`` (now counted as labeled) and the rows kept.

    The second value maps the new inputs' row positions back to the original ones.
    """
    keep = np.setdiff1d(np.arange(inputs.n_candidates), taken_rows)
    sub = inputs.with_candidates(keep)
    labeled = np.concatenate([inputs.labeled, inputs.unlabeled[taken_rows]])
    # replace() keeps every model input, including ones added after this was written
    return dataclasses.replace(sub, labeled=labeled), keep


def _rows_of(inputs: QueryInputs, pool_ids: np.ndarray) -> np.ndarray:
    """Row positions of ``pool_ids`` (pool ids, all present among the candidates)."""
    order = np.argsort(inputs.unlabeled)
    pos = np.searchsorted(inputs.unlabeled, pool_ids, sorter=order)
    return order[pos]


# --------------------------------------------------------------------------- schedule
def schedule_phase(
    history: Sequence[PastRound],
    n_labeled: int,
    *,
    switch_labels: int | None,
    switch_agreement: float | None,
) -> tuple[str, str]:
    """``("early" | "late", reason)``: late once every configured maturity condition holds.

    ``n_labeled`` counts labeled and already-selected pool ids. Agreement comes from the
    newest finished round; where none is known yet the model counts as immature.
    """
    reasons = []
    mature = True
    if switch_labels is not None:
        ok = n_labeled >= switch_labels
        mature &= ok
        reasons.append(f"{n_labeled} labels {'>=' if ok else '<'} {switch_labels}")
    if switch_agreement is not None:
        agreement = history[-1].agreement if history else None
        if agreement is None:
            mature = False
            reasons.append("no agreement between rounds measured yet")
        else:
            ok = agreement >= switch_agreement
            mature &= ok
            reasons.append(
                f"agreement {agreement:.3f} {'>=' if ok else '<'} {switch_agreement}"
            )
    return ("late" if mature else "early"), "; ".join(reasons)


def _schedule_selector(
    early: Strategy,
    late: Strategy,
    early_share: Mapping[str, float],
    switch_labels: int | None,
    switch_agreement: float | None,
):
    def select(
        scores: np.ndarray | None, inputs: QueryInputs, k: int, rng: np.random.Generator
    ) -> Selection:
        phase, reason = schedule_phase(
            inputs.history,
            int(inputs.labeled.size),
            switch_labels=switch_labels,
            switch_agreement=switch_agreement,
        )
        k_early = int(round(k * early_share[phase]))
        k_late = k - k_early
        rows_parts, score_parts = [], []
        rest, keep = inputs, np.arange(inputs.n_candidates)
        # Uncertainty first, then diversity around what it took: the diverse part then
        # also keeps away from the uncertain picks (they count as labeled for it).
        for strategy, n in ((late, k_late), (early, k_early)):
            if n == 0:
                continue
            q = strategy.query(rest, n, rng)
            sub_rows = _rows_of(rest, q.pool_ids)
            rows_parts.append(keep[sub_rows])
            score_parts.append(q.scores)
            rest, kept = _rest(rest, sub_rows)
            keep = keep[kept]
        arm = late.name if k_early == 0 else early.name if k_late == 0 else f"{late.name}+{early.name}"
        return Selection(
            rows=np.concatenate(rows_parts),
            scores=np.concatenate(score_parts),
            info={
                "arm": arm,
                "phase": phase,
                "reason": reason,
                "early": early.name,
                "late": late.name,
                "k_early": k_early,
                "k_late": k_late,
            },
        )

    return select


# --------------------------------------------------------------------------- bandit
def exp3_probabilities(log_weights: np.ndarray, gamma: float) -> np.ndarray:
    """EXP3's arm distribution: exponential weights mixed with ``gamma`` uniform exploration."""
    w = np.exp(log_weights - log_weights.max())  # [A], shifted: only ratios matter
    return (1.0 - gamma) * w / w.sum() + gamma / log_weights.size


def reward_of(delta: float, scale: float) -> float:
    """A metric change mapped to [0, 1]: 0.5 for no change, 1 at ``+scale`` or more."""
    return float(min(1.0, max(0.0, 0.5 + delta / (2.0 * scale))))


def bandit_state(
    history: Sequence[PastRound],
    arms: Sequence[str],
    *,
    gamma: float,
    metric: str,
    reward_scale: float,
) -> dict[str, Any]:
    """Replay the bandit's recorded pulls: log-weights, the current distribution, rewards.

    A pull is a round whose ``selection_info`` has ``policy == "exp3"``; its reward is the
    change of ``metric`` from the round before it to it. A pull whose round (or the one
    before) has no such metric is skipped: no reward was observed.
    """
    log_w = np.zeros(len(arms))  # [A]
    index = {a: i for i, a in enumerate(arms)}
    by_round = {h.round: h for h in history}
    pulls: list[dict[str, Any]] = []
    for h in history:
        info = h.selection_info or {}
        if info.get("policy") != "exp3" or info.get("arm") not in index:
            continue
        before = by_round.get(h.round - 1)
        if before is None or metric not in h.metrics or metric not in before.metrics:
            continue
        delta = float(h.metrics[metric]) - float(before.metrics[metric])
        if math.isnan(delta):
            raise InvalidInputError(f"round {h.round}: metric '{metric}' is NaN")
        r = reward_of(delta, reward_scale)
        p = float(info.get("probability", 0.0))
        if not 0.0 < p <= 1.0:
            raise InvalidInputError(
                f"round {h.round}: recorded bandit probability {p} is outside (0, 1]"
            )
        # Importance-weighted reward estimate: unbiased for every arm, pulled or not.
        log_w[index[info["arm"]]] += gamma * (r / p) / len(arms)
        pulls.append({"round": h.round, "arm": info["arm"], "delta": delta, "reward": r})
    return {"log_weights": log_w, "probabilities": exp3_probabilities(log_w, gamma), "pulls": pulls}


def _bandit_selector(
    arms: Sequence[Strategy], gamma: float, metric: str, reward_scale: float
):
    names = [a.name for a in arms]

    def select(
        scores: np.ndarray | None, inputs: QueryInputs, k: int, rng: np.random.Generator
    ) -> Selection:
        state = bandit_state(
            inputs.history, names, gamma=gamma, metric=metric, reward_scale=reward_scale
        )
        probs = state["probabilities"]
        choice = int(rng.choice(len(arms), p=probs))
        q = arms[choice].query(inputs, k, rng)
        last = state["pulls"][-1] if state["pulls"] else None
        return Selection(
            rows=_rows_of(inputs, q.pool_ids),
            scores=q.scores,
            info={
                "policy": "exp3",
                "arm": names[choice],
                "probability": float(probs[choice]),
                "probabilities": {n: float(p) for n, p in zip(names, probs, strict=True)},
                "last_reward": None if last is None else last["reward"],
                "last_arm": None if last is None else last["arm"],
                "pulls": {n: sum(1 for p in state["pulls"] if p["arm"] == n) for n in names},
            },
        )

    return select


# --------------------------------------------------------------------------- registry

_ADAPTIVE = {"schedule", "bandit"}


def _arm(name: Any, option: str, owner: str) -> Strategy:
    if not isinstance(name, str):
        raise StrategyOptionError(f"{owner} option {option} must name a strategy, got {name!r}")
    if name in _ADAPTIVE:
        raise StrategyOptionError(f"{owner} option {option} cannot be another adaptive strategy ({name})")
    try:
        return get_strategy(name)
    except UnknownStrategyError as exc:
        raise StrategyOptionError(f"{owner} option {option}: {exc}") from None


@register(
    "schedule",
    "diversity while the model is immature (few labels / rounds disagree), uncertainty after; "
    "shares per phase configurable",
)
def _schedule(
    early: str = "kcenter",
    late: str = "margin",
    switch_labels: int | None = 500,
    switch_agreement: float | None = 0.9,
    early_share: float = 1.0,
    late_share: float = 0.0,
) -> Strategy:
    e, lt = _arm(early, "early", "schedule"), _arm(late, "late", "schedule")
    if switch_labels is None and switch_agreement is None:
        raise StrategyOptionError(
            "schedule needs a switch rule: set switch_labels, switch_agreement or both"
        )
    if switch_labels is not None and (not isinstance(switch_labels, int) or switch_labels < 1):
        raise StrategyOptionError(f"schedule option switch_labels must be >= 1, got {switch_labels!r}")
    if switch_agreement is not None and not 0.0 < float(switch_agreement) <= 1.0:
        raise StrategyOptionError(
            f"schedule option switch_agreement must be in (0, 1], got {switch_agreement!r}"
        )
    for opt, v in (("early_share", early_share), ("late_share", late_share)):
        if not 0.0 <= float(v) <= 1.0:
            raise StrategyOptionError(f"schedule option {opt} must be in [0, 1], got {v!r}")
    select = _schedule_selector(
        e,
        lt,
        {"early": float(early_share), "late": float(late_share)},
        switch_labels,
        None if switch_agreement is None else float(switch_agreement),
    )
    return Strategy(name="schedule", selector=select, needs=e.needs | lt.needs)


@register(
    "bandit",
    "EXP3 over registered strategies, rewarded by the metric change each choice led to "
    "(Active Learning by Learning style)",
)
def _bandit(
    arms: tuple[str, ...] | list[str] = ("margin", "entropy", "kcenter", "random"),
    gamma: float = 0.2,
    metric: str = "accuracy",
    reward_scale: float = 0.02,
) -> Strategy:
    if isinstance(arms, str) or len(arms) < 2:
        raise StrategyOptionError(f"bandit option arms needs at least 2 strategies, got {arms!r}")
    if len(set(arms)) != len(arms):
        raise StrategyOptionError(f"bandit option arms lists a strategy twice: {list(arms)}")
    built = [_arm(a, "arms", "bandit") for a in arms]
    if not 0.0 < float(gamma) <= 1.0:
        raise StrategyOptionError(f"bandit option gamma must be in (0, 1], got {gamma!r}")
    if not float(reward_scale) > 0.0:
        raise StrategyOptionError(f"bandit option reward_scale must be > 0, got {reward_scale!r}")
    needs = frozenset().union(*(b.needs for b in built))
    return Strategy(
        name="bandit",
        selector=_bandit_selector(built, float(gamma), str(metric), float(reward_scale)),
        needs=needs,
    )
