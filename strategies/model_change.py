"""Model-change strategies over the classifier's last layer: EGL and BADGE.

Both read ``features [m, h]`` and ``head`` (the linear layer over them), row positions, and
work in the head's own ``k`` classes: ``p = softmax(features @ W.T + b)``, ``[m, k]``. That
is deliberately not ``probs``, whose ``C`` columns may include classes the head cannot
predict, and which may come from a calibrated or ensembled model rather than this layer.

The gradient of the log-loss ``-log p_y`` with respect to the head's weight ``W`` is the
outer product ``(p - e_y) ⊗ h`` (and ``p - e_y`` with respect to the bias). Everything here
works through that factorisation, so the ``[m, k*h]`` gradient matrix is never built.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np

from strategies.base import (
    InvalidInputError,
    MissingInputError,
    QueryInputs,
    Selection,
    Strategy,
)
from strategies.registry import StrategyOptionError, register
from strategies.seeding import d2_seeding
from strategies.selectors import top_k

__all__ = [
    "AUTO_EXACT_BUDGET",
    "badge_select",
    "egl",
    "gradient_embedding",
    "gradient_sq_dists",
    "gradient_sq_norms",
    "head_logits",
    "head_softmax",
    "kmeanspp_exact",
    "kmeanspp_sketch",
    "sketch_gradients",
    "softmax",
]


# Rows per chunk when building the sketch: keeps each float64 temporary near 32 MB.
_CHUNK_ELEMS = 2**22


def head_logits(inputs: QueryInputs) -> tuple[np.ndarray, np.ndarray]:
    """The head's logits float64[m, k] and the features float64[m, h], row positions."""
    if inputs.features is None or inputs.head is None:
        missing = "features" if inputs.features is None else "head"
        raise MissingInputError(f"last-layer strategies need features and head; no {missing} given")
    head = inputs.head
    if head.weight.shape[0] < 1:
        raise InvalidInputError("the head has 0 classes; it needs at least 1")
    feats = inputs.features.astype(np.float64, copy=False)  # [m, h]
    with np.errstate(over="ignore", invalid="ignore"):  # reported just below, with the row
        logits = head.logits(feats)  # [m, k]
    if not np.isfinite(logits).all():
        bad = int(np.flatnonzero(~np.isfinite(logits).all(axis=1))[0])
        raise InvalidInputError(f"head logits overflow to inf or NaN (first at row {bad})")
    return logits, feats


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax along ``axis`` (same shape as ``logits``)."""
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def head_softmax(inputs: QueryInputs) -> tuple[np.ndarray, np.ndarray]:
    """The head's own class probabilities float64[m, k] and features float64[m, h], rows."""
    logits, feats = head_logits(inputs)
    return softmax(logits, axis=1), feats


# --------------------------------------------------------------------------------------- EGL


def egl(inputs: QueryInputs) -> np.ndarray:
    """Expected gradient length of the head's log-loss, float64[m] in row positions.

    ``E_{y ~ p} ||grad_{W,b} -log p_y||`` with ``p`` the head's softmax over its ``k``
    classes (Settles, Craven & Ray, 2008: the expectation of the norm, not of its square).
    The gradient for label ``y`` is ``(p - e_y) ⊗ [h, 1]``, whose norm factorises as
    ``||p - e_y|| * sqrt(||h||^2 + 1)``, so the score is closed form in O(m * (k + h)):

        sqrt(||h||^2 + 1) * sum_y p_y * sqrt(||p||^2 - p_y^2 + (1 - p_y)^2)

    For two classes this is ``2 * sqrt(2) * p_0 * p_1 * sqrt(||h||^2 + 1)``.
    """
    p, feats = head_softmax(inputs)  # [m, k], [m, h]
    rows = np.arange(p.shape[0])
    top = p.argmax(axis=1)  # [m]
    others = p.copy()
    others[rows, top] = 0.0  # [m, k]
    sq_rest = (others * others).sum(axis=1)  # [m], sum of p_c^2 over c != top
    # ||p - e_y||^2 = (sum of the other p_c^2) + (1 - p_y)^2. For y != top the first part
    # holds p_top^2 >= 1/k^2, so ||p||^2 - p_y^2 loses nothing; for y = top both parts are
    # taken from the other classes, since ||p||^2 - p_top^2 and 1 - p_top cancel when the
    # model is confident and would leave only rounding.
    sq_p = p[rows, top] ** 2 + sq_rest  # [m]
    sq_dist = sq_p[:, None] - p * p + (1.0 - p) ** 2  # [m, k]
    sq_dist[rows, top] = sq_rest + others.sum(axis=1) ** 2
    expected = (p * np.sqrt(sq_dist)).sum(axis=1)  # [m]
    return expected * np.sqrt((feats * feats).sum(axis=1) + 1.0)


# ------------------------------------------------------------------------------------- BADGE


def gradient_embedding(inputs: QueryInputs) -> tuple[np.ndarray, np.ndarray]:
    """BADGE's gradient embeddings as their two factors, row positions.

    ``g_i = a_i ⊗ b_i`` with ``a_i = p_i - e_{ŷ_i}`` float64[m, k] (``ŷ`` the head's argmax,
    ties to the lower class index) and ``b_i = h_i`` float64[m, h]: the gradient of the
    log-loss for the predicted label with respect to the head's weight (the bias gradient is
    left out, as in Ash et al., 2020).
    """
    p, feats = head_softmax(inputs)  # [m, k], [m, h]
    a = p.copy()
    a[np.arange(a.shape[0]), p.argmax(axis=1)] -= 1.0
    return a, feats


def gradient_sq_norms(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``||a_i ⊗ b_i||^2 = ||a_i||^2 ||b_i||^2``, float64[m] in row positions."""
    return np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", b, b)


def gradient_sq_dists(
    a: np.ndarray, b: np.ndarray, centres: np.ndarray, norms: np.ndarray | None = None
) -> np.ndarray:
    """``||g_i - g_c||^2`` float64[m, n] for every row ``i`` and each centre row ``c``.

    ``a [m, k]`` and ``b [m, h]`` are the factors of ``g = a ⊗ b`` (row positions);
    ``centres`` are row positions; ``norms`` (float64[m]) may pass ``gradient_sq_norms``
    precomputed. Uses ``<a ⊗ b, c ⊗ d> = <a, c> <b, d>``: O(m * n * (k + h)) without
    building any ``k * h`` vector.
    """
    centres = np.atleast_1d(np.asarray(centres, dtype=np.int64))
    if norms is None:
        norms = gradient_sq_norms(a, b)  # [m]
    cross = (a @ a[centres].T) * (b @ b[centres].T)  # [m, n]
    d = norms[:, None] + norms[centres][None, :] - 2.0 * cross  # [m, n]
    # The identity cancels large terms; rounding can leave tiny negatives for near-duplicates.
    return np.maximum(d, 0.0)


def _first_centre(sq_norms: np.ndarray, rng: np.random.Generator) -> int:
    # The largest gradient (the reference BADGE code's choice, not a norm^2 draw), with ties
    # broken at random rather than by position.
    best = np.flatnonzero(sq_norms == sq_norms.max())
    return int(best[0]) if best.size == 1 else int(rng.choice(best))


def kmeanspp_exact(a: np.ndarray, b: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding over ``g_i = a_i ⊗ b_i`` with exact distances; ``k`` row positions.

    First centre: the largest ``||g||``; then D^2 sampling (``strategies.seeding.d2_seeding``:
    exact draws, lazy updates). A full update costs O(m * c * (k_a + h)) for the c centres
    added since the last one, through the identity of ``gradient_sq_dists``; memory stays
    O(m * (k_a + h)).
    """
    m = a.shape[0]
    sq_norms = gradient_sq_norms(a, b)  # [m]
    first = _first_centre(sq_norms, rng)

    def sq_dists(rows: np.ndarray, centres: np.ndarray) -> np.ndarray:
        cross = (a[rows] @ a[centres].T) * (b[rows] @ b[centres].T)  # [r, c]
        return sq_norms[rows, None] + sq_norms[None, centres] - 2.0 * cross  # rounding: d2_seeding clips at 0

    return d2_seeding(first, sq_dists, m, k, rng)[0]


def sketch_gradients(
    a: np.ndarray, b: np.ndarray, dim: int, rng: np.random.Generator
) -> np.ndarray:
    """A random Khatri-Rao projection of ``g_i = a_i ⊗ b_i``: float32[m, dim], row positions.

    Row ``r`` of the projection is ``u_r ⊗ v_r`` with ``u_r``, ``v_r`` standard gaussian
    (from ``rng``), so ``(R g)_r = <u_r, a> <v_r, b> / sqrt(dim)``; ``E ||R x||^2 = ||x||^2``
    for every ``x`` in the span of the gradients, so squared distances are preserved in
    expectation. Built in row chunks: O(m * dim * (k + h)) time, O(m * dim) memory.
    """
    m, k = a.shape
    h = b.shape[1]
    u = rng.standard_normal((dim, k))  # [D, k]
    v = rng.standard_normal((dim, h))  # [D, h]
    out = np.empty((m, dim), dtype=np.float32)
    step = max(1, _CHUNK_ELEMS // dim)
    scale = 1.0 / math.sqrt(dim)
    for start in range(0, m, step):
        stop = min(m, start + step)
        out[start:stop] = (a[start:stop] @ u.T) * (b[start:stop] @ v.T) * scale  # [c, D]
    return out


def kmeanspp_sketch(
    a: np.ndarray, b: np.ndarray, k: int, rng: np.random.Generator, dim: int
) -> np.ndarray:
    """k-means++ seeding over a ``dim``-wide sketch of ``g_i = a_i ⊗ b_i``; ``k`` rows.

    Same first centre as the exact path (largest exact ``||g||``, which is cheap), then D^2
    sampling (``strategies.seeding.d2_seeding``, lazy updates) with float32 distances on the
    sketch: a full update is one GEMM against the centres added since the last.
    """
    m = a.shape[0]
    first = _first_centre(gradient_sq_norms(a, b), rng)

    sk = np.ascontiguousarray(sketch_gradients(a, b, dim, rng))  # [m, D] float32
    sq = np.einsum("ij,ij->i", sk, sk, dtype=np.float64)  # [m]

    def sq_dists(rows: np.ndarray, centres: np.ndarray) -> np.ndarray:
        if rows.size == 1:  # one row against the centres added since its last update
            x = sk[rows[0]]  # [D]
            return (((sk[centres] - x) ** 2).sum(axis=1, dtype=np.float64))[None, :]  # [1, c]
        cross = sk[rows] @ sk[centres].T  # [r, c] float32: one GEMM for many centres at once
        return sq[rows, None] + sq[None, centres] - 2.0 * cross  # rounding: d2_seeding clips at 0

    return d2_seeding(first, sq_dists, m, k, rng)[0]


def badge_select(
    scores: np.ndarray | None,
    inputs: QueryInputs,
    k: int,
    rng: np.random.Generator,
    *,
    sketch_dim: int | str | None = "auto",
) -> Selection:
    """BADGE (Ash et al., 2020): k-means++ seeding over last-layer gradient embeddings.

    Returns ``k`` row positions into ``inputs.unlabeled``; ``scores`` are ignored. Large
    gradients (uncertain predictions on large features) are likely picks, and D^2 sampling
    spreads the batch across directions of the gradient space.

    ``sketch_dim``: None (or ``"auto"``) uses exact distances via ``gradient_sq_dists``; an
    int runs the seeding on a Khatri-Rao sketch of that width (``sketch_gradients``; O(m * D *
    (k_c + h)) to build, float32[m, D] more memory). ``"auto"`` is the exact path because the
    seeding is lazy (``strategies.seeding``: a few passes over the factors, not one per pick),
    so the sketch's build costs about what it saves: measured end to end, interleaved, idle
    (``benchmarks/badge_auto.py``), the sketch was 9 % faster at 100k candidates and 23 %
    slower at 1M, with the same peak memory; only the exact path draws from the true D^2
    distribution.
    """
    a, b = gradient_embedding(inputs)  # [m, k_c], [m, h]
    # "auto" (the only string the factory lets through) is the exact path: see above
    dim = None if isinstance(sketch_dim, str) else sketch_dim
    if dim is None:
        rows = kmeanspp_exact(a, b, k, rng)
        return Selection(rows=rows, info={"badge_path": "exact"})
    rows = kmeanspp_sketch(a, b, k, rng, int(dim))
    return Selection(rows=rows, info={"badge_path": "sketch", "sketch_dim": int(dim)})


# ---------------------------------------------------------------------------- registration


_LAST_LAYER = frozenset({"features", "head"})


@register(
    "egl",
    "largest expected gradient length of the classification head first (closed form)",
    _LAST_LAYER,
)
def _egl() -> Strategy:
    return Strategy(name="egl", scorer=egl, selector=top_k, needs=_LAST_LAYER)


@register(
    "badge",
    "k-means++ seeding over last-layer gradient embeddings (uncertainty and diversity)",
    _LAST_LAYER,
)
def _badge(sketch_dim: int | str | None = "auto") -> Strategy:
    if sketch_dim is not None and sketch_dim != "auto" and (
        isinstance(sketch_dim, bool) or not isinstance(sketch_dim, (int, np.integer))
    ):
        raise StrategyOptionError(
            f"badge option sketch_dim must be an int, None or 'auto', got {sketch_dim!r}"
        )
    if isinstance(sketch_dim, (int, np.integer)) and sketch_dim < 1:
        raise StrategyOptionError(f"badge option sketch_dim must be >= 1, got {sketch_dim}")
    return Strategy(
        name="badge",
        selector=partial(badge_select, sketch_dim=sketch_dim),
        needs=_LAST_LAYER,
    )
