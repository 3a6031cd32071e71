"""oracle.kind mixed end to end: a real Prefect run, MLflow on SQLite, FAISS, the tiny BERT,
simulated people. Round 1's people calibrate the threshold; round 2 accepts what passes it
without a human, audits a share blind, and MLflow and the export say so."""

from __future__ import annotations

import math

import pytest

from alft.config import load_config
from alft.store.campaign_store import CampaignStore
from tests.conftest import campaign_yaml, read_jsonl

pytestmark = pytest.mark.slow

# loose on purpose: the tiny random model is often wrong, and the test is about the mechanics
MIXED = {"max_error": 0.95, "min_calibration": 10, "audit_share": 0.25}


@pytest.fixture(scope="module")
def mixed_run(prefect_server, banking_subset, tiny_model, tmp_path_factory):
    from flows.campaign import campaign

    tmp = tmp_path_factory.mktemp("mixed")
    cfg = load_config(campaign_yaml(
        tmp, banking_subset, tiny_model, name="mixed",
        oracle={"kind": "mixed", "human": "simulated", "mixed": MIXED},
    ))
    summary = campaign(cfg)
    store = CampaignStore(cfg.store_url())
    gold = {r["id"]: r["label"] for r in read_jsonl(banking_subset["pool"])}
    return cfg, summary, store, gold, tmp


def test_round_two_accepts_confident_proposals_without_a_human(mixed_run):
    cfg, summary, store, gold, _ = mixed_run
    assert [r.round for r in summary.rounds] == [0, 1, 2]
    assert store.prelabel_round(cfg.name, 0)["info"]["reason"] == "no classifier before the first labels"
    assert store.prelabel_round(cfg.name, 1)["info"]["threshold"] is None  # nothing to calibrate on yet
    info = store.prelabel_round(cfg.name, 2)["info"]
    assert info["calibration_n"] == 20 and info["threshold"] is not None
    props = store.proposals(cfg.name, 2)
    eligible = [p for p in props if p["confidence"] >= info["threshold"]]
    auto = [p for p in props if p["decision"] == "auto"]
    audit = [p for p in props if p["decision"] == "audit"]
    assert len(audit) == math.ceil(MIXED["audit_share"] * len(eligible) - 1e-12) and len(auto) == len(eligible) - len(audit) > 0
    events = store.label_events(cfg.name)
    by_source = {(e["round"], e["example_id"]): e for e in events}
    assert len(events) == 60 and len(by_source) == 60  # every selected example labeled once
    for p in auto:
        e = by_source[(2, p["example_id"])]
        assert (e["source"], e["annotator"], e["provenance"], e["label"]) == ("auto", "llm-auto", "auto", p["label"])
    for p in audit:  # people label the audited ones blind
        e = by_source[(2, p["example_id"])]
        assert (e["source"], e["provenance"], e["label"]) == ("simulated", "typed", gold[p["example_id"]])
    for p in props:  # below the threshold: people saw the proposal
        if p["decision"] is None:
            assert by_source[(2, p["example_id"])]["provenance"] in ("accepted", "corrected")
    assert {e["provenance"] for e in events if e["round"] == 1} <= {"accepted", "corrected"}
    assert {e["provenance"] for e in events if e["round"] == 0} == {"typed"}  # no model before round 0
    labels_step = store.step_result(cfg.name, 2, "labels")
    assert (labels_step["auto"], labels_step["audit"], labels_step["n_labeled"]) == (len(auto), len(audit), 20 - len(auto))


def test_mlflow_records_the_human_side_each_round(mixed_run):
    import json
    from pathlib import Path

    from mlflow import MlflowClient

    cfg, _, store, gold, _ = mixed_run
    client = MlflowClient(cfg.tracking_uri())
    exp = client.get_experiment_by_name(cfg.experiment_name())
    runs = {r.data.tags.get("alft.round"): r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("alft.kind") == "round"}
    m2 = runs["2"].data.metrics
    props = store.proposals(cfg.name, 2)
    auto = [p for p in props if p["decision"] == "auto"]
    audit = [p for p in props if p["decision"] == "audit"]
    assert m2["auto.count"] == len(auto) == m2["labels.auto"]
    assert m2["auto.threshold"] == pytest.approx(store.prelabel_round(cfg.name, 2)["info"]["threshold"])
    assert m2["auto.audit_n"] == len(audit)
    assert m2["auto.audit_error"] == pytest.approx(sum(gold[p["example_id"]] != p["label"] for p in audit) / len(audit))
    human = [p for p in props if p["decision"] is None]
    assert m2["prelabel.accuracy"] == pytest.approx(
        sum(gold[p["example_id"]] == p["label"] for p in human + audit) / len(human + audit)
    )
    assert m2["labels.accepted"] + m2["labels.corrected"] + m2["labels.typed"] + m2["labels.auto"] == 20
    assert "auto.threshold" not in runs["1"].data.metrics and runs["1"].data.metrics["auto.count"] == 0
    assert runs["0"].data.metrics["labels.typed"] == 20 and "prelabel.accuracy" not in runs["0"].data.metrics
    # who labeled what, and how
    local = Path(client.download_artifacts(runs["2"].info.run_id, "labels.json"))
    table = json.loads(local.read_text())
    rows = [dict(zip(table["columns"], r, strict=True)) for r in table["data"]]
    assert len(rows) == 20 and {r["annotator"] for r in rows} == {"llm-auto", "oracle:gold"}
    assert {r["provenance"] for r in rows if r["source"] == "auto"} == {"auto"}
    counts = json.loads(Path(client.download_artifacts(runs["2"].info.run_id, "annotators.json")).read_text())
    assert counts == {"llm-auto": len(auto), "oracle:gold": 20 - len(auto)}


def test_the_export_marks_auto_labels_and_can_leave_them_out(mixed_run, tmp_path):
    from typer.testing import CliRunner

    from alft.cli import app

    cfg, _, store, _, tmp = mixed_run
    n_auto = sum(1 for p in store.proposals(cfg.name, 2) if p["decision"] == "auto")
    res = CliRunner().invoke(app, ["export", str(tmp / "campaign.yaml"), "--out", str(tmp_path / "all")])
    assert res.exit_code == 0, res.output
    assert f"60 labeled examples" in res.output and f"{n_auto} of them accepted without a human" in res.output
    rows = read_jsonl(tmp_path / "all" / "labeled.jsonl")
    assert sum(r["provenance"] == "auto" for r in rows) == n_auto
    res = CliRunner().invoke(app, ["export", str(tmp / "campaign.yaml"), "--out", str(tmp_path / "human"), "--no-auto"])
    assert res.exit_code == 0, res.output
    rows = read_jsonl(tmp_path / "human" / "labeled.jsonl")
    assert len(rows) == 60 - n_auto and "auto" not in {r["provenance"] for r in rows}
    assert "label provenance (per vote):" in (tmp_path / "human" / "README.md").read_text()
