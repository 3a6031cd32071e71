"""A human campaign under a real Prefect server: the flow waits, labels arrive, it goes on."""

from __future__ import annotations

import threading
import time

import pytest

from alft.config import load_config
from alft.human.labeling import LabelItem, pending_batch, resume_if_complete, submit
from alft.store.campaign_store import CampaignStore
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
    from alft.campaign.context import campaign_data

    return campaign_data(cfg).labels


@pytest.fixture
def served(prefect_server, tmp_path):
    """The campaign flow served as a deployment by a runner process (so suspended runs resume)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_server,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PYTHONPATH": str(root),
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
    }
    log = open(tmp_path / "runner.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from flows.campaign import campaign; campaign.serve(name='human-test')"],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        from prefect.client.orchestration import get_client

        def deployed():
            with get_client(sync_client=True) as client:
                try:
                    return client.read_deployment_by_name("alft-campaign/human-test")
                except Exception:
                    return None

        _wait_for(deployed, timeout=90, what="the deployment to be served")
        yield "alft-campaign/human-test"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
        log.close()


def _suspended(store, name, round_):
    from prefect.client.orchestration import get_client

    row = store.wait_row(name, round_)
    if not row or row["mode"] != "suspend" or not row["flow_run_id"] or row["resumed_at"] is not None:
        return None
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(row["flow_run_id"]).state
    return row["flow_run_id"] if state is not None and state.name == "Suspended" else None


def test_suspended_run_resumes_by_itself_after_labels_by_every_route(served, banking_subset, tiny_model, tmp_path):
    """The run suspends (its process ends); labels arrive by the page, the Prefect input,
    a file and Label Studio in turn; the route that completes the batch resumes it."""
    import json

    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.flow_runs import resume_flow_run
    from typer.testing import CliRunner

    from alft.cli import app

    cfg_path = campaign_yaml(
        tmp_path, banking_subset, tiny_model, name="human-suspend", budget=8, initial_size=8, batch_size=8,
        oracle={"kind": "human", "wait": "auto", "timeout_s": 600},
    )
    cfg = load_config(cfg_path)
    gold = {r["id"]: r["label"] for r in read_jsonl(banking_subset["pool"])}
    store = CampaignStore(cfg.store_url())
    fr = run_deployment(served, parameters={"config": cfg.model_dump(mode="json")}, timeout=0)
    run_id = _wait_for(lambda: _suspended(store, cfg.name, 0), timeout=180, what="the run to suspend")
    assert str(run_id) == str(fr.id)
    ids = pending_batch(store, cfg.name).example_ids
    assert len(ids) == 8

    # 1. the labeling page
    page_route(cfg, store, {ex: gold[ex] for ex in ids[:2]})
    # 2. the Prefect UI / API: resuming with a typed input that carries labels
    resume_flow_run(run_id, run_input={"annotator": "ui-user", "labels": {ex: gold[ex] for ex in ids[2:4]}})
    _wait_for(lambda: _suspended(store, cfg.name, 0), timeout=180, what="the re-run to suspend again")
    assert len(store.current_labels(cfg.name)) == 4
    # 3. a file: export the pending batch, fill it, import it
    runner = CliRunner()
    out = tmp_path / "batch.jsonl"
    res = runner.invoke(app, ["labels", "export", str(cfg_path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(ids[4:])
    filled = tmp_path / "filled.jsonl"
    filled.write_text("".join(json.dumps({**r, "label": gold[r["id"]]}) + "\n" for r in rows if r["id"] in ids[4:6]))
    res = runner.invoke(app, ["labels", "import", str(filled), str(cfg_path), "--annotator", "filer"])
    assert res.exit_code == 0, res.output
    assert "resumed" not in res.output  # two still missing
    # 4. Label Studio: its tasks, annotated, exported back
    ls = tmp_path / "tasks.json"
    res = runner.invoke(app, ["labels", "export", str(cfg_path), "--out", str(ls), "--format", "label-studio"])
    assert res.exit_code == 0, res.output
    tasks = json.loads(ls.read_text())
    assert sorted(t["data"]["alft_id"] for t in tasks) == sorted(ids[6:])
    for t in tasks:
        t["annotations"] = [{
            "id": 1, "completed_by": {"id": 7, "email": "ls@example.com"}, "was_cancelled": False,
            "result": [{"from_name": "label", "to_name": "text", "type": "choices",
                        "value": {"choices": [gold[t["data"]["alft_id"]]]}}],
        }]
    (tmp_path / "ls-export.json").write_text(json.dumps(tasks))
    res = runner.invoke(app, ["labels", "import", str(tmp_path / "ls-export.json"), str(cfg_path), "--format", "label-studio"])
    assert res.exit_code == 0, res.output
    assert f"resumed flow run {run_id}" in res.output

    def finished():
        with get_client(sync_client=True) as client:
            st = client.read_flow_run(fr.id).state
        return st if st is not None and st.is_final() else None

    state = _wait_for(finished, timeout=240, what="the run to finish")
    assert state.is_completed(), state
    assert [r.n_labels for r in state.result().rounds] == [8]
    assert store.step_result(cfg.name, 0, "labels")["sources"] == {"page": 2, "prefect": 2, "file": 2, "labelstudio": 2}
    events = store.label_events(cfg.name)
    assert len(events) == 8 and all(e["label"] == gold[e["example_id"]] for e in events)


def page_route(cfg, store, labels):
    """Labels through the labeling page's HTTP API, as its JavaScript sends them."""
    from starlette.testclient import TestClient

    from alft.human.labeling import new_token, pending_batch
    from alft.human.page.app import create_app

    token = new_token(store, cfg.name)
    origin = "http://127.0.0.1:8765"
    with TestClient(create_app(cfg, store, cfg.name), base_url=origin) as client:
        page = client.get(f"/?token={token}")
        assert page.status_code == 200
        res = client.post(
            "/api/labels",
            headers={"X-Alft-Token": token, "Origin": origin},
            json={
                "round": pending_batch(store, cfg.name).round,
                "annotator": "page-user",
                "items": [{"id": ex, "label": lab, "kind": "label"} for ex, lab in labels.items()],
            },
        )
        assert res.status_code == 200, res.text
