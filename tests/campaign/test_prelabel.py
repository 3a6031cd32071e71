"""Proposals for a batch: computed once, the LLM's few-shot demonstrations by FAISS, and the
mixed oracle's auto / audit / human split with its auto labels (real store, real models)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import numpy as np
import pytest

from tests.conftest import campaign_yaml, read_jsonl


@dataclass
class Camp:
    ctx: object
    store: object
    pool: object
    labels: list[str]
    round0: list[int]  # pool ids labeled in round 0
    batch: list[int]  # pool ids of round 1's batch (waiting)


def build(tmp, files, model, oracle: dict, probs_for=None, round0_labels=None) -> Camp:
    """Round 0 (20 examples) labeled from gold, round 1 (10) selected and waiting; the score
    step's probs.npy for round 1 when ``probs_for(pid)`` gives a row."""
    from alft.campaign.context import CampaignContext, campaign_data
    from alft.config import load_config
    from alft.store.campaign_store import CampaignStore

    tmp.mkdir(parents=True, exist_ok=True)
    cfg = load_config(campaign_yaml(tmp, files, model, oracle=oracle))
    data = campaign_data(cfg)
    pool = data.pool
    store = CampaignStore(cfg.store_url())
    round0, batch = list(range(20)), list(range(20, 30))
    with store.transaction() as conn:
        store.create_campaign(
            conn, name=cfg.name, uid=uuid.uuid4().hex, config=cfg.model_dump(mode="json"), seed=cfg.seed,
            pool_digest=pool.digest, pool_size=len(pool), eval_digest=None, labels=data.labels, model_digest="t",
        )
        store.add_selections(conn, cfg.name, 0, [(pool.ids[i], i, None) for i in round0], "kmeans")
        store.finish_step(conn, cfg.name, 0, "select", {"k": 20}, 0.1)
        labs = round0_labels or {i: pool.gold[i] for i in round0}
        store.add_label_events(conn, cfg.name, 0, [(pool.ids[i], labs[i]) for i in round0], "oracle:gold", "simulated")
        store.finish_step(conn, cfg.name, 0, "labels", {}, 0.1)
        store.add_selections(conn, cfg.name, 1, [(pool.ids[i], i, 0.5) for i in batch], "margin")
        store.finish_step(conn, cfg.name, 1, "select", {"k": 10}, 0.1)
    if probs_for is not None:
        rdir = cfg.workdir_path() / "rounds" / "001"
        rdir.mkdir(parents=True, exist_ok=True)
        cand = np.arange(20, len(pool), dtype=np.int64)
        np.save(rdir / "candidates.npy", cand)
        np.save(rdir / "probs.npy", np.stack([probs_for(int(p)) for p in cand]).astype(np.float32))
    ctx = CampaignContext(config=cfg, uid=store.campaign(cfg.name)["uid"])
    return Camp(ctx, store, pool, data.labels, round0, batch)


def peaked(labels, label, p):
    v = np.full(len(labels), (1 - p) / (len(labels) - 1))
    v[labels.index(label)] = p
    return v


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory, banking_subset):
    """A tiny random Llama (with a chat template) whose tokenizer knows the BANKING77 words."""
    from tests.tiny_models import tiny_llama

    texts = [r["text"] for r in read_jsonl(banking_subset["pool"])]
    texts += json.loads(banking_subset["labels"].read_text())
    return tiny_llama(tmp_path_factory.mktemp("tiny-llm"), texts)


# --------------------------------------------------------------------------- demonstrations
def test_nearest_labeled_is_the_largest_inner_product():
    from alft.campaign.prelabel import nearest_labeled

    labeled = np.array([[1, 0], [0, 1], [0.6, 0.8], [-1, 0]], dtype=np.float32)
    query = np.array([[0.8, 0.6], [0.1, -1]], dtype=np.float32)
    # row 0: products 0.8, 0.6, 0.96, -0.8; row 1: 0.1, -1, -0.74, -0.1
    assert nearest_labeled(query, labeled, 2).tolist() == [[2, 0], [0, 3]]
    assert nearest_labeled(query, labeled, 9).shape == (2, 4)  # at most what is labeled
    assert nearest_labeled(query, labeled, 0).shape == (2, 0)


def test_llm_proposals_are_few_shot_with_the_nearest_human_labels_and_computed_once(
    tmp_path, banking_subset, tiny_model, tiny_llm, monkeypatch
):
    from alft.campaign import prelabel
    from alft.campaign.rounds import pool_embeddings
    from alft.store.batches import AUTO_SOURCE

    labels = json.loads(banking_subset["labels"].read_text())
    c = build(tmp_path, banking_subset, tiny_model,
              {"kind": "human", "wait": "poll", "prelabel": "llm", "prelabel_model": str(tiny_llm), "prelabel_shots": 3},
              probs_for=lambda pid: peaked(labels, labels[pid % len(labels)], 0.7))
    # an auto label never teaches the labeler
    with c.store.transaction() as conn:
        c.store.add_label_events(conn, c.ctx.name, 0, [(c.pool.ids[35], labels[0])], "llm-auto", AUTO_SOURCE)
    pids = np.asarray(c.batch)
    demos = prelabel.demonstrations(c.ctx, pids, 3)
    emb = pool_embeddings(c.ctx)
    want = np.argsort(-(emb[pids] @ emb[c.round0].T), axis=1, kind="stable")[:, :3]  # [10, 3] brute force
    assert [[t for t, _ in d] for d in demos] == [[c.pool.texts[c.round0[j]] for j in row] for row in want]
    assert all(lab == c.pool.gold[c.pool.texts.index(t)] for d in demos for t, lab in d)

    marker = prelabel.ensure_proposals(c.ctx, 1)
    assert marker["source"] == "llm" and marker["info"] == {"source": "llm", "shots": 3}
    props = c.store.proposals(c.ctx.name, 1)
    assert sorted(p["example_id"] for p in props) == sorted(c.pool.ids[i] for i in c.batch)
    assert all(p["label"] in labels and 0 < p["confidence"] <= 1 and p["source"] == "llm" for p in props)
    llm = prelabel._llm_labeler(str(tiny_llm), tuple(labels), c.ctx.config.model.device)
    again = llm.probs([c.pool.texts[i] for i in c.batch], demos=demos)  # [10, C]
    by_id = {p["example_id"]: p for p in props}
    for i, pid in enumerate(c.batch):
        p = by_id[c.pool.ids[pid]]
        assert p["label"] == labels[int(again[i].argmax())]
        assert p["confidence"] == pytest.approx(float(again[i].max()))
        assert p["agrees"] == (p["label"] == labels[pid % len(labels)])  # the classifier's top label

    def boom(*a, **k):
        raise AssertionError("proposals computed twice")

    monkeypatch.setattr(prelabel, "compute_proposals", boom)
    assert prelabel.ensure_proposals(c.ctx, 1) == marker
    assert c.store.proposals(c.ctx.name, 1) == props


def test_llm_proposals_score_the_label_descriptions_when_given(tmp_path, banking_subset, tiny_model, tiny_llm):
    from alft.campaign import prelabel

    labels = json.loads(banking_subset["labels"].read_text())
    described = {labels[0]: "a card that has not arrived yet", labels[1]: "a question about exchange rates"}
    c = build(tmp_path, banking_subset, tiny_model,
              {"kind": "human", "wait": "poll", "prelabel": "llm", "prelabel_model": str(tiny_llm), "prelabel_shots": 0,
               "prelabel_descriptions": described},
              probs_for=lambda pid: peaked(labels, labels[pid % len(labels)], 0.7))
    assert prelabel.prelabel_descriptions(c.ctx.config) == described
    prelabel.ensure_proposals(c.ctx, 1)
    key = json.dumps(described, sort_keys=True, ensure_ascii=False)
    llm = prelabel._llm_labeler(str(tiny_llm), tuple(labels), c.ctx.config.model.device, key)
    assert prelabel._llm_labeler.cache_info().hits >= 1  # the labeler the proposals used
    # the described labels are scored as their descriptions, the rest by their names in lower case
    assert llm.verbalizations[:2] == list(described.values())
    assert llm.verbalizations[2] == labels[2].replace("_", " ").replace("-", " ").lower()


def test_prelabel_descriptions_fall_back_to_zero_shot_and_bad_ones_stop_the_preflight(tmp_path, banking_subset, tiny_model):
    from alft.campaign.context import preflight
    from alft.campaign.prelabel import prelabel_descriptions
    from alft.config import load_config
    from alft.errors import ConfigError

    labels = json.loads(banking_subset["labels"].read_text())
    zs = {"kind": "similarity", "descriptions": {labels[3]: "lost or stolen card"}}
    cfg = load_config(campaign_yaml(tmp_path, banking_subset, tiny_model, zero_shot=zs,
                                    oracle={"kind": "simulated", "prelabel": "llm"}))
    assert prelabel_descriptions(cfg) == {labels[3]: "lost or stolen card"}
    (tmp_path / "desc.json").write_text(json.dumps({"no_such_intent": "x", labels[0]: "y"}))
    cfg = load_config(campaign_yaml(tmp_path, banking_subset, tiny_model, zero_shot=zs,
                                    oracle={"kind": "simulated", "prelabel": "llm", "prelabel_descriptions": "desc.json"}))
    assert cfg.oracle.prelabel_descriptions == str(tmp_path / "desc.json")  # relative to the config file
    with pytest.raises(ConfigError, match=r"oracle.prelabel_descriptions: 1 label\(s\) not in the label set .*no_such_intent"):
        preflight(cfg)


def test_zero_shots_means_no_demonstrations(tmp_path, banking_subset, tiny_model):
    from alft.campaign import prelabel

    c = build(tmp_path, banking_subset, tiny_model, {"kind": "human", "wait": "poll", "prelabel_shots": 0})
    assert prelabel.demonstrations(c.ctx, np.asarray(c.batch), 0) is None


def test_model_proposals_come_from_the_score_steps_probabilities(tmp_path, banking_subset, tiny_model):
    from alft.campaign.prelabel import ensure_proposals
    from alft.human.proposals import batch_shown

    labels = json.loads(banking_subset["labels"].read_text())
    c = build(tmp_path, banking_subset, tiny_model, {"kind": "human", "wait": "poll"},
              probs_for=lambda pid: peaked(labels, labels[pid % 8], 0.4 + 0.05 * (pid % 10)))
    items = c.store.selections(c.ctx.name, 1)
    before, final = batch_shown(c.ctx, 1, items)  # not stored yet: what the page showed before v4
    assert final is False
    ensure_proposals(c.ctx, 1)
    after, final = batch_shown(c.ctx, 1, items)
    assert final is True and after == before
    got = {p["example_id"]: (p["label"], p["confidence"], p["agrees"]) for p in c.store.proposals(c.ctx.name, 1)}
    assert got == {
        c.pool.ids[pid]: (labels[pid % 8], pytest.approx(0.4 + 0.05 * (pid % 10), abs=1e-6), True) for pid in c.batch
    }


def test_mixed_accepts_above_the_calibrated_threshold_and_audits_blind(tmp_path, banking_subset, tiny_model):
    """Calibration on round 0 (20 agreeing proposals at 0.95, 2 of them wrong: bound 0.283 at
    95 %), max_error 0.3, min 20: t = 0.95; round 1: 4 proposals at >= 0.95, one already
    labeled by a person (no decision), so ceil(0.5 * 3) = 2 of the other 3 are audited."""
    from alft.campaign.mixed import clopper_pearson_upper
    from alft.campaign.prelabel import ensure_proposals
    from alft.human.labeling import LabelItem, submit
    from alft.human.proposals import batch_shown

    labels = json.loads(banking_subset["labels"].read_text())
    conf = {20: 0.99, 21: 0.97, 22: 0.95, 23: 0.95, 24: 0.9, 25: 0.6}

    def probs_for(pid):
        return peaked(labels, labels[pid % 8], conf.get(pid, 0.5))

    c = build(tmp_path, banking_subset, tiny_model,
              {"kind": "mixed", "human": "human", "wait": "poll",
               "mixed": {"max_error": 0.3, "min_calibration": 20, "audit_share": 0.5}},
              probs_for=probs_for)
    name = c.ctx.name
    gold = c.pool.gold
    wrong = {0, 1}
    with c.store.transaction() as conn:  # round 0's proposals, as if stored then
        c.store.add_proposals(conn, name, 0, "model", [
            {"example_id": c.pool.ids[i], "label": next(lab for lab in labels if lab != gold[i]) if i in wrong else gold[i],
             "confidence": float(np.float32(0.95)), "agrees": True} for i in c.round0
        ], {})
    assert clopper_pearson_upper(2, 20, 0.95) == pytest.approx(0.2826, abs=1e-4)
    # a person labeled pool id 20 before the proposals were computed
    submit(c.store, name, [LabelItem(c.pool.ids[20], gold[20])], annotator="early", source="page", label_set=c.labels)

    marker = ensure_proposals(c.ctx, 1)
    info = marker["info"]
    assert (info["threshold"], info["calibration_n"], info["n_at_threshold"], info["errors_at_threshold"]) == (
        pytest.approx(0.95), 20, 20, 2)
    decisions = {p["example_id"]: p["decision"] for p in c.store.proposals(name, 1)}
    eligible = [c.pool.ids[i] for i in (21, 22, 23)]  # >= 0.95 and not labeled already
    assert decisions[c.pool.ids[20]] is None
    assert sorted(decisions[e] for e in eligible) == ["audit", "audit", "auto"]
    assert all(decisions[c.pool.ids[i]] is None for i in range(24, 30))
    assert (info["auto"], info["audit"]) == (1, 2)
    auto_id = next(e for e in eligible if decisions[e] == "auto")
    events = [e for e in c.store.label_events(name) if e["source"] == "auto"]
    assert [(e["example_id"], e["annotator"], e["provenance"], e["proposal"]) for e in events] == [
        (auto_id, "llm-auto", "auto", labels[c.pool.pool_id(auto_id) % 8])
    ]
    # people see the rest: proposals shown, except the audited ones (blind) and the auto one (done)
    shown, _ = batch_shown(c.ctx, 1, c.store.selections(name, 1))
    audited = {e for e in eligible if decisions[e] == "audit"}
    assert set(shown) == {c.pool.ids[i] for i in c.batch} - audited - {auto_id}
    # the same seed and round audit the same examples
    c2 = build(tmp_path / "again", banking_subset, tiny_model, c.ctx.config.oracle.model_dump(), probs_for=probs_for)
    with c2.store.transaction() as conn:
        c2.store.add_proposals(conn, c2.ctx.name, 0, "model", c.store.proposals(name, 0), {})
    submit(c2.store, c2.ctx.name, [LabelItem(c.pool.ids[20], gold[20])], annotator="early", source="page", label_set=c.labels)
    ensure_proposals(c2.ctx, 1)
    assert {p["example_id"]: p["decision"] for p in c2.store.proposals(c2.ctx.name, 1)} == decisions


# --------------------------------------------------------------------------- pooled
def test_pooled_proposals_mix_classifier_and_llm_and_keep_their_probabilities(
    tmp_path, banking_subset, tiny_model, tiny_llm
):
    from alft.campaign import prelabel
    from alft.models.pooling import DEFAULT_SHARE, pool

    labels = json.loads(banking_subset["labels"].read_text())
    c = build(tmp_path, banking_subset, tiny_model,
              {"kind": "human", "wait": "poll", "prelabel": "pooled", "prelabel_model": str(tiny_llm), "prelabel_shots": 2},
              probs_for=lambda pid: peaked(labels, labels[pid % len(labels)], 0.7))
    pids = np.asarray(c.batch)
    marker = prelabel.ensure_proposals(c.ctx, 1)
    # round 1: no earlier round had both sources, so the share is the default
    assert marker["source"] == "pooled"
    assert marker["info"] == {"source": "pooled", "shots": 2, "pool_share": DEFAULT_SHARE, "fit_rows": 0, "fitted": 0}
    saved = prelabel.proposal_probs(c.ctx, 1)
    assert saved["pool_ids"].tolist() == c.batch and float(saved["share"]) == DEFAULT_SHARE
    llm = prelabel._llm_labeler(str(tiny_llm), tuple(labels), c.ctx.config.model.device)
    want_llm = llm.probs([c.pool.texts[i] for i in c.batch], demos=prelabel.demonstrations(c.ctx, pids, 2))  # [10, C]
    clf = np.stack([peaked(labels, labels[p % len(labels)], 0.7) for p in c.batch]).astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(saved["llm"], want_llm, atol=1e-12)
    np.testing.assert_allclose(saved["clf"], clf, atol=1e-12)
    np.testing.assert_allclose(saved["probs"], pool(clf, want_llm, DEFAULT_SHARE), atol=1e-12)
    by_id = {p["example_id"]: p for p in c.store.proposals(c.ctx.name, 1)}
    for i, pid in enumerate(c.batch):
        p = by_id[c.pool.ids[pid]]
        assert p["label"] == labels[int(saved["probs"][i].argmax())]
        assert p["confidence"] == pytest.approx(float(saved["probs"][i].max()))
        assert p["agrees"] == (want_llm[i].argmax() == pid % len(labels))  # the two sources' top labels


def test_pooled_share_is_fitted_on_earlier_rounds_human_labels_only(tmp_path, banking_subset, tiny_model, monkeypatch):
    from alft.campaign import prelabel
    from alft.campaign.prelabel import LIST_MIN_P, LIST_SIZE
    from alft.models import pooling
    from alft.store.batches import AUTO_SOURCE

    labels = json.loads(banking_subset["labels"].read_text())
    c = build(tmp_path, banking_subset, tiny_model, {"kind": "human", "wait": "poll", "prelabel": "pooled"})
    rng = np.random.default_rng(1)
    k, n_lab = len(c.batch), len(labels)
    clf = rng.dirichlet(np.ones(n_lab), k)  # [10, C]
    llm = rng.dirichlet(np.ones(n_lab), k)
    prelabel.save_proposal_probs(c.ctx, 1, np.asarray(c.batch), clf, llm, clf, 0.5)
    # round 0 had no classifier: its file has no clf rows and never enters the fit
    prelabel.save_proposal_probs(c.ctx, 0, np.asarray(c.round0), llm[:1].repeat(20, 0), llm[:1].repeat(20, 0), None, None)
    people = c.batch[:7]
    with c.store.transaction() as conn:
        c.store.add_label_events(conn, c.ctx.name, 1, [(c.pool.ids[p], c.pool.gold[p]) for p in people], "ann", "human")
        c.store.add_label_events(conn, c.ctx.name, 1, [(c.pool.ids[c.batch[8]], labels[0])], "llm-auto", AUTO_SOURCE)
    y = np.asarray([labels.index(c.pool.gold[p]) for p in people])
    assert prelabel.pool_share(c.ctx, 2) == (pooling.DEFAULT_SHARE, {"fit_rows": 7, "fitted": 0})  # under MIN_FIT
    monkeypatch.setattr(pooling, "MIN_FIT", 1)
    want = pooling.fit_share(clf[:7], llm[:7], y, list_size=LIST_SIZE, min_p=LIST_MIN_P)
    assert want[1]["fitted"] == 1 and prelabel.pool_share(c.ctx, 2) == want


def test_pooled_needs_classification(tmp_path, banking_subset, tiny_model):
    from alft.config import CampaignConfig, load_config

    cfg = load_config(campaign_yaml(tmp_path, banking_subset, tiny_model, oracle={"kind": "simulated", "prelabel": "pooled"}))
    raw = cfg.model_dump(mode="json")
    raw.update(task="generation")
    raw["data"]["labels"] = None
    raw["trainer"]["kind"] = "sft"
    with pytest.raises(ValueError, match="oracle.prelabel pooled pools class probabilities: it needs task classification"):
        CampaignConfig.model_validate(raw)
