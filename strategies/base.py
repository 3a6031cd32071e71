"""The array-in / ids-out interface every query strategy implements.

Index spaces (every docstring in this package says which one an argument is in):

pool id
    ``int``: position of an example in the loaded pool, ``0 .. n_pool - 1``. Stable for the
    life of a campaign because the pool's digest is checked on every run.
row position
    ``int``: position inside an array that holds a *subset* of the pool. The candidate
    arrays (``QueryInputs.unlabeled`` and everything aligned with it, such as ``probs`` and
    scores) are in row positions: ``inputs.unlabeled[row]`` is the pool id of that row.
example id
    ``str``: the value of the data's id column. Only the campaign store, files and humans
    see it; strategies never do.

A strategy is a *scorer* (``QueryInputs -> float[m]``, higher = more worth a label) and a
*selector* (``(scores | None, QueryInputs, k, rng) -> row positions | Selection``). Both are
pure functions of arrays: no model, no file, no Prefect. What a model contributes
(probabilities, MC-dropout samples, penultimate features, its linear output layer) arrives
as arrays in ``QueryInputs``; what the campaign has seen so far arrives as ``history``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "INPUT_NAMES",
    "GenerationStats",
    "InvalidInputError",
    "LinearHead",
    "PastRound",
    "Selection",
    "MissingInputError",
    "PoolExhaustedError",
    "Query",
    "QueryInputs",
    "Scorer",
    "Selector",
    "Strategy",
    "StrategyError",
]


class StrategyError(ValueError):
    """Base class of every error raised by a query strategy."""


class PoolExhaustedError(StrategyError):
    """Fewer unlabeled examples remain than the batch asks for."""

    def __init__(self, available: int, requested: int) -> None:
        self.available = available
        self.requested = requested
        super().__init__(f"pool exhausted: {available} available / {requested} requested")


class InvalidInputError(StrategyError):
    """An input array has the wrong shape, dtype or values (NaN, out of range, ...)."""


class MissingInputError(StrategyError):
    """The strategy needs an input (probabilities, embeddings) that was not given."""


def _as_pool_ids(name: str, values: np.ndarray | list[int]) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InvalidInputError(f"{name} must be 1-D pool ids, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InvalidInputError(f"{name} must be integer pool ids, got dtype {arr.dtype}")
    if arr.min() < 0:
        raise InvalidInputError(f"{name} holds a negative pool id ({int(arr.min())})")
    return arr.astype(np.int64, copy=False)


def _first_non_finite_row(a: np.ndarray, block_bytes: int = 32 << 20) -> int | None:
    """First row of ``a`` holding NaN or inf, or None; reads contiguous blocks.

    Fancy-indexing the candidates' rows would copy them (1.5 GB for a million 384-d
    vectors); slices of the (possibly memory-mapped) array cost one block at a time.
    """
    rows = max(1, block_bytes // max(1, a.itemsize * (a.shape[1] if a.ndim > 1 else 1)))
    for start in range(0, a.shape[0], rows):
        ok = np.isfinite(a[start : start + rows]).all(axis=tuple(range(1, a.ndim)))  # [b]
        if not ok.all():
            return start + int(np.flatnonzero(~ok)[0])
    return None


@dataclass(frozen=True)
class LinearHead:
    """The classifier's output layer: ``logits = features @ weight.T + bias``.

    Attributes
    ----------
    weight: float64[k, h], one row per class the model can predict.
    bias: float64[k].
    classes: int64[k], the column of ``probs`` (label index) each row stands for; a model
        fitted on fewer classes than the label set has ``k < C``.
    """

    weight: np.ndarray
    bias: np.ndarray
    classes: np.ndarray

    def __post_init__(self) -> None:
        w = np.asarray(self.weight, dtype=np.float64)
        b = np.asarray(self.bias, dtype=np.float64)
        c = np.asarray(self.classes)
        if w.ndim != 2 or b.shape != (w.shape[0],) or c.shape != (w.shape[0],):
            raise InvalidInputError(
                f"head weight [k, h], bias [k] and classes [k] disagree: "
                f"{w.shape}, {b.shape}, {c.shape}"
            )
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise InvalidInputError("head weight or bias holds NaN or inf")
        if c.size and not np.issubdtype(c.dtype, np.integer):
            raise InvalidInputError(f"head classes must be integer label indices, got {c.dtype}")
        object.__setattr__(self, "weight", w)
        object.__setattr__(self, "bias", b)
        object.__setattr__(self, "classes", c.astype(np.int64, copy=False))

    def logits(self, features: np.ndarray) -> np.ndarray:
        """``[n, k]`` logits of ``features [n, h]``."""
        return np.asarray(features, dtype=np.float64) @ self.weight.T + self.bias


@dataclass(frozen=True)
class PastRound:
    """One finished round, as adaptive strategies see it (read from the campaign store).

    Attributes
    ----------
    round: the round number (0 = cold start).
    n_labels: labels in the campaign after this round.
    metrics: evaluation metrics of the model trained in this round (accuracy, macro_f1...).
    strategy: the registered strategy that selected this round's batch; for an adaptive
        strategy, the arm it chose (so a bandit can rebuild its state from history alone).
    agreement: fraction of a fixed held-out set whose predicted class is the same under
        this round's model and the previous round's one; None where either is missing.
    selection_info: what the selecting strategy recorded (``Selection.info``) that round.
    batch_error: share of this round's batch whose (resolved) label differs from the top
        class of the model that scored it (the previous round's); None where there was no
        such model (round 0), no probabilities were kept, or nothing of the batch is labeled.
    expected_error: that model's own estimate of its error over all the round's candidates,
        mean(1 - max p); the same None cases. ``batch_error - expected_error`` is how much
        more often than the model expected the batch held its mistakes.
    class_coverage: share of the label set that has at least one resolved label after this
        round (classification only; None otherwise or for rounds evaluated before it existed).
    """

    round: int
    n_labels: int
    metrics: Mapping[str, float] = field(default_factory=dict)
    strategy: str | None = None
    agreement: float | None = None
    selection_info: Mapping[str, Any] = field(default_factory=dict)
    batch_error: float | None = None
    expected_error: float | None = None
    class_coverage: float | None = None


@dataclass(frozen=True)
class GenerationStats:
    """What a generative (instruction -> response) model says about each candidate prompt.

    All arrays are float64[m] in row positions (aligned with ``QueryInputs.unlabeled``).

    Attributes
    ----------
    mean_entropy: mean over the generated steps of the entropy (nats) of the next-token
        distribution while decoding greedily; high = the model hesitates.
    mean_nll: mean negative log-likelihood (nats) of the model's own greedy continuation.
    ifd: Instruction-Following Difficulty of the candidate (draft) responses (Li et al.,
        2024): mean NLL of the response given the prompt over its mean NLL alone; None
        when the data has no candidate responses.
    """

    mean_entropy: np.ndarray
    mean_nll: np.ndarray
    ifd: np.ndarray | None = None

    def __post_init__(self) -> None:
        fields = {"mean_entropy": self.mean_entropy, "mean_nll": self.mean_nll}
        if self.ifd is not None:
            fields["ifd"] = self.ifd
        m = None
        for name, values in fields.items():
            arr = np.asarray(values)
            if arr.ndim != 1:
                raise InvalidInputError(f"generation.{name} must be 1-D [m], got shape {arr.shape}")
            if arr.size and not np.issubdtype(arr.dtype, np.number):
                raise InvalidInputError(f"generation.{name} must be numbers, got dtype {arr.dtype}")
            arr = arr.astype(np.float64, copy=False)
            if m is None:
                m = arr.size
            elif arr.size != m:
                raise InvalidInputError(
                    f"generation.{name} has {arr.size} rows, generation.mean_entropy has {m}"
                )
            finite = np.isfinite(arr)
            if not finite.all():
                raise InvalidInputError(
                    f"generation.{name} holds NaN or inf (first at row {int(np.flatnonzero(~finite)[0])})"
                )
            object.__setattr__(self, name, arr)

    def __len__(self) -> int:
        return int(self.mean_entropy.size)

    def take(self, rows: np.ndarray) -> GenerationStats:
        """The statistics of candidate ``rows`` (row positions, in that order)."""
        return GenerationStats(
            mean_entropy=self.mean_entropy[rows],
            mean_nll=self.mean_nll[rows],
            ifd=None if self.ifd is None else self.ifd[rows],
        )


#: QueryInputs fields a strategy can declare in ``needs``.
INPUT_NAMES = frozenset({"probs", "prob_samples", "embeddings", "features", "head", "generation"})


@dataclass(frozen=True)
class QueryInputs:
    """Everything a strategy may read, validated once on construction.

    Attributes
    ----------
    unlabeled:
        int64[m], pool ids of the candidates (the unlabeled pool). Defines the row positions
        of ``probs`` and of every score array.
    labeled:
        int64[l], pool ids already labeled (or selected and waiting for labels).
    probs:
        float[m, C] class probabilities, row positions aligned with ``unlabeled``; or None.
    embeddings:
        float32[n_pool, d], indexed by pool id (diversity methods also need the labeled
        rows); L2-normalised by the embed step; or None.
    prob_samples:
        float[m, C, K], K stochastic forward passes (MC dropout) per candidate, row
        positions; or None.
    features:
        float[m, h], the model's penultimate representation of each candidate (the input
        of ``head``), row positions; or None.
    head:
        the model's linear output layer over ``features``; or None.
    history:
        the campaign's finished rounds, oldest first (empty in round 0).
    generation:
        a generative model's statistics of each candidate prompt (uncertainty of its greedy
        continuation, IFD of candidate responses), row positions; or None.
    """

    unlabeled: np.ndarray
    labeled: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    probs: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    prob_samples: np.ndarray | None = None
    features: np.ndarray | None = None
    head: LinearHead | None = None
    history: tuple[PastRound, ...] = ()
    generation: GenerationStats | None = None

    def __post_init__(self) -> None:
        unlabeled = _as_pool_ids("unlabeled", self.unlabeled)
        labeled = _as_pool_ids("labeled", self.labeled)
        object.__setattr__(self, "unlabeled", unlabeled)
        object.__setattr__(self, "labeled", labeled)
        if np.unique(unlabeled).size != unlabeled.size:
            raise InvalidInputError("unlabeled holds duplicate pool ids")
        overlap = np.intersect1d(unlabeled, labeled)
        if overlap.size:
            raise InvalidInputError(
                f"{overlap.size} pool ids are both labeled and unlabeled (first: {int(overlap[0])})"
            )
        if self.probs is not None:
            probs = np.asarray(self.probs)
            if probs.ndim != 2 or probs.shape[0] != unlabeled.size:
                raise InvalidInputError(
                    f"probs must be [m={unlabeled.size}, C], got shape {probs.shape}"
                )
            if probs.shape[1] < 2:
                raise InvalidInputError(f"probs needs at least 2 classes, got {probs.shape[1]}")
            if not np.isfinite(probs).all():
                bad = int(np.flatnonzero(~np.isfinite(probs).all(axis=1))[0])
                raise InvalidInputError(f"probs holds NaN or inf (first at row {bad})")
            if probs.size and (probs.min() < -1e-6 or probs.max() > 1 + 1e-6):
                raise InvalidInputError(
                    f"probs must lie in [0, 1], got range [{probs.min():.4g}, {probs.max():.4g}]"
                )
            sums = probs.sum(axis=1)
            off = np.abs(sums - 1.0) > 1e-3
            if off.any():
                row = int(np.flatnonzero(off)[0])
                raise InvalidInputError(
                    f"probs rows must sum to 1, row {row} sums to {sums[row]:.4f}"
                )
            object.__setattr__(self, "probs", probs)
        if self.embeddings is not None:
            emb = np.asarray(self.embeddings)
            if emb.ndim != 2:
                raise InvalidInputError(f"embeddings must be [n_pool, d], got shape {emb.shape}")
            n_needed = 1 + max(
                int(unlabeled.max()) if unlabeled.size else -1,
                int(labeled.max()) if labeled.size else -1,
            )
            if emb.shape[0] < n_needed:
                raise InvalidInputError(
                    f"embeddings has {emb.shape[0]} rows but pool ids go up to {n_needed - 1}"
                )
            bad = _first_non_finite_row(emb)
            if bad is not None:
                raise InvalidInputError(f"embeddings hold NaN or inf (first at pool id {bad})")
            object.__setattr__(self, "embeddings", emb)
        m = unlabeled.size
        if self.prob_samples is not None:
            ps = np.asarray(self.prob_samples)
            if ps.ndim != 3 or ps.shape[0] != m:
                raise InvalidInputError(f"prob_samples must be [m={m}, C, K], got shape {ps.shape}")
            if self.probs is not None and ps.shape[1] != np.asarray(self.probs).shape[1]:
                raise InvalidInputError(
                    f"prob_samples has {ps.shape[1]} classes, probs has {self.probs.shape[1]}"
                )
            if not np.isfinite(ps).all():
                raise InvalidInputError("prob_samples holds NaN or inf")
            sums = ps.sum(axis=1)  # [m, K]
            if ps.size and np.abs(sums - 1.0).max() > 1e-3:
                row = int(np.argwhere(np.abs(sums - 1.0) > 1e-3)[0, 0])
                raise InvalidInputError(f"prob_samples must sum to 1 over classes (row {row})")
            object.__setattr__(self, "prob_samples", ps)
        if self.features is not None:
            ft = np.asarray(self.features)
            if ft.ndim != 2 or ft.shape[0] != m:
                raise InvalidInputError(f"features must be [m={m}, h], got shape {ft.shape}")
            if not np.isfinite(ft).all():
                bad = int(np.flatnonzero(~np.isfinite(ft).all(axis=1))[0])
                raise InvalidInputError(f"features hold NaN or inf (first at row {bad})")
            object.__setattr__(self, "features", ft)
        if self.head is not None:
            if not isinstance(self.head, LinearHead):
                raise InvalidInputError(f"head must be a LinearHead, got {type(self.head).__name__}")
            if self.features is not None and self.head.weight.shape[1] != self.features.shape[1]:
                raise InvalidInputError(
                    f"head expects {self.head.weight.shape[1]}-d features, "
                    f"features are {self.features.shape[1]}-d"
                )
            if self.probs is not None and self.head.classes.size and (
                self.head.classes.max() >= self.probs.shape[1]
            ):
                raise InvalidInputError(
                    f"head class {int(self.head.classes.max())} is outside probs' "
                    f"{self.probs.shape[1]} columns"
                )
        if self.generation is not None:
            if not isinstance(self.generation, GenerationStats):
                raise InvalidInputError(
                    f"generation must be a GenerationStats, got {type(self.generation).__name__}"
                )
            if len(self.generation) != m:
                raise InvalidInputError(
                    f"generation statistics must be [m={m}], got {len(self.generation)} rows"
                )
        object.__setattr__(self, "history", tuple(self.history))

    def with_candidates(self, rows: np.ndarray) -> QueryInputs:
        """The same inputs restricted to candidate ``rows`` (row positions, in that order).

        Row-aligned arrays are sliced; pool-indexed ones (embeddings) and the labeled set
        are kept, so a nested strategy sees a smaller candidate set of the same pool.
        """
        rows = np.asarray(rows, dtype=np.int64)

        def take(a):
            return None if a is None else a[rows]

        return QueryInputs(
            unlabeled=self.unlabeled[rows],
            labeled=self.labeled,
            probs=take(self.probs),
            embeddings=self.embeddings,
            prob_samples=take(self.prob_samples),
            features=take(self.features),
            head=self.head,
            history=self.history,
            generation=None if self.generation is None else self.generation.take(rows),
        )

    @property
    def n_candidates(self) -> int:
        return int(self.unlabeled.size)


#: ``QueryInputs -> float64[m]`` in row positions; higher means more worth a label.
Scorer = Callable[[QueryInputs], np.ndarray]
@dataclass(frozen=True)
class Selection:
    """What a selector may return instead of bare rows: rows plus what it decided.

    Attributes
    ----------
    rows: int64[k] row positions into ``unlabeled``, in selection order.
    scores: float64[k] scores of the selected rows (for selectors that score internally,
        such as adaptive ones delegating to an arm); None keeps the strategy's scores.
    info: JSON-serialisable facts to record for the round (chosen arm, switch reason...).
    """

    rows: np.ndarray
    scores: np.ndarray | None = None
    info: Mapping[str, Any] = field(default_factory=dict)


#: ``(scores float[m] | None, inputs, k, rng) -> int64[k] | Selection``, row positions
#: into ``unlabeled``.
Selector = Callable[
    [np.ndarray | None, QueryInputs, int, np.random.Generator], "np.ndarray | Selection"
]


@dataclass(frozen=True)
class Query:
    """A selected batch.

    Attributes
    ----------
    pool_ids: int64[k], pool ids of the selected examples, in selection order.
    scores: float64[k], the strategy's score of each, NaN where it has none (pure diversity).
    info: what the strategy decided on the way (JSON-serialisable; recorded per round).
    """

    pool_ids: np.ndarray
    scores: np.ndarray
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Strategy:
    """A query strategy: an optional scorer composed with a selector.

    ``needs`` names the ``QueryInputs`` fields that must be present (see ``INPUT_NAMES``).
    """

    name: str
    selector: Selector
    scorer: Scorer | None = None
    needs: frozenset[str] = frozenset()

    def check_inputs(self, inputs: QueryInputs) -> None:
        """Raise MissingInputError when an input this strategy needs is absent."""
        for need in sorted(self.needs):
            if getattr(inputs, need) is None:
                raise MissingInputError(f"strategy '{self.name}' needs {need}, none were given")

    def score(self, inputs: QueryInputs) -> np.ndarray | None:
        """Scores of the candidates, float64[m] in row positions, or None for pure selectors."""
        self.check_inputs(inputs)
        if self.scorer is None:
            return None
        scores = np.asarray(self.scorer(inputs), dtype=np.float64)
        if scores.shape != (inputs.n_candidates,):
            raise StrategyError(
                f"scorer of '{self.name}' returned shape {scores.shape}, "
                f"expected ({inputs.n_candidates},)"
            )
        if np.isnan(scores).any():
            raise InvalidInputError(
                f"scorer of '{self.name}' produced {int(np.isnan(scores).sum())} NaN scores"
            )
        return scores

    def select(
        self, scores: np.ndarray | None, inputs: QueryInputs, k: int, rng: np.random.Generator
    ) -> Query:
        """Choose ``k`` candidates; returns pool ids (and their scores) in selection order."""
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise InvalidInputError(f"batch size k must be a positive integer, got {k!r}")
        if k > inputs.n_candidates:
            raise PoolExhaustedError(inputs.n_candidates, int(k))
        self.check_inputs(inputs)
        if scores is not None:
            scores = np.asarray(scores, dtype=np.float64)
            if scores.shape != (inputs.n_candidates,):
                raise InvalidInputError(
                    f"scores must be [m={inputs.n_candidates}], got shape {scores.shape}"
                )
            if np.isnan(scores).any():
                raise InvalidInputError(f"scores hold {int(np.isnan(scores).sum())} NaN values")
        out = self.selector(scores, inputs, int(k), rng)
        info: Mapping[str, Any] = {}
        own_scores = None
        if isinstance(out, Selection):
            info, own_scores = dict(out.info), out.scores
            out = out.rows
        rows = np.asarray(out, dtype=np.int64)
        if rows.shape != (k,) or np.unique(rows).size != k:
            raise StrategyError(
                f"selector of '{self.name}' returned {np.unique(rows).size} unique rows, "
                f"expected {k}"
            )
        if rows.min() < 0 or rows.max() >= inputs.n_candidates:
            raise StrategyError(f"selector of '{self.name}' returned a row outside [0, m)")
        if own_scores is not None:
            picked = np.asarray(own_scores, dtype=np.float64)
            if picked.shape != (k,):
                raise StrategyError(
                    f"selector of '{self.name}' returned {picked.shape} scores for {k} rows"
                )
        else:
            picked = scores[rows] if scores is not None else np.full(k, np.nan)
        return Query(pool_ids=inputs.unlabeled[rows], scores=picked, info=info)

    def query(self, inputs: QueryInputs, k: int, rng: np.random.Generator) -> Query:
        """Score then select: the whole strategy in one call."""
        return self.select(self.score(inputs), inputs, k, rng)
