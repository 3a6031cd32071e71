"""Pure query strategies and stop rules: numpy and FAISS only, no Prefect, no I/O."""

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
