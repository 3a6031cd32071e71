"""Round 0 from an LLM zero-shot classifier (zero_shot.kind llm): a real Prefect campaign on a
tiny Llama selects by its margins and logs its accuracy; config errors for what it cannot give."""

from __future__ import annotations

import os

import numpy as np
import pytest

from alft.campaign.context import CampaignContext, campaign_data
from alft.campaign.rounds import prior_model, round_files
from alft.config import load_config
from alft.errors import ConfigError
from alft.models.llm_classifier import LLMLabeler
from alft.store.campaign_store import CampaignStore
from tests.conftest import SHARED, campaign_yaml, read_jsonl


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
    """A tiny random Llama with a chat template (tokenizer trained on BANKING77 texts)."""
    from tests.tiny_models import tiny_llama

    texts = [r["text"] for r in read_jsonl(SHARED / "banking77" / "train.jsonl")[:2000]]
    return tiny_llama(tmp_path_factory.mktemp("tiny-llm"), texts)


def _zero_shot(model, **over) -> dict:
    return {"kind": "llm", "model": str(model), "template": "Intent of: {text}", "temperature": 2.0, **over}


@pytest.mark.slow
def test_llm_round_0_through_the_prefect_flow_selects_by_its_margins(
    prefect_server, tmp_path, banking_subset, tiny_model, tiny_llm
):
    from flows.campaign import campaign

    cfg = load_config(
        campaign_yaml(
            tmp_path, banking_subset, tiny_model, name="zs-llm", budget=20,
            cold_start={"name": "margin"}, zero_shot=_zero_shot(tiny_llm, batch_size=8),
        )
    )
    summary = campaign(cfg)
    assert [r.round for r in summary.rounds] == [0] and summary.rounds[0].strategy == "margin"
    store = CampaignStore(cfg.store_url())
    ctx = CampaignContext(config=cfg, uid=store.campaign(cfg.name)["uid"])
    data = campaign_data(cfg)
    model = prior_model(ctx)
    assert isinstance(model, LLMLabeler) and model.labels == data.labels
    # round 0's probabilities are the LLM's, over every candidate, columns in label-set order
    files = round_files(ctx, 0)
    probs, cands = np.load(files["probs"]), np.load(files["candidates"])
    assert probs.shape == (len(data.pool), len(data.labels)) and not files["features"].exists()
    expect = model.probs([data.pool.texts[int(i)] for i in cands])
    np.testing.assert_allclose(probs, expect, atol=1e-6)
    # the batch is the 20 smallest margins
    top2 = np.sort(probs, axis=1)[:, -2:]
    chosen = set(cands[np.argsort(top2[:, 1] - top2[:, 0], kind="stable")[:20]].tolist())
    assert {s["pool_id"] for s in store.selections(cfg.name, 0)} == chosen
    # its eval accuracy is the learning curve's 0-label point
    gold = np.array([data.labels.index(g) for g in data.eval.gold])
    acc = float((model.probs(data.eval.texts).argmax(axis=1) == gold).mean())
    assert store.metrics(cfg.name)[0]["zero_shot.accuracy"] == pytest.approx(acc)


def test_llm_zero_shot_refuses_round_0_strategies_that_need_features(tmp_path, banking_subset, tiny_model, tiny_llm):
    with pytest.raises(ConfigError, match="cold_start: strategy 'badge' needs features, head .* zero_shot.kind llm gives probabilities only"):
        load_config(
            campaign_yaml(tmp_path, banking_subset, tiny_model, cold_start={"name": "badge"}, zero_shot=_zero_shot(tiny_llm))
        )
    with pytest.raises(ConfigError, match=r"template .* must contain \{text\} for kind llm"):
        load_config(
            campaign_yaml(
                tmp_path, banking_subset, tiny_model, cold_start={"name": "margin"},
                zero_shot=_zero_shot(tiny_llm, template="no placeholder"),
            )
        )
    # a relative model folder is read from the config file's folder
    rel = os.path.relpath(tiny_llm, tmp_path)
    cfg = load_config(
        campaign_yaml(tmp_path, banking_subset, tiny_model, cold_start={"name": "entropy"}, zero_shot=_zero_shot(rel))
    )
    assert rel.startswith("..") and cfg.zero_shot.model == str(tiny_llm.resolve()) and cfg.zero_shot.kind == "llm"
