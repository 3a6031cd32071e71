"""A campaign against real servers: `prefect server start` and `mlflow server`, as deployed.

Both servers run as subprocesses on free ports (each in its own session, so the whole
process group is stopped afterwards, whatever happens); the campaign runs through the
CLI with ``PREFECT_API_URL`` and ``tracking.uri`` pointing at them; every check then reads
the servers' REST APIs over HTTP, as a user's tools would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from tests.conftest import REPO, campaign_yaml
from tests.servers import mlflow_server_process, prefect_server_process, wait_ready

pytestmark = pytest.mark.slow

STEPS = ["embed", "score", "select", "wait for labels", "fine-tune", "evaluate", "stop-check", "track"]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("servers")
    started = [prefect_server_process(tmp), mlflow_server_process(tmp)]
    try:
        for server in started:
            server.launch()
        wait_ready(started)
        yield {
            "prefect": started[0].url,
            "mlflow": started[1].url,
            "ready_s": {s.name: round(s.ready_s, 1) for s in started},
            "tmp": tmp,
        }
    finally:
        for s in started:
            s.stop()


@pytest.fixture(scope="module")
def campaign_run(servers, banking_subset, tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("real-servers")
    cfg = campaign_yaml(
        tmp, banking_subset, tiny_model, name="real-servers", budget=40, tracking={"uri": servers["mlflow"]}
    )  # budget 40: rounds 0 and 1
    doc = yaml.safe_load(cfg.read_text())
    doc["model"].update(num_threads=1, shards=2)
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    env = {**os.environ, "PREFECT_API_URL": servers["prefect"], "ALFT_CACHE_DIR": str(tmp / "cache")}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "alft.cli", "run", str(cfg)],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"\nservers healthy after {servers['ready_s']} s; campaign {time.monotonic() - t0:.1f} s")
    return servers


def test_prefect_server_has_the_completed_flow_run_and_its_named_task_runs(campaign_run):
    api = campaign_run["prefect"]
    (run,) = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"name": {"any_": ["real-servers"]}}}).json()
    assert run["state_type"] == "COMPLETED"
    assert httpx.get(f"{api}/flows/{run['flow_id']}").json()["name"] == "alft-campaign"
    tasks = httpx.post(
        f"{api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [run["id"]]}}, "limit": 200}
    ).json()
    assert {t["state_type"] for t in tasks} == {"COMPLETED"}
    names = {t["name"] for t in tasks}
    for r in (0, 1):
        assert {f"round {r} · {step}" for step in STEPS} <= names
    # round 0 embedded the pool in two shards, each its own task run; round 1 found it cached
    assert {"round 0 · embed pool 1/2", "round 0 · embed pool 2/2"} <= names
    assert not any(n.startswith("round 1 · embed pool ") for n in names)


def test_mlflow_server_has_the_campaign_run_and_a_nested_run_per_round(campaign_run, tmp_path):
    api = f"{campaign_run['mlflow']}/api/2.0/mlflow"
    exp = httpx.get(f"{api}/experiments/get-by-name", params={"experiment_name": "alft/real-servers"}).json()
    exp_id = exp["experiment"]["experiment_id"]
    assert exp["experiment"]["artifact_location"].startswith("mlflow-artifacts:")  # the server stores artifacts
    runs = httpx.post(f"{api}/runs/search", json={"experiment_ids": [exp_id], "max_results": 100}).json()["runs"]

    def tags(run):
        return {t["key"]: t["value"] for t in run["data"].get("tags", [])}

    def metrics(run):
        return {m["key"]: m["value"] for m in run["data"].get("metrics", [])}

    (parent,) = [r for r in runs if tags(r).get("alft.kind") == "campaign"]
    rounds = sorted((r for r in runs if tags(r).get("alft.kind") == "round"), key=lambda r: tags(r)["alft.round"])
    assert parent["info"]["status"] == "FINISHED"
    assert [tags(r)["alft.round"] for r in rounds] == ["0", "1"]
    assert {tags(r)["mlflow.parentRunId"] for r in rounds} == {parent["info"]["run_id"]}
    for r, n_labels in zip(rounds, (20, 40)):
        m = metrics(r)
        assert m["n_labels"] == n_labels and 0 <= m["accuracy"] <= 1 and "macro_f1" in m
        files = httpx.get(f"{api}/artifacts/list", params={"run_id": r["info"]["run_id"]}).json()["files"]
        assert {"selected.json", "confusion.png"} <= {f["path"] for f in files}
    assert "accuracy" in metrics(parent)

    # each round's model is a logged model whose files the server holds
    models = httpx.post(f"{api}/logged-models/search", json={"experiment_ids": [exp_id]}).json()["models"]
    by_run = {m["info"]["source_run_id"]: m["info"] for m in models}
    assert set(by_run) == {r["info"]["run_id"] for r in rounds}
    def listing(path: str) -> set[str]:
        files = httpx.get(f"{campaign_run['mlflow']}/api/2.0/mlflow-artifacts/artifacts", params={"path": path}).json()
        return {f["path"].rsplit("/", 1)[-1] for f in files.get("files", [])}

    for info in by_run.values():
        loc = info["artifact_uri"]
        assert loc.startswith("mlflow-artifacts:/")
        root = loc.removeprefix("mlflow-artifacts:").strip("/")
        assert "MLmodel" in listing(root)  # a pyfunc model ...
        assert {"alft_model.json", "head.npz"} <= listing(f"{root}/artifacts/model")  # ... holding the alft model
    # the stopped campaign's final model is registered, from round 1's run
    versions = httpx.get(f"{api}/registered-models/get", params={"name": "alft-real-servers"}).json()
    latest = versions["registered_model"]["latest_versions"]
    assert [v["run_id"] for v in latest] == [rounds[-1]["info"]["run_id"]]
