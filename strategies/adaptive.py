"""Adaptive selection: strategies that choose other strategies, from the campaign history.

Both keep no state of their own. Everything they decide follows from ``inputs.history``
(finished rounds, read from the campaign store) and the ``rng`` of the round, so a
re-run or resumed round decides exactly as it did the first time.

``schedule``
    Diversity-heavy while the model is immature, uncertainty-heavy after. Maturity is a
    configurable rule over measured signals: the share of the label set the labels cover
    (default: diversity until 95 % of the classes have a label, because uncertainty cannot
    find a class the model has never seen), the agreement between the last two rounds'
    predictions on the held-out set, and, if asked, a label count; the share of the batch
    each side gets in each phase is configurable (1/0 switches outright; 0.5/0.1 blends).
    The phase and the reason are recorded for the round.
``bandit``
    Thompson sampling over registered strategies (the arms), in the spirit of Active
    Learning by Learning (Hsu & Lin, 2015) but rewarded from the labels alone: the reward
    of an arm's round is how much more often than the model expected its batch held the
    model's mistakes, ``PastRound.batch_error - PastRound.expected_error`` (the labels
    people gave against the top class of the model that scored the batch, minus that
    model's own mean ``1 - max p`` over all candidates, which takes out the fall of every
    arm's error rate as the model improves). The evaluation split is never read, so a
    bandit campaign's final metric stays an honest estimate. Each arm's mean reward has a
    Gaussian posterior (prior: the mean of every reward so far, sd ``prior_sd``; a round's
    reward varies by ``noise``); each round draws one value per arm from the posteriors
    with the round's ``rng`` and takes the largest, so an arm that keeps paying is chosen
    more and more, and one never tried is still drawn from the prior. The state is
    rebuilt each round by replaying the recorded choices and rewards.
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

__all__ = ["bandit_reward", "bandit_state", "schedule_phase"]


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
def _meets(threshold: float | None, value: float | None, name: str, unmeasured: str, tol: float, reasons: list) -> bool:
    """Whether a measured maturity signal reaches ``threshold`` (True when not configured; False
    while unmeasured), appending the reason."""
    if threshold is None:
        return True
    if value is None:
        reasons.append(unmeasured)
        return False
    ok = value >= threshold - tol
    reasons.append(f"{name} {value:.3f} {'>=' if ok else '<'} {threshold:g}")
    return ok


def schedule_phase(
    history: Sequence[PastRound],
    n_labeled: int,
    *,
    switch_labels: int | None,
    switch_agreement: float | None,
    switch_coverage: float | None = None,
) -> tuple[str, str]:
    """``("early" | "late", reason)``: late once every configured maturity condition holds.

    ``n_labeled`` counts labeled and already-selected pool ids. Coverage and agreement come
    from the newest finished round; where one is not known yet the model counts as immature.
    """
    last = history[-1] if history else None
    reasons: list[str] = []
    mature = _meets(switch_coverage, last and last.class_coverage, "class coverage",
                    "class coverage not measured yet", 1e-12, reasons)
    if switch_labels is not None:
        ok = n_labeled >= switch_labels
        mature &= ok
        reasons.append(f"{n_labeled} labels {'>=' if ok else '<'} {switch_labels}")
    mature &= _meets(switch_agreement, last and last.agreement, "agreement",
                     "no agreement between rounds measured yet", 0.0, reasons)
    return ("late" if mature else "early"), "; ".join(reasons)


def _schedule_selector(
    early: Strategy,
    late: Strategy,
    early_share: Mapping[str, float],
    switch_labels: int | None,
    switch_agreement: float | None,
    switch_coverage: float | None,
):
    def select(
        scores: np.ndarray | None, inputs: QueryInputs, k: int, rng: np.random.Generator
    ) -> Selection:
        phase, reason = schedule_phase(
            inputs.history,
            int(inputs.labeled.size),
            switch_labels=switch_labels,
            switch_agreement=switch_agreement,
            switch_coverage=switch_coverage,
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
def bandit_reward(h: PastRound) -> float | None:
    """A finished round's reward: ``batch_error - expected_error`` (in [-1, 1]), or None when
    the round has no such numbers (round 0, nothing labeled)."""
    if h.batch_error is None or h.expected_error is None:
        return None
    r = float(h.batch_error) - float(h.expected_error)
    if math.isnan(r):
        raise InvalidInputError(f"round {h.round}: the bandit's reward is NaN")
    return r


def bandit_state(
    history: Sequence[PastRound], arms: Sequence[str], *, prior_sd: float, noise: float
) -> dict[str, Any]:
    """Replay the bandit's recorded pulls: per arm the posterior mean and sd of its reward.

    A pull is a round whose ``selection_info`` has ``policy == "thompson"`` and an ``arm``
    of ``arms``; a pull without a reward (``bandit_reward`` None) is counted but teaches
    nothing. The prior mean is the mean of every observed reward (0 before any).
    Arrays follow ``arms``' order: ``mean`` and ``sd`` float64[A], ``n`` int[A].
    """
    index = {a: i for i, a in enumerate(arms)}
    pulls: list[dict[str, Any]] = []
    for h in history:
        info = h.selection_info or {}
        if info.get("policy") != "thompson" or info.get("arm") not in index:
            continue
        pulls.append({"round": h.round, "arm": info["arm"], "reward": bandit_reward(h)})
    seen = [p for p in pulls if p["reward"] is not None]
    total = np.zeros(len(arms))  # [A]
    n = np.zeros(len(arms), dtype=np.int64)  # [A]
    for p in seen:
        total[index[p["arm"]]] += p["reward"]
        n[index[p["arm"]]] += 1
    prior = float(np.mean([p["reward"] for p in seen])) if seen else 0.0
    precision = 1.0 / prior_sd**2 + n / noise**2  # [A]
    mean = (prior / prior_sd**2 + total / noise**2) / precision  # [A]
    return {"mean": mean, "sd": 1.0 / np.sqrt(precision), "n": n, "prior": prior, "pulls": pulls}


def _bandit_selector(arms: Sequence[Strategy], prior_sd: float, noise: float):
    names = [a.name for a in arms]

    def select(
        scores: np.ndarray | None, inputs: QueryInputs, k: int, rng: np.random.Generator
    ) -> Selection:
        state = bandit_state(inputs.history, names, prior_sd=prior_sd, noise=noise)
        draws = rng.normal(state["mean"], state["sd"])  # [A], one posterior sample per arm
        choice = int(np.argmax(draws))  # ties: the first arm listed
        q = arms[choice].query(inputs, k, rng)
        last = state["pulls"][-1] if state["pulls"] else None
        return Selection(
            rows=_rows_of(inputs, q.pool_ids),
            scores=q.scores,
            info={
                "policy": "thompson",
                "arm": names[choice],
                "draws": {n: float(d) for n, d in zip(names, draws, strict=True)},
                "posterior_mean": {n: float(m) for n, m in zip(names, state["mean"], strict=True)},
                "posterior_sd": {n: float(v) for n, v in zip(names, state["sd"], strict=True)},
                "last_reward": None if last is None else last["reward"],
                "last_arm": None if last is None else last["arm"],
                "pulls": {n: sum(p["arm"] == n for p in state["pulls"]) for n in names},
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
    "diversity until the labels cover the classes (and, if set, rounds agree), uncertainty after; "
    "shares per phase configurable",
)
def _schedule(
    early: str = "kmeans",
    late: str = "margin",
    switch_coverage: float | None = 0.95,
    switch_agreement: float | None = None,
    switch_labels: int | None = None,
    early_share: float = 1.0,
    late_share: float = 0.0,
) -> Strategy:
    e, lt = _arm(early, "early", "schedule"), _arm(late, "late", "schedule")
    if switch_labels is None and switch_agreement is None and switch_coverage is None:
        raise StrategyOptionError(
            "schedule needs a switch rule: set switch_coverage, switch_agreement or switch_labels"
        )
    if switch_coverage is not None and not 0.0 < float(switch_coverage) <= 1.0:
        raise StrategyOptionError(
            f"schedule option switch_coverage must be in (0, 1], got {switch_coverage!r}"
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
        None if switch_coverage is None else float(switch_coverage),
    )
    return Strategy(name="schedule", selector=select, needs=e.needs | lt.needs)


@register(
    "bandit",
    "Thompson sampling over registered strategies, rewarded by how much more often than the model "
    "expected each batch held its mistakes (labels only, never the eval split)",
)
def _bandit(
    arms: tuple[str, ...] | list[str] = ("margin", "entropy", "kcenter", "random"),
    prior_sd: float = 0.1,
    noise: float = 0.05,
) -> Strategy:
    if isinstance(arms, str) or len(arms) < 2:
        raise StrategyOptionError(f"bandit option arms needs at least 2 strategies, got {arms!r}")
    if len(set(arms)) != len(arms):
        raise StrategyOptionError(f"bandit option arms lists a strategy twice: {list(arms)}")
    built = [_arm(a, "arms", "bandit") for a in arms]
    for opt, v in (("prior_sd", prior_sd), ("noise", noise)):
        if not (isinstance(v, (int, float)) and math.isfinite(float(v)) and float(v) > 0.0):
            raise StrategyOptionError(f"bandit option {opt} must be a finite number > 0, got {v!r}")
    # the reward compares the batch's labels with the scoring model's top class: probabilities
    needs = frozenset({"probs"}).union(*(b.needs for b in built))
    return Strategy(
        name="bandit",
        selector=_bandit_selector(built, float(prior_sd), float(noise)),
        needs=needs,
    )
