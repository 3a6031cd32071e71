"""The single-score entries of the catalogue: random, the uncertainty scores, BALD, k-means."""

from __future__ import annotations

from functools import partial
from typing import Any

from strategies import diversity, selectors, uncertainty
from strategies.base import Strategy
from strategies.registry import StrategyOptionError, register

PROBS = frozenset({"probs"})
EMBEDDINGS = frozenset({"embeddings"})


@register("random", "uniform random sample of the unlabeled pool (the baseline)")
def _random() -> Strategy:
    return Strategy(name="random", selector=selectors.uniform)


@register("least_confidence", "lowest top-class probability first", PROBS)
def _least_confidence() -> Strategy:
    return selectors.ranked("least_confidence", uncertainty.least_confidence, PROBS)


@register("margin", "smallest gap between the two most probable classes first", PROBS)
def _margin() -> Strategy:
    return selectors.ranked("margin", uncertainty.margin, PROBS)


@register("entropy", "highest predictive entropy first", PROBS)
def _entropy() -> Strategy:
    return selectors.ranked("entropy", uncertainty.entropy, PROBS)


@register(
    "bald",
    "highest mutual information between label and model over MC-dropout samples first",
    frozenset({"prob_samples"}),
)
def _bald() -> Strategy:
    return selectors.ranked("bald", uncertainty.bald, frozenset({"prob_samples"}))


@register(
    "kmeans",
    "FAISS k-means over the unlabeled embeddings, then per cluster the example nearest the "
    "centroid or the one farthest from the labeled set; optionally size-weighted "
    "(diversity; cold start)",
    EMBEDDINGS,
)
def _kmeans(
    niter: int = 20,
    max_points_per_centroid: int = 256,
    spherical: bool = True,
    pick: str = "nearest",
    weight_by_size: bool = False,
    n_clusters: int | None = None,
) -> Strategy:
    def whole(opt: str, value: Any, low: int) -> None:
        # __index__: Python and numpy integers, not floats; bool is an int but no count
        if isinstance(value, bool) or not hasattr(value, "__index__") or value < low:
            raise StrategyOptionError(
                f"kmeans option {opt} must be an integer >= {low}, got {value!r}"
            )

    whole("niter", niter, 1)
    whole("max_points_per_centroid", max_points_per_centroid, 1)
    if n_clusters is not None:
        whole("n_clusters", n_clusters, 1)
    if pick not in diversity.PICKS:
        raise StrategyOptionError(
            f"kmeans option pick must be one of {', '.join(diversity.PICKS)}, got {pick!r}"
        )
    for opt, value in (("spherical", spherical), ("weight_by_size", weight_by_size)):
        if not isinstance(value, bool):
            raise StrategyOptionError(f"kmeans option {opt} must be true or false, got {value!r}")
    select = partial(
        diversity.cluster_select,
        niter=int(niter),
        max_points_per_centroid=int(max_points_per_centroid),
        spherical=spherical,
        pick=pick,
        weight_by_size=weight_by_size,
        n_clusters=None if n_clusters is None else int(n_clusters),
    )
    return Strategy(name="kmeans", selector=select, needs=EMBEDDINGS)
