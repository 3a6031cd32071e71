"""oracle.prelabel llm end to end: a real Prefect run, MLflow on SQLite, FAISS, the tiny BERT as
the encoder and a tiny random Llama as the pre-labeler, simulated people who see its proposals.
Round 0 has no human labels to show as demonstrations yet; round 1's proposals are few-shot
over round 0's labels, and every label records whether it accepted or corrected one."""

from __future__ import annotations

import json

import pytest

from alft.config import load_config
from alft.store.campaign_store import CampaignStore
from tests.conftest import campaign_yaml, read_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory, banking_subset):
    from tests.tiny_models import tiny_llama

    texts = [r["text"] for r in read_jsonl(banking_subset["pool"])]
    texts += json.loads(banking_subset["labels"].read_text())
    return tiny_llama(tmp_path_factory.mktemp("tiny-llm"), texts)


def run_campaign(tmp_path_factory, banking_subset, tiny_model, tiny_llm, prelabel: str, budget: int):
    """A simulated campaign with ``oracle.prelabel`` (2 shots) under Prefect: (config, summary, store, gold)."""
    from flows.campaign import campaign

    name = f"prelabel-{prelabel}"
    cfg = load_config(campaign_yaml(
        tmp_path_factory.mktemp(name), banking_subset, tiny_model, name=name, budget=budget,
        oracle={"kind": "simulated", "prelabel": prelabel, "prelabel_model": str(tiny_llm), "prelabel_shots": 2},
    ))
    summary = campaign(cfg)
    gold = {r["id"]: r["label"] for r in read_jsonl(banking_subset["pool"])}
    return cfg, summary, CampaignStore(cfg.store_url()), gold


@pytest.fixture(scope="module")
def llm_run(prefect_server, banking_subset, tiny_model, tiny_llm, tmp_path_factory):
    return run_campaign(tmp_path_factory, banking_subset, tiny_model, tiny_llm, "llm", budget=40)


def test_every_label_records_the_llm_proposal_it_answered(llm_run):
    cfg, summary, store, gold = llm_run
    assert [r.round for r in summary.rounds] == [0, 1]
    events = store.label_events(cfg.name)
    assert len(events) == 40 and len({e["example_id"] for e in events}) == 40
    for r in (0, 1):
        props = {p["example_id"]: p for p in store.proposals(cfg.name, r)}
        assert store.prelabel_round(cfg.name, r)["info"]["source"] == "llm"
        assert len(props) == 20 and {p["source"] for p in props.values()} == {"llm"}
        for e in (e for e in events if e["round"] == r):
            p = props[e["example_id"]]
            assert e["label"] == gold[e["example_id"]]  # the simulated expert is never swayed
            assert e["provenance"] == ("accepted" if p["label"] == e["label"] else "corrected")
    # round 0 had no human labels to show as demonstrations, round 1 shows round 0's
    assert store.prelabel_round(cfg.name, 0)["info"]["shots"] == 0
    assert store.prelabel_round(cfg.name, 1)["info"]["shots"] == 2


def test_mlflow_logs_the_prelabel_accuracy_and_provenance_counts_per_round(llm_run):
    from mlflow import MlflowClient

    cfg, _, store, gold = llm_run
    client = MlflowClient(cfg.tracking_uri())
    exp = client.get_experiment_by_name(cfg.experiment_name())
    runs = {r.data.tags.get("alft.round"): r for r in client.search_runs([exp.experiment_id])
            if r.data.tags.get("alft.kind") == "round"}
    for r in ("0", "1"):
        m = runs[r].data.metrics
        props = store.proposals(cfg.name, int(r))
        right = sum(gold[p["example_id"]] == p["label"] for p in props)
        assert m["prelabel.accuracy"] == pytest.approx(right / len(props))
        assert (m["labels.accepted"], m["labels.corrected"]) == (right, len(props) - right)
        assert m.get("labels.auto", 0) == 0 and m.get("auto.count", 0) == 0


@pytest.fixture(scope="module")
def pooled_run(prefect_server, banking_subset, tiny_model, tiny_llm, tmp_path_factory):
    return run_campaign(tmp_path_factory, banking_subset, tiny_model, tiny_llm, "pooled", budget=60)


def test_pooled_proposals_fit_their_share_on_the_previous_rounds_labels(pooled_run):
    """Round 0: the LLM alone (no classifier); round 1: the default share (no earlier round had
    both); round 2: the share fitted on round 1's 20 labeled proposals, logged to MLflow."""
    import numpy as np
    from mlflow import MlflowClient

    from alft.campaign.context import campaign_data
    from alft.campaign.prelabel import LIST_MIN_P, LIST_SIZE
    from alft.models.pooling import DEFAULT_SHARE, fit_share, pool

    cfg, summary, store, gold = pooled_run
    assert [r.round for r in summary.rounds] == [0, 1, 2]
    rounds = cfg.workdir_path() / "rounds"
    z = [dict(np.load(rounds / f"{r:03d}" / "proposal_probs.npz")) for r in range(3)]
    info = [store.prelabel_round(cfg.name, r)["info"] for r in range(3)]
    assert "clf" not in z[0] and info[0]["pool"].startswith("LLM only")
    np.testing.assert_allclose(z[0]["probs"], z[0]["llm"])
    assert info[1]["pool_share"] == DEFAULT_SHARE and info[1]["fitted"] == 0
    np.testing.assert_allclose(z[1]["probs"], pool(z[1]["clf"], z[1]["llm"], DEFAULT_SHARE), atol=1e-12)
    data = campaign_data(cfg)
    labels = data.labels
    y = np.asarray([labels.index(gold[data.pool.ids[int(p)]]) for p in z[1]["pool_ids"]])
    want, fit = fit_share(z[1]["clf"], z[1]["llm"], y, list_size=LIST_SIZE, min_p=LIST_MIN_P)
    assert fit["fitted"] == 1 and info[2]["pool_share"] == want and info[2]["fit_rows"] == 20
    np.testing.assert_allclose(z[2]["probs"], pool(z[2]["clf"], z[2]["llm"], want), atol=1e-12)
    for r in range(3):
        props = {p["example_id"]: p for p in store.proposals(cfg.name, r)}
        for i, pid in enumerate(z[r]["pool_ids"]):
            assert props[data.pool.ids[int(pid)]]["label"] == labels[int(z[r]["probs"][i].argmax())]

    client = MlflowClient(cfg.tracking_uri())
    exp = client.get_experiment_by_name(cfg.experiment_name())
    runs = {r.data.tags.get("alft.round"): r.data.metrics for r in client.search_runs([exp.experiment_id])
            if r.data.tags.get("alft.kind") == "round"}
    assert "prelabel.pool_share_llm" not in runs["0"]
    assert runs["1"]["prelabel.pool_share_llm"] == DEFAULT_SHARE and runs["1"]["prelabel.pool_fit_rows"] == 0
    assert runs["2"]["prelabel.pool_share_llm"] == want and runs["2"]["prelabel.pool_fit_rows"] == 20
