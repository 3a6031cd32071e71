"""Expected error reduction (Roy & McCallum, 2001) with a one-step update of the linear head.

Retraining the model once per (candidate, label) is what makes EER impractical; here the
"retrained" model is the current head after one gradient step of the log-loss on the
candidate with that label, which has a closed form on the features (see
``expected_error_reduction``). The body of the network is held fixed.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np

from strategies.base import InvalidInputError, QueryInputs, Selection, Strategy
from strategies.model_change import head_logits, softmax
from strategies.registry import StrategyOptionError, register
from strategies.selectors import top_k

__all__ = ["LOSSES", "eer_select", "expected_error_reduction"]

#: Loss names the ``loss`` option accepts.
LOSSES = ("log", "zero_one")

# Elements per [chunk, S, k] temporary (float64: 16 MB); a handful are alive at once.
_CHUNK_ELEMS = 2**21


def _sample_loss(logits: np.ndarray, loss: str) -> np.ndarray:
    """Per-example loss estimate from logits ``[..., k]`` -> ``[...]``.

    "log": entropy of the softmax (the model's own estimate of its expected log-loss, as
    Roy & McCallum use it); "zero_one": ``1 - max p``.
    """
    z = logits - logits.max(axis=-1, keepdims=True)  # [..., k]
    if loss == "zero_one":
        # max p = exp(0) / sum exp(z) once the max logit is shifted to 0.
        return 1.0 - 1.0 / np.exp(z).sum(axis=-1)
    log_norm = np.log(np.exp(z).sum(axis=-1, keepdims=True))  # [..., 1]
    log_p = z - log_norm  # [..., k], finite where p underflows to 0
    return -(np.exp(log_p) * log_p).sum(axis=-1)


def expected_error_reduction(
    inputs: QueryInputs,
    rng: np.random.Generator,
    *,
    shortlist: int = 100,
    sample: int = 1000,
    lr: float = 1.0,
    loss: str = "log",
) -> tuple[np.ndarray, int, int]:
    """EER scores float64[m] (row positions), plus the shortlist and sample sizes used.

    1. Shortlist the ``shortlist`` candidates (row positions) with the highest entropy of the
       head's softmax (random tie-break); only those are scored by EER.
    2. Draw ``sample`` rows of the unlabeled pool with ``rng`` (all of it when ``m <= sample``)
       on which to measure the loss.
    3. For candidate ``x`` and each label ``y`` of the head's ``k`` classes, take one SGD
       step of size ``lr`` on ``-log p_y(x)``: ``W' = W - lr (p_x - e_y) h_x^T`` and
       ``b' = b - lr (p_x - e_y)``. The sample's new logits are then
       ``z_s - lr (p_x - e_y) (<h_x, h_s> + 1)``, without forming ``W'``.
    4. Expected loss after = ``sum_y p_x[y] * mean_s loss(softmax(z'_s))``; the score is the
       current mean sample loss minus it (the expected reduction; it can be negative).

    Candidates outside the shortlist get finite scores below every shortlisted one:
    ``min(shortlisted) - 1 - (max outside entropy - their entropy)``, so if a batch reaches
    past the shortlist it continues in entropy order.

    Cost: O(M * S * (h + k^2)) for M shortlisted candidates and S sample rows, in chunks of
    candidates so memory stays O(chunk * S * k).
    """
    logits, feats = head_logits(inputs)  # [m, k], [m, h]
    p = softmax(logits, axis=1)  # [m, k]
    m, k = p.shape
    ent = _sample_loss(logits, "log")  # [m]
    n_short = min(int(shortlist), m)
    short = top_k(ent, inputs, n_short, rng)  # [M] rows, most uncertain first
    if m <= sample:
        sample_rows = np.arange(m)
    else:
        sample_rows = np.sort(rng.choice(m, size=int(sample), replace=False))  # [S]
    z_s = logits[sample_rows]  # [S, k]
    h_s = feats[sample_rows]  # [S, h]
    n_sample = sample_rows.size
    current = _sample_loss(z_s, loss).mean()

    reduction = np.empty(n_short)  # [M]
    step = max(1, _CHUNK_ELEMS // (n_sample * k))
    for start in range(0, n_short, step):
        rows = short[start : start + step]  # [c]
        gram = feats[rows] @ h_s.T + 1.0  # [c, S]; +1 is the bias' constant input
        p_x = p[rows]  # [c, k]
        expected = np.zeros(rows.size)  # [c]
        for y in range(k):
            delta = p_x.copy()  # [c, k]
            delta[:, y] -= 1.0
            z_new = z_s[None, :, :] - lr * gram[:, :, None] * delta[:, None, :]  # [c, S, k]
            expected += p_x[:, y] * _sample_loss(z_new, loss).mean(axis=1)  # [c]
        reduction[start : start + rows.size] = current - expected

    if not np.isfinite(reduction).all():
        bad = int(short[np.flatnonzero(~np.isfinite(reduction))[0]])
        raise InvalidInputError(
            f"EER produced a non-finite expected loss (first at row {bad}); lr={lr} is too large "
            "for these features"
        )
    scores = np.empty(m)
    scores[short] = reduction
    outside = np.ones(m, dtype=bool)
    outside[short] = False
    if outside.any():
        scores[outside] = reduction.min() - 1.0 - (ent[outside].max() - ent[outside])
    return scores, n_short, int(n_sample)


def eer_select(
    scores: np.ndarray | None,
    inputs: QueryInputs,
    k: int,
    rng: np.random.Generator,
    *,
    shortlist: int = 100,
    sample: int = 1000,
    lr: float = 1.0,
    loss: str = "log",
) -> Selection:
    """The ``k`` rows (row positions) with the largest expected error reduction.

    A selector rather than a scorer because the loss sample is drawn with ``rng``; the
    incoming ``scores`` are ignored and the EER scores of the picked rows are returned.

    The shortlist holds at least ``2 * k`` candidates: one of ``k`` or fewer would make the
    batch the shortlist itself, i.e. plain entropy sampling (the BANKING77 benchmark with
    batches of 100 and the old fixed shortlist of 100 gave entropy's curve to the digit).
    """
    eer, n_short, n_sample = expected_error_reduction(
        inputs, rng, shortlist=max(int(shortlist), 2 * k), sample=sample, lr=lr, loss=loss
    )
    rows = top_k(eer, inputs, k, rng)
    return Selection(rows=rows, scores=eer[rows], info={"shortlist": n_short, "sample": n_sample})


# ---------------------------------------------------------------------------- registration


_LAST_LAYER = frozenset({"features", "head"})


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise StrategyOptionError(f"eer option {name} must be an integer >= 1, got {value!r}")
    return int(value)


@register(
    "eer",
    "largest expected reduction of the pool's loss after a one-step head update "
    "(Roy & McCallum), over an entropy shortlist",
    _LAST_LAYER,
)
def _eer(shortlist: int = 100, sample: int = 1000, lr: float = 1.0, loss: str = "log") -> Strategy:
    shortlist = _positive_int("shortlist", shortlist)
    sample = _positive_int("sample", sample)
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.number)) or not (
        math.isfinite(lr) and lr > 0
    ):
        raise StrategyOptionError(f"eer option lr must be a finite number > 0, got {lr!r}")
    if loss not in LOSSES:
        raise StrategyOptionError(f"eer option loss must be one of {LOSSES}, got {loss!r}")
    return Strategy(
        name="eer",
        selector=partial(
            eer_select, shortlist=shortlist, sample=sample, lr=float(lr), loss=loss
        ),
        needs=_LAST_LAYER,
    )
