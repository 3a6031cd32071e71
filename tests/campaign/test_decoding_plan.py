"""How many candidates a generation round greedy-decodes: the shortlist for the scorers that read
the model's own response, none for ifd alone (``alft.campaign.rounds.decoding_plan``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from alft.campaign import rounds
from alft.config import SFTTrainerConfig, StrategyConfig


def ctx_with(strategy: StrategyConfig, shortlist: float = 4.0):
    cfg = SimpleNamespace(trainer=SimpleNamespace(sft=SFTTrainerConfig(decode_shortlist=shortlist)))
    return SimpleNamespace(config=cfg, strategy_config=lambda r: strategy)


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (StrategyConfig(name="token_entropy"), (40, "entropy")),
        (StrategyConfig(name="sequence_nll"), (40, "nll")),
        (StrategyConfig(name="ifd"), (0, "entropy")),
        (StrategyConfig(name="two_stage", options={"score": "token_entropy", "beta": 2.0}), (40, "entropy")),
        (StrategyConfig(name="two_stage", options={"score": "ifd", "diversity": "kcenter"}), (0, "entropy")),
        (StrategyConfig(name="fusion", options={"weights": {"ifd": 0.5, "sequence_nll": 0.5}}), (40, "nll")),
        (StrategyConfig(name="fusion", options={"weights": {"token_entropy": 1, "sequence_nll": 1}}), (40, "entropy")),
        # a composite whose parts the options do not name: decode the shortlist (never wrong, only slower)
        (StrategyConfig(name="schedule"), (40, "entropy")),
    ],
)
def test_the_plan_follows_the_scorers_the_strategy_names(strategy, expected, monkeypatch):
    monkeypatch.setattr(rounds, "batch_size_for", lambda ctx, r, m: 10)
    assert rounds.decoding_plan(ctx_with(strategy), 1, 300) == expected


def test_the_shortlist_is_a_multiple_of_the_batch_capped_by_the_candidates(monkeypatch):
    monkeypatch.setattr(rounds, "batch_size_for", lambda ctx, r, m: min(10, m))
    te = StrategyConfig(name="token_entropy")
    assert rounds.decoding_plan(ctx_with(te, 2.5), 1, 300) == (25, "entropy")
    assert rounds.decoding_plan(ctx_with(te, 4.0), 1, 30) == (30, "entropy")  # fewer candidates than 4 x 10
    assert rounds.decoding_plan(ctx_with(te, 4.0), 1, 0) == (0, "entropy")
