"""Kill the campaign process (SIGKILL) mid-round, run it again: the store must equal an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from alft.config import load_config
from alft.store import CampaignStore
from tests.conftest import REPO, campaign_yaml

pytestmark = pytest.mark.slow


def run_cli(cfg: Path, api_url: str, **env) -> subprocess.CompletedProcess:
    full = {**os.environ, "PREFECT_API_URL": api_url, **env}
    return subprocess.run(
        [sys.executable, "-m", "alft.cli", "run", str(cfg)],
        env=full,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def mlflow_runs(cfg_path: Path) -> list:
    from mlflow import MlflowClient

    cfg = load_config(cfg_path)
    client = MlflowClient(cfg.tracking_uri())
    exp = client.get_experiment_by_name(cfg.experiment_name())
    return client.search_runs([exp.experiment_id])


@pytest.fixture(scope="module")
def reference(prefect_server, banking_subset, tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    cfg = campaign_yaml(tmp, banking_subset, tiny_model, name="resume")
    proc = run_cli(cfg, prefect_server)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return CampaignStore(load_config(cfg).store_url()).dump("resume")


@pytest.mark.parametrize(
    "fault",
    [
        "embed.flush",  # embeddings committed to the cache, step not yet recorded
        "r1.select.commit",  # inside the transaction that records the batch
        "r1.labels.commit",  # inside the transaction that records the labels
        "r1.train.start",
        "r2.track",  # MLflow run logged, store not yet told
    ],
)
def test_killed_and_resumed_equals_uninterrupted(fault, reference, prefect_server, banking_subset, tiny_model, tmp_path):
    cfg = campaign_yaml(tmp_path, banking_subset, tiny_model, name="resume")
    env = {"ALFT_CACHE_DIR": str(tmp_path / "cache")} if "embed" in fault else {}
    killed = run_cli(cfg, prefect_server, ALFT_FAULT=fault, **env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    store = CampaignStore(load_config(cfg).store_url())
    # it really stopped part-way: the store, or MLflow's view of it, is incomplete
    assert store.dump("resume") != reference or any(r["tracked_at"] is None for r in store.rounds("resume"))
    resumed = run_cli(cfg, prefect_server, **env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert store.dump("resume") == reference
    runs = mlflow_runs(cfg)
    rounds = sorted(r.data.tags["alft.round"] for r in runs if r.data.tags.get("alft.kind") == "round")
    assert rounds == ["0", "1", "2"]  # each round once: a resumed round continued its run
    assert sum(r.data.tags.get("alft.kind") == "campaign" for r in runs) == 1
