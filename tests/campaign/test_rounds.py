"""The loop without Prefect: model outputs reach every strategy, and adaptive ones see history."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alft.campaign.context import CampaignContext
from alft.config import load_config
from alft.campaign.rounds import round_files, round_history, round_model
from alft.store.campaign_store import CampaignStore
from benchmarks.plain import run_plain
from tests.conftest import campaign_yaml


def _run(tmp_path, banking_subset, tiny_model, name, strategy, **over):
    path = campaign_yaml(
        tmp_path, banking_subset, tiny_model, name=name, strategy=strategy, budget=80, **over
    )
    cfg = load_config(path)
    run_plain(cfg)
    store = CampaignStore(cfg.store_url())
    return cfg, store, CampaignContext(config=cfg, uid=store.campaign(cfg.name)["uid"])


def test_bandit_over_model_based_arms_runs_and_records_its_choices(tmp_path, banking_subset, tiny_model):
    arms = ["bald", "egl", "badge", "margin"]
    cfg, store, ctx = _run(
        tmp_path, banking_subset, tiny_model, "bandit-run", {"name": "bandit", "options": {"arms": arms}},
        trainer={"kind": "head", "mc_samples": 4, "head": {"C": 10.0}},
    )
    sel = store.selections(cfg.name)
    assert len(sel) == 80 and len({s["example_id"] for s in sel}) == 80
    infos = [store.step_result(cfg.name, r, "select").get("info") for r in (1, 2, 3)]
    assert all(i["policy"] == "thompson" and i["arm"] in arms for i in infos)
    assert all(i["arm"] == max(i["draws"], key=i["draws"].get) for i in infos)
    # the replayed history counts exactly the pulls made before each round
    assert [sum(i["pulls"].values()) for i in infos] == [0, 1, 2]
    hist = round_history(ctx, 3)
    assert [h.strategy for h in hist] == ["kmeans", infos[0]["arm"], infos[1]["arm"]]
    assert hist[0].agreement is None and 0.0 <= hist[2].agreement <= 1.0
    # the reward's numbers, by hand from round 2's probs.npy (scored by round 1's model) and the labels
    assert hist[0].batch_error is None and hist[0].expected_error is None  # round 0: no model scored it
    probs, cand = np.load(round_files(ctx, 2)["probs"]), np.load(round_files(ctx, 2)["candidates"])
    labels, gold = json.loads(banking_subset["labels"].read_text()), store.current_labels(cfg.name)
    row = {int(p): i for i, p in enumerate(cand.tolist())}
    wrong = [labels[int(probs[row[s["pool_id"]]].argmax())] != gold[s["example_id"]] for s in store.selections(cfg.name, 2)]
    assert hist[2].batch_error == pytest.approx(np.mean(wrong))
    assert hist[2].expected_error == pytest.approx(float(np.mean(1 - probs.max(axis=1))))
    # ... computed by the score step while the probabilities were in memory, not re-read
    assert store.step_result(cfg.name, 2, "score")["expected_error"] == hist[2].expected_error
    assert infos[2]["last_reward"] == pytest.approx(hist[2].batch_error - hist[2].expected_error)
    # every model-derived input the arms need was persisted for select by round 1's score step
    files = round_files(ctx, 1)
    for key in ("probs", "prob_samples", "features", "head"):
        assert files[key].exists(), key
    assert np.load(files["prob_samples"]).shape[2] == 4


def test_select_sees_exactly_what_score_saw(tmp_path, banking_subset, tiny_model):
    from alft.campaign.rounds import load_model_inputs, model_inputs

    cfg, store, ctx = _run(tmp_path, banking_subset, tiny_model, "bald-run", {"name": "bald"})
    needs = frozenset({"probs", "prob_samples"})  # what bald asks for, and probs always
    cands = np.load(round_files(ctx, 2)["candidates"])
    saved = load_model_inputs(ctx, 2, needs)
    fresh = model_inputs(ctx, 2, needs, cands)
    # the same model, the same round's MC stream: a recomputation reproduces the saved arrays
    for key in sorted(needs):
        assert saved[key].shape == fresh[key].shape, key
        np.testing.assert_allclose(saved[key], fresh[key], atol=1e-6, err_msg=key)
    assert not round_files(ctx, 2)["features"].exists()  # nothing bald does not need
    assert round_model(ctx, 1).kind == "head"
    # and the selection is the top of BALD over exactly those samples
    from strategies import QueryInputs, get_strategy

    q = get_strategy("bald").score(QueryInputs(unlabeled=cands, prob_samples=saved["prob_samples"]))
    chosen = [s["pool_id"] for s in store.selections(cfg.name, 2)]
    rows = np.searchsorted(cands, chosen)
    assert q[rows].min() >= np.sort(q)[-len(chosen)] - 1e-12


def test_cold_start_refuses_model_based_strategies(tmp_path, banking_subset, tiny_model):
    from alft.errors import ConfigError

    path = campaign_yaml(tmp_path, banking_subset, tiny_model, cold_start={"name": "egl"})
    with pytest.raises(ConfigError, match=r"cold_start: strategy 'egl' needs features, head from a trained model"):
        load_config(path)


def test_dedup_gate_is_applied_from_config(tmp_path, banking_subset, tiny_model):
    from alft.campaign.rounds import pool_embeddings

    t = 0.97  # the tiny random encoder puts most texts at 0.85-0.95 of each other
    cfg, store, ctx = _run(tmp_path, banking_subset, tiny_model, "dedup-run", {"name": "margin", "dedup": t})
    emb = pool_embeddings(ctx)
    dropped = 0
    for r in (1, 2, 3):
        info = store.step_result(cfg.name, r, "select")["info"]
        assert info["dedup_threshold"] == t
        json.dumps(info)  # what the store holds is plain JSON
        before = [s["pool_id"] for s in store.selections(cfg.name) if s["round"] < r]
        batch = [s["pool_id"] for s in store.selections(cfg.name, r)]
        near_labeled = (emb[batch] @ emb[before].T).max(1) >= t - 1e-6  # [k]
        inner = emb[batch] @ emb[batch].T  # [k, k]
        near_earlier = np.array([(inner[i, :i] >= t - 1e-6).any() for i in range(len(batch))])
        # only the fill (when non-duplicates run out) may hold a near-copy
        assert int((near_labeled | near_earlier).sum()) <= info["dedup_filled"], f"round {r}"
        dropped += info["dedup_dropped_labeled"] + info["dedup_dropped_in_batch"]
    assert dropped > 0  # the gate had something to do on this pool


def test_the_schedule_switches_when_the_labels_cover_the_classes(tmp_path, banking_subset, tiny_model):
    labels = json.loads(banking_subset["labels"].read_text())
    cfg, store, ctx = _run(
        tmp_path, banking_subset, tiny_model, "schedule-run",
        {"name": "schedule", "options": {"switch_coverage": 1.0}}, initial_size=5, batch_size=25,
    )
    hist = round_history(ctx, 4)
    # each round's coverage, by hand: the classes among the gold labels of every batch so far
    gold = store.current_labels(cfg.name)
    seen: set[str] = set()
    for h in hist:
        seen |= {gold[s["example_id"]] for s in store.selections(cfg.name, h.round)}
        assert h.class_coverage == pytest.approx(len(seen & set(labels)) / len(labels)), h.round
        assert store.metrics(cfg.name)[h.round]["class_coverage"] == h.class_coverage  # an MLflow metric too
    # the phase of round r follows round r-1's coverage, and says why
    for h in hist[1:]:
        info = store.step_result(cfg.name, h.round, "select")["info"]
        before = hist[h.round - 1].class_coverage
        assert info["phase"] == ("late" if before >= 1.0 else "early"), (h.round, before, info)
        assert f"class coverage {before:.3f}" in info["reason"]
        assert info["arm"] == ("margin" if before >= 1.0 else "kmeans")
    # 5 labels cannot cover 8 classes, so both phases happen
    phases = [store.step_result(cfg.name, h.round, "select")["info"]["phase"] for h in hist[1:]]
    assert phases[0] == "early" and "late" in phases, phases
