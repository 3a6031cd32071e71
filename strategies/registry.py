"""Strategies by name: what config files and ``alft strategies`` refer to.

A registered entry is a *factory* ``(**options) -> Strategy``; its keyword arguments are
the strategy's options in YAML (``strategy: {name: kmeans, options: {niter: 30}}``).

This module only keeps the table. The catalogue modules (``basic``, ``coreset``, ``hybrid``, ...)
import ``register`` and add their entries when ``strategies/__init__.py`` imports them, so
the registry never imports a strategy module and no module imports its importer back.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
