"""A human campaign under a real Prefect server: the flow waits, labels arrive, it goes on."""

from __future__ import annotations

import threading
import time

import pytest

from alft.config import load_config
from alft.labeling import LabelItem, pending_batch, resume_if_complete, submit
from alft.store import CampaignStore
from tests.conftest import campaign_yaml, read_jsonl

pytestmark = pytest.mark.slow


def _wait_for(predicate, timeout=120.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = predicate()
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _paused_on(store, name, round_):
    """The flow run id once round ``round_`` waits and the run is really paused."""
    from prefect.client.orchestration import get_client

    row = store.wait_row(name, round_)
    if not row or not row["flow_run_id"] or row["resumed_at"] is not None:
        return None
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(row["flow_run_id"]).state
    return row["flow_run_id"] if state is not None and state.is_paused() else None


def test_paused_flow_resumes_from_the_prefect_input_and_from_the_store(prefect_server, banking_subset, tiny_model, tmp_path):
    from prefect.flow_runs import resume_flow_run

    from flows.campaign import campaign

    cfg = load_config(
        campaign_yaml(
            tmp_path, banking_subset, tiny_model, name="human-pause", budget=12, initial_size=6, batch_size=6,
            oracle={"kind": "human", "wait": "pause", "timeout_s": 300},
        )
    )
    gold = {r["id"]: r["label"] for r in read_jsonl(banking_subset["pool"])}
    store = CampaignStore(cfg.store_url())
    out: dict = {}

    def run():
        try:
            out["summary"] = campaign(cfg)
        except BaseException as exc:  # pragma: no cover - surfaced by the assertion below
            out["error"] = exc

    flow = threading.Thread(target=run, daemon=True)
    flow.start()

    # round 0: three labels through the Prefect run input, three through the store route
    run_id = _wait_for(lambda: _paused_on(store, cfg.name, 0), what="round 0 to pause")
    ids = pending_batch(store, cfg.name).example_ids
    assert len(ids) == 6
    resume_flow_run(run_id, run_input={"annotator": "ui-user", "labels": {ex: gold[ex] for ex in ids[:3]}})
    _wait_for(lambda: _paused_on(store, cfg.name, 0), what="round 0 to pause again")
    assert len(store.current_labels(cfg.name)) == 3
    res = submit(store, cfg.name, [LabelItem(ex, gold[ex]) for ex in ids[3:]], annotator="ann", source="file",
                 label_set=cfg_labels(cfg))
    assert res.complete and resume_if_complete(store, cfg.name, res) == str(run_id)

    # round 1: the whole batch from one route
    run_id = _wait_for(lambda: _paused_on(store, cfg.name, 1), what="round 1 to pause")
    ids = pending_batch(store, cfg.name).example_ids
    res = submit(store, cfg.name, [LabelItem(ex, gold[ex]) for ex in ids], annotator="ann", source="file",
                 label_set=cfg_labels(cfg))
    assert resume_if_complete(store, cfg.name, res) == str(run_id)
    flow.join(timeout=180)
    assert "error" not in out, out.get("error")
    summary = out["summary"]
    assert [r.n_labels for r in summary.rounds] == [6, 12]
    events = store.label_events(cfg.name)
    assert len(events) == 12 and all(e["label"] == gold[e["example_id"]] for e in events)
    assert sorted({(e["source"], e["annotator"]) for e in events}) == [("file", "ann"), ("prefect", "ui-user")]
    assert store.consumed_count(cfg.name, 0) == 2  # the data input and the empty resume input
    labels0 = store.step_result(cfg.name, 0, "labels")
    assert labels0["n_labeled"] == 6 and labels0["released"] == []
    assert labels0["sources"] == {"prefect": 3, "file": 3}


def cfg_labels(cfg):
    from alft.campaign import campaign_data

    return campaign_data(cfg).labels
