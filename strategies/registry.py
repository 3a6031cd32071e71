"""Strategies by name: what config files and ``alft strategies`` refer to.

A registered entry is a *factory* ``(**options) -> Strategy``; its keyword arguments are
the strategy's options in YAML (``strategy: {name: kmeans, options: {niter: 30}}``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from strategies import diversity, selectors, uncertainty
from strategies.base import Strategy, StrategyError

__all__ = [
    "StrategyOptionError",
    "StrategySpec",
    "UnknownStrategyError",
    "available",
    "get_spec",
    "get_strategy",
    "register",
]


class UnknownStrategyError(StrategyError):
    """No strategy is registered under that name."""


class StrategyOptionError(StrategyError):
    """A strategy was given an option it does not have, or an out-of-range value."""


@dataclass(frozen=True)
class StrategySpec:
    """A registry entry: the name, a one-line description, what it needs, and its factory."""

    name: str
    description: str
    needs: frozenset[str]
    factory: Callable[..., Strategy]

    def options(self) -> dict[str, Any]:
        """Option names and their defaults."""
        sig = inspect.signature(self.factory)
        return {p.name: p.default for p in sig.parameters.values()}


_REGISTRY: dict[str, StrategySpec] = {}


def register(
    name: str, description: str, needs: frozenset[str] | set[str] = frozenset()
) -> Callable[[Callable[..., Strategy]], Callable[..., Strategy]]:
    """Decorator registering a strategy factory under ``name``."""

    def deco(factory: Callable[..., Strategy]) -> Callable[..., Strategy]:
        if name in _REGISTRY:
            raise ValueError(f"strategy '{name}' is registered twice")
        _REGISTRY[name] = StrategySpec(name, description, frozenset(needs), factory)
        return factory

    return deco


def available() -> list[StrategySpec]:
    """Every registered strategy, sorted by name."""
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_spec(name: str) -> StrategySpec:
    """The registry entry for ``name``; UnknownStrategyError lists the known names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownStrategyError(f"unknown strategy '{name}' (known: {known})") from None


def get_strategy(name: str, **options: Any) -> Strategy:
    """Build the strategy registered as ``name`` with its ``options``."""
    spec = get_spec(name)
    allowed = spec.options()
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        allowed_txt = ", ".join(allowed) or "none"
        raise StrategyOptionError(
            f"strategy '{name}' has no option {', '.join(repr(u) for u in unknown)} "
            f"(options: {allowed_txt})"
        )
    return spec.factory(**options)


def _scored(name: str, scorer: Callable, needs: frozenset[str]) -> Strategy:
    return Strategy(name=name, scorer=scorer, selector=selectors.top_k, needs=needs)


PROBS = frozenset({"probs"})
EMBEDDINGS = frozenset({"embeddings"})


@register("random", "uniform random sample of the unlabeled pool (the baseline)")
def _random() -> Strategy:
    return Strategy(name="random", selector=selectors.uniform)


@register("least_confidence", "lowest top-class probability first", PROBS)
def _least_confidence() -> Strategy:
    return _scored("least_confidence", uncertainty.least_confidence, PROBS)


@register("margin", "smallest gap between the two most probable classes first", PROBS)
def _margin() -> Strategy:
    return _scored("margin", uncertainty.margin, PROBS)


@register("entropy", "highest predictive entropy first", PROBS)
def _entropy() -> Strategy:
    return _scored("entropy", uncertainty.entropy, PROBS)


@register(
    "bald",
    "highest mutual information between label and model over MC-dropout samples first",
    frozenset({"prob_samples"}),
)
def _bald() -> Strategy:
    return _scored("bald", uncertainty.bald, frozenset({"prob_samples"}))


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


# The rest of the catalogue registers itself on import, one module per family; importing
# them here (after ``register`` exists) makes ``get_strategy`` see every entry.
from strategies import (  # noqa: E402,F401
    adaptive,
    coreset,
    error_reduction,
    gating,
    generative,
    hybrid,
    model_change,
)
