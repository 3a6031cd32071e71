"""Pure query strategies and stop rules: numpy and FAISS only, no Prefect, no I/O.

Importing the package registers the whole catalogue: each family module below adds its
entries to ``strategies.registry`` (which imports none of them back).
"""

from strategies.base import (
    INPUT_NAMES,
    InvalidInputError,
    LinearHead,
    PastRound,
    Selection,
    MissingInputError,
    PoolExhaustedError,
    Query,
    QueryInputs,
    Strategy,
    StrategyError,
)
from strategies.registry import (
    StrategyOptionError,
    UnknownStrategyError,
    available,
    get_spec,
    get_strategy,
)

from strategies import (  # noqa: F401  (imported for their registrations)
    adaptive,
    basic,
    coreset,
    error_reduction,
    gating,
    generative,
    hybrid,
    model_change,
)

__all__ = [
    "INPUT_NAMES",
    "InvalidInputError",
    "LinearHead",
    "PastRound",
    "Selection",
    "MissingInputError",
    "PoolExhaustedError",
    "Query",
    "QueryInputs",
    "Strategy",
    "StrategyError",
    "StrategyOptionError",
    "UnknownStrategyError",
    "available",
    "get_spec",
    "get_strategy",
]
