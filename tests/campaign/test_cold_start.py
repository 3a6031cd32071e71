"""Round 0 from the pretrained model: zero-shot probabilities let the cold start use
uncertainty and hybrid strategies, and the zero-shot accuracy is the 0-label point."""

from __future__ import annotations

import numpy as np
import pytest

from alft.campaign.context import CampaignContext, campaign_data
from alft.config import load_config
from alft.errors import ConfigError
from alft.campaign.rounds import pool_embeddings, prior_model, round_files, selection_embeddings
from alft.store.campaign_store import CampaignStore
from benchmarks.plain import run_plain
from tests.conftest import campaign_yaml


def _ctx(cfg):
    store = CampaignStore(cfg.store_url())
    return store, CampaignContext(config=cfg, uid=store.campaign(cfg.name)["uid"])


def test_zero_shot_round_0_selects_by_margin_and_logs_its_accuracy(tmp_path, banking_subset, tiny_model):
    cfg = load_config(
        campaign_yaml(
            tmp_path, banking_subset, tiny_model, name="zs", budget=40,
            cold_start={"name": "margin"}, zero_shot={"template": "a question about {label}", "temperature": 0.1},
        )
    )
    run_plain(cfg)
    store, ctx = _ctx(cfg)
    m0 = store.metrics(cfg.name)[0]
    assert 0 <= m0["zero_shot.accuracy"] <= 1 and "zero_shot.macro_f1" in m0
    # the round-0 batch is the 20 smallest zero-shot margins among all candidates
    files = round_files(ctx, 0)
    probs, cands = np.load(files["probs"]), np.load(files["candidates"])
    data = campaign_data(cfg)
    assert probs.shape == (len(data.pool), len(data.labels))
    top2 = np.sort(probs, axis=1)[:, -2:]
    expected = set(cands[np.argsort(top2[:, 1] - top2[:, 0], kind="stable")[:20]].tolist())
    assert {s["pool_id"] for s in store.selections(cfg.name, 0)} == expected
    # the zero-shot model is the campaign's embeddings against its label sentences
    emb = pool_embeddings(ctx)[cands]
    assert np.allclose(prior_model(ctx).predict_proba([""] * len(cands), emb), probs, atol=1e-6)


def test_badge_in_round_0_uses_the_zero_shot_head(tmp_path, banking_subset, tiny_model):
    cfg = load_config(
        campaign_yaml(
            tmp_path, banking_subset, tiny_model, name="zs-badge", budget=20,
            cold_start={"name": "badge"}, zero_shot={},
        )
    )
    run_plain(cfg)
    store, ctx = _ctx(cfg)
    files = round_files(ctx, 0)
    assert files["features"].exists() and files["head"].exists()
    assert len(store.selections(cfg.name, 0)) == 20


def test_without_zero_shot_round_0_refuses_model_strategies(tmp_path, banking_subset, tiny_model):
    with pytest.raises(ConfigError, match="cold_start: strategy 'margin' needs probs .* set zero_shot"):
        load_config(campaign_yaml(tmp_path, banking_subset, tiny_model, cold_start={"name": "margin"}))
    with pytest.raises(ConfigError, match="cold_start: strategy 'bald' needs prob_samples"):
        load_config(
            campaign_yaml(tmp_path, banking_subset, tiny_model, cold_start={"name": "bald"}, zero_shot={})
        )


def test_current_embeddings_come_from_the_fine_tuned_model(tmp_path, banking_subset, tiny_model):
    cfg = load_config(
        campaign_yaml(
            tmp_path, banking_subset, tiny_model, name="cur", budget=40, strategy={"name": "kcenter"},
            trainer={"kind": "transformer", "transformer": {"epochs": 1, "batch_size": 16, "max_length": 64}},
        ),
        ["model.embeddings=current"],
    )
    run_plain(cfg)
    store, ctx = _ctx(cfg)
    f = round_files(ctx, 1)["embeddings"]
    assert f.exists()
    cur = np.load(f)
    base = np.asarray(selection_embeddings(ctx, 0))
    n = len(campaign_data(cfg).pool)
    assert cur.shape == (n, 32) and base.shape[0] == n
    assert np.allclose(np.linalg.norm(cur, axis=1), 1.0, atol=1e-5)
    # the round-1 model's features, not the frozen encoder's mean-pooled vectors
    assert not np.allclose(cur, base[:, : cur.shape[1]], atol=1e-3)
    assert len(store.selections(cfg.name)) == 40


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"task": "generation"}, "task 'generation' cannot use trainer.kind 'head'"),
        ({"trainer": {"kind": "sft"}}, "task 'classification' cannot use trainer.kind 'sft'"),
        ({"strategy": {"name": "token_entropy"}}, "strategy 'token_entropy' needs generation, which a classification model"),
        ({"model.embeddings": "current"}, "model.embeddings 'current' needs a fine-tuned encoder"),
        ({"zero_shot": {"template": "no placeholder"}}, "template must contain \\{label\\}"),
        ({"stop": {"plateau": {"metric": "rouge_l"}}}, "stop rule metric 'rouge_l' is not measured in a classification"),
    ],
)
def test_task_trainer_and_strategy_must_fit_together(tmp_path, banking_subset, tiny_model, over, message):
    dotted = {k: v for k, v in over.items() if "." in k}
    top = {k: v for k, v in over.items() if "." not in k}
    with pytest.raises(ConfigError, match=message):
        load_config(
            campaign_yaml(tmp_path, banking_subset, tiny_model, **top), [f"{k}={v}" for k, v in dotted.items()]
        )
