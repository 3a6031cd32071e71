"""Scorers for instruction -> response campaigns, over ``QueryInputs.generation``.

A generative model contributes one ``GenerationStats`` per candidate prompt (computed by
``alft.models.causal_lm.GenerativeModel.stats``); these scorers only read its arrays (row
positions, float64[m]) and return higher = more worth an expert's response:

``token_entropy``  mean next-token entropy along the greedy continuation (nats): the model
                   hesitates between continuations (uncertainty sampling for generation).
``sequence_nll``   mean negative log-likelihood of the model's own greedy continuation: low
                   confidence in what it would answer.
``ifd``            Instruction-Following Difficulty of a candidate (draft) response (Li et
                   al., 2024, "From Quantity to Quality"): NLL of the response given the
                   prompt over its NLL alone. Near or above 1, the instruction does not help
                   the model produce the response, so the example teaches it the most.

Each is a plain scorer with ``top_k`` selection, so it also serves as the ``score`` of
``two_stage`` (shortlist, then a diversity selector over embeddings) and as a part of
``fusion``.
"""

from __future__ import annotations

import numpy as np

from strategies import selectors
from strategies.base import MissingInputError, QueryInputs, Strategy
from strategies.registry import register

__all__ = ["ifd", "sequence_nll", "token_entropy"]

GENERATION = frozenset({"generation"})


def _generation(inputs: QueryInputs, scorer: str):
    if inputs.generation is None:
        raise MissingInputError(
            f"strategy '{scorer}' needs generation statistics of a generative model, none were given"
        )
    return inputs.generation


def token_entropy(inputs: QueryInputs) -> np.ndarray:
    """Mean next-token entropy of the greedy continuation, float64[m] (row positions)."""
    return _generation(inputs, "token_entropy").mean_entropy


def sequence_nll(inputs: QueryInputs) -> np.ndarray:
    """Mean NLL of the model's own greedy continuation, float64[m] (row positions)."""
    return _generation(inputs, "sequence_nll").mean_nll


def ifd(inputs: QueryInputs) -> np.ndarray:
    """IFD of the candidate responses, float64[m] (row positions); higher = harder to follow."""
    stats = _generation(inputs, "ifd")
    if stats.ifd is None:
        raise MissingInputError(
            "strategy 'ifd' needs candidate responses (data.candidate_field): the generation "
            "statistics were computed without them"
        )
    return stats.ifd


# ---------------------------------------------------------------------------- registration



@register(
    "token_entropy",
    "generation: highest mean next-token entropy along the model's greedy response first",
    GENERATION,
)
def _token_entropy() -> Strategy:
    return selectors.ranked("token_entropy", token_entropy, GENERATION)


@register(
    "sequence_nll",
    "generation: highest mean negative log-likelihood of the model's own greedy response first",
    GENERATION,
)
def _sequence_nll() -> Strategy:
    return selectors.ranked("sequence_nll", sequence_nll, GENERATION)


@register(
    "ifd",
    "generation: highest Instruction-Following Difficulty of the candidate responses first "
    "(needs data.candidate_field)",
    GENERATION,
)
def _ifd() -> Strategy:
    return selectors.ranked("ifd", ifd, GENERATION)
