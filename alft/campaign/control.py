"""The random control arm (``strategy.control_share``): what it draws and what it measures.

Design
------
In every round ``r >= 1`` with batch size ``k``, ``c = control_size(share, k)`` places of the
batch go to a control arm and ``k - c`` to the strategy:

* the strategy is asked for ``k - c`` examples with the round's usual generator
  ``rng(seed, r, RNG_SELECT)`` and the usual inputs, so the control arm never changes
  what the strategy sees or draws;
* the control examples are a simple random sample without replacement of size ``c`` from
  ``U \\ S``: ``U`` the round's candidates (the unlabeled pool when the round starts), ``S``
  the strategy's picks; drawn from a separate stream ``rng(seed, r, RNG_CONTROL)``;
* the ``c`` control places inside the batch are drawn from the same stream, and the two
  arms keep their own order, so an annotator reading the batch in order cannot tell a
  control example by where it sits (the labeling page does not name the arm either).

Estimator
---------
Let ``f`` be the model trained in round ``r - 1`` (it chose the strategy's picks), ``N' =
|U \\ S|``, ``n`` the labeled control examples and ``a_i = [f(x_i) = y_i]`` for them. Then

* ``control.accuracy = mean(a_i)`` is an unbiased estimate of ``f``'s accuracy on ``U \\ S``
  (simple random sampling), with standard error ``control.accuracy_se =
  sqrt((1 - n / N') * p (1 - p) / (n - 1))`` (finite-population correction; ``n >= 2``);
* ``control.pool_accuracy = (|S| acc_S + N' * control.accuracy) / (|S| + N')`` is an unbiased
  estimate of ``f``'s accuracy on the whole of ``U`` (``S`` is observed in full: a stratified
  estimate with one stratum measured exactly); it needs every strategy pick labeled, and is
  left out otherwise;
* ``control.strategy_error = 1 - acc_S`` and ``control.random_error = 1 - control.accuracy``:
  how often ``f`` was wrong on what the strategy chose versus on a random draw;
  ``control.error_lift`` is their difference. An uncertainty strategy that works picks
  examples its model gets wrong far more often than a random one (a positive lift); a lift
  near zero says the strategy's picks were no more informative, in this sense, than random.
* ``control.n`` the labeled control examples, ``control.strategy_n`` the labeled strategy picks.

Unbiasedness assumes the control examples that get labeled are not chosen by their content:
always true for a complete batch; a deadline that lets a round go on with part of a batch
(``oracle.min_fraction``) keeps it only if people label in the page's order or at random.
These numbers describe the *previous* round's model on the *unlabeled pool*; the ``accuracy``
of the same round is the *new* model on the *eval split*.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

CONTROL = "random-control"  # the selections rows' strategy for the control arm


def control_size(share: float, k: int) -> int:
    """Control examples in a batch of ``k``: ``round(share * k)`` (halves round up), at most
    ``k - 1`` so the strategy keeps at least one place; 0 when ``share`` is 0."""
    if share <= 0 or k <= 1:
        return 0
    return min(int(math.floor(share * k + 0.5)), k - 1)


def draw_control(
    rng: np.random.Generator, candidates: np.ndarray, strategy_picks: np.ndarray, c: int, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The control arm of one batch.

    ``candidates``: int64[m] pool ids of the round's candidates; ``strategy_picks``: int64[k - c]
    pool ids the strategy chose. Returns ``(control pool ids [c], strategy positions [k - c],
    control positions [c])``: a uniform sample without replacement from the candidates the
    strategy did not pick, and the places of both arms in the batch (each arm keeps its order).
    """
    picks = np.asarray(strategy_picks, dtype=np.int64)
    if picks.size + c != k:
        raise ValueError(f"{picks.size} strategy picks + {c} control examples != batch of {k}")
    rest = np.setdiff1d(np.asarray(candidates, dtype=np.int64), picks)  # sorted: order-free draw
    if rest.size < c:
        raise ValueError(f"{rest.size} candidates left for {c} control examples")
    control = rng.choice(rest, size=c, replace=False) if c else np.empty(0, dtype=np.int64)
    slots = np.sort(rng.choice(k, size=c, replace=False)) if c else np.empty(0, dtype=np.int64)
    is_control = np.zeros(k, dtype=bool)
    is_control[slots] = True
    return control.astype(np.int64), np.flatnonzero(~is_control), slots.astype(np.int64)


def control_metrics(
    strategy_correct: Sequence[bool], control_correct: Sequence[bool], n_rest: int, n_strategy: int | None = None
) -> dict[str, float]:
    """The control arm's numbers (see the module docstring) from per-example correctness.

    ``strategy_correct`` / ``control_correct``: whether the previous model predicted each
    labeled strategy pick / control example right; ``n_rest`` = ``|U \\ S|``, the candidates
    the strategy did not pick (the control arm's population); ``n_strategy`` = ``|S|``, the
    strategy's picks (default: all labeled). Empty when no control example is labeled.
    """
    a_s = np.asarray(strategy_correct, dtype=np.float64)
    a_c = np.asarray(control_correct, dtype=np.float64)
    n = int(a_c.size)
    if n == 0:
        return {}
    p = float(a_c.mean())
    out = {"control.n": float(n), "control.accuracy": p, "control.random_error": 1.0 - p}
    if n >= 2:
        fpc = max(0.0, 1.0 - n / n_rest) if n_rest > 0 else 0.0
        out["control.accuracy_se"] = math.sqrt(fpc * p * (1.0 - p) / (n - 1))
    out["control.strategy_n"] = float(a_s.size)
    if a_s.size:
        acc_s = float(a_s.mean())
        out["control.strategy_error"] = 1.0 - acc_s
        out["control.error_lift"] = out["control.strategy_error"] - out["control.random_error"]
        n_s = a_s.size if n_strategy is None else int(n_strategy)
        if n_s == a_s.size:  # every strategy pick labeled: that stratum is known exactly
            out["control.pool_accuracy"] = (n_s * acc_s + n_rest * p) / (n_s + n_rest)
    return out


def round_control_metrics(ctx, round_no: int) -> dict[str, float]:
    """The control arm's metrics of ``round_no`` (its labels, the round ``round_no - 1`` model).

    Empty for round 0, a round without control examples, or a generation campaign.
    """
    from alft.campaign.rounds import pool_embeddings, round_files, round_model

    if round_no < 1 or ctx.config.task != "classification":
        return {}
    store = ctx.store
    sel = store.selections(ctx.name, round_no)
    if not any(s["strategy"] == CONTROL for s in sel):
        return {}
    data = ctx.data
    labels = store.current_labels(ctx.name, overlap=ctx.config.oracle.policy())
    index = {lab: i for i, lab in enumerate(data.labels)}
    labeled = [s for s in sel if s["example_id"] in labels and labels[s["example_id"]] in index]
    if not labeled:
        return {}
    model = round_model(ctx, round_no - 1)
    pids = np.asarray([s["pool_id"] for s in labeled], dtype=np.int64)
    emb = pool_embeddings(ctx)[pids] if model.kind in ("head", "zero_shot") else None
    pred = model.predict_proba([data.pool.texts[int(i)] for i in pids], emb).argmax(axis=1)  # [n]
    gold = np.asarray([index[labels[s["example_id"]]] for s in labeled], dtype=np.int64)
    correct = pred == gold
    is_control = np.asarray([s["strategy"] == CONTROL for s in labeled])
    # |S| and |U \ S| as drawn (select's result): a deadline may have released part of the batch since
    res = store.step_result(ctx.name, round_no, "select") or {}
    c = int(res.get("control", int(is_control.sum())))
    n_strategy = int(res.get("k", len(sel))) - c
    cand_file = round_files(ctx, round_no)["candidates"]
    if cand_file.exists():
        n_candidates = int(np.load(cand_file, mmap_mode="r").shape[0])
    else:  # the pool minus everything selected before this round
        n_candidates = len(data.pool) - sum(1 for s in store.selections(ctx.name) if s["round"] < round_no)
    return control_metrics(
        correct[~is_control], correct[is_control], n_candidates - n_strategy, n_strategy=n_strategy
    )
