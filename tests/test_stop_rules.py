"""The history-based stop rules wired into a real campaign loop (plain step functions)."""

from __future__ import annotations

import numpy as np
import pytest

from alft.campaign.context import CampaignContext
from alft.config import load_config
from alft.errors import ConfigError
from alft.campaign.rounds import round_files, stop_set
from alft.store.campaign_store import CampaignStore
from benchmarks.plain import run_plain
from strategies.stopping import cohen_kappa
from tasks.campaign import build_summary
from tests.conftest import campaign_yaml


def _run(tmp_path, banking_subset, tiny_model, name, stop, **over):
    cfg = load_config(campaign_yaml(tmp_path, banking_subset, tiny_model, name=name, stop=stop, **over))
    run_plain(cfg)
    store = CampaignStore(cfg.store_url())
    ctx = CampaignContext(config=cfg, uid=store.campaign(cfg.name)["uid"])
    return cfg, store, ctx


def test_uncertainty_rule_stops_on_the_pool_uncertainty_of_the_round_model(tmp_path, banking_subset, tiny_model):
    # mean least confidence is always below 1: the rule fires after round 0
    cfg, store, ctx = _run(tmp_path, banking_subset, tiny_model, "unc", {"uncertainty": {"threshold": 1.0}})
    camp = store.campaign(cfg.name)
    assert camp["stop_rule"] == "uncertainty" and camp["stopped_round"] == 0
    unc = store.metrics(cfg.name)[0]["pool_uncertainty"]
    assert 0 < unc < 1 and f"{unc:.4f}" in camp["stop_reason"]
    assert build_summary(ctx).rounds[0].pool_uncertainty == pytest.approx(unc)


def test_stabilizing_rule_reads_kappa_of_consecutive_predictions_on_a_fixed_pool_sample(
    tmp_path, banking_subset, tiny_model
):
    stop = {"stabilizing": {"threshold": 0.99, "window": 3, "stop_set": "pool_sample", "stop_set_size": 60}}
    cfg, store, ctx = _run(tmp_path, banking_subset, tiny_model, "kappa", stop)
    preds = [np.load(round_files(ctx, r)["stop_pred"]) for r in range(3)]
    assert all(p.shape == (60,) for p in preds) and len(stop_set(ctx)) == 60
    summary = build_summary(ctx)
    assert summary.rounds[0].kappa is None
    for r in (1, 2):
        assert summary.rounds[r].kappa == pytest.approx(cohen_kappa(preds[r - 1], preds[r]))
    assert store.campaign(cfg.name)["stop_rule"] == "budget"  # tiny model: predictions still move


def test_forecast_is_recorded_every_round_and_can_stop(tmp_path, banking_subset, tiny_model):
    stop = {"forecast": {"min_rounds": 3, "patience": 1, "min_gain_per_label": 0.5}}
    cfg, store, ctx = _run(tmp_path, banking_subset, tiny_model, "fc", stop, budget=100)
    res = [store.step_result(cfg.name, r, "stop") for r in range(3)]
    assert [r["forecast"]["status"] for r in res[:2]] == ["too_few_points", "too_few_points"]
    fc = res[2]["forecast"]
    if fc["status"] == "ok":
        # a gain of half a point per label is never forecast: the rule stops at round 2
        assert res[2]["stop"] and res[2]["rule"] == "forecast" and fc["gain_per_label"] < 0.5
        assert fc["n_next"] == fc["n_last"] + 20
    else:  # a fit this noisy may be refused, and then it never stops the campaign
        assert fc["status"] in ("fit_failed", "poor_fit") and res[2]["rule"] != "forecast"
    assert build_summary(ctx).rounds[2].forecast == fc


@pytest.mark.parametrize(
    ("over", "overrides", "message"),
    [
        ({"task": "generation", "trainer": {"kind": "sft"}, "data": None, "strategy": {"name": "token_entropy"}},
         ["stop.uncertainty.threshold=0.1"],
         "stop.uncertainty reads class predictions"),
        ({}, ["stop.stabilizing.window=0"], "stop.stabilizing.window: Input should be greater than or equal to 1"),
        ({}, ["stop.forecast.min_rounds=2"], "stop.forecast.min_rounds: Input should be greater than or equal to 3"),
        ({}, ["stop.forecast.metric=rouge_l"], "stop rule metric 'rouge_l' is not measured in a classification"),
    ],
)
def test_bad_stop_rule_configs_are_named(tmp_path, banking_subset, tiny_model, over, overrides, message):
    over = dict(over)
    if "data" in over:  # a generation campaign: no label set
        over["data"] = {"pool": {"path": str(banking_subset["pool"])}, "eval": {"path": str(banking_subset["eval"])},
                        "instruction_field": "text"}
    with pytest.raises(ConfigError, match=message):
        load_config(campaign_yaml(tmp_path, banking_subset, tiny_model, **over), overrides)
