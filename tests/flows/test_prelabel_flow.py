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


@pytest.fixture(scope="module")
def llm_run(prefect_server, banking_subset, tiny_model, tiny_llm, tmp_path_factory):
    from flows.campaign import campaign

    tmp = tmp_path_factory.mktemp("prelabel-llm")
    cfg = load_config(campaign_yaml(
        tmp, banking_subset, tiny_model, name="prelabel-llm", budget=40,
        oracle={"kind": "simulated", "prelabel": "llm", "prelabel_model": str(tiny_llm), "prelabel_shots": 2},
    ))
    summary = campaign(cfg)
    store = CampaignStore(cfg.store_url())
    gold = {r["id"]: r["label"] for r in read_jsonl(banking_subset["pool"])}
    return cfg, summary, store, gold


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
