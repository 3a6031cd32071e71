"""The target comparison through real Prefect runs, MLflow on SQLite and a tiny BERT target.

A campaign (head proxy on a tiny BERT's frozen embeddings) is run to 40 labels; its config's
``target`` section fine-tunes every weight of a tiny BERT on alft's first 20 and 40 labels
and on random sets of 20, 40 and 60 examples, two repeats each.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from alft.campaign.context import CampaignContext
from alft.campaign.target import TargetRun, random_pool_ids, spec_digest, training_data
from alft.config import load_config
from alft.params import CampaignRef
from alft.store import target_runs
from alft.store.campaign_store import CampaignStore
from tests.conftest import REPO, campaign_yaml, read_jsonl

pytestmark = pytest.mark.slow

TARGET = {
    "trainer": {
        "kind": "transformer",
        "transformer": {"epochs": 1, "batch_size": 8, "max_length": 32, "learning_rate": 5e-4},
    },
    "labels": [20, 40],
    "random_labels": [60],
    "repeats": 2,
}


def _config(tmp, banking_subset, tiny_model, name="target-campaign", **over):
    path = campaign_yaml(
        tmp, banking_subset, tiny_model, name=name, budget=40,
        target={**TARGET, "model": str(tiny_model)}, **over,
    )
    return path, load_config(path)


@pytest.fixture(scope="module")
def compared(prefect_server, banking_subset, tiny_model, tmp_path_factory, one_torch_thread):
    """The campaign, then its target comparison (both through Prefect)."""
    from flows.campaign import campaign
    from flows.target import target

    tmp = tmp_path_factory.mktemp("target")
    path, cfg = _config(tmp, banking_subset, tiny_model)
    campaign(cfg)
    summary = target(CampaignRef(config_file=str(path)))
    return path, cfg, summary


def _ctx(cfg) -> CampaignContext:
    store = CampaignStore(cfg.store_url())
    return CampaignContext(config=cfg, uid=store.campaign(cfg.name)["uid"])


def test_every_run_is_recorded_and_summarised(compared):
    _, cfg, summary = compared
    rows = target_runs.finished(CampaignStore(cfg.store_url()), cfg.name, summary.spec)
    assert sorted(rows) == sorted(
        [(a, n, r) for a in ("alft", "random") for n in (20, 40) for r in (0, 1)] + [("random", 60, r) for r in (0, 1)]
    )
    assert summary.runs == 10 and summary.metric == "accuracy"
    assert [s["n_labels"] for s in summary.sizes] == [20, 40, 60]
    s40 = summary.sizes[1]
    assert s40["alft_n"] == s40["random_n"] == s40["pairs"] == 2
    assert summary.sizes[2]["alft_mean"] is None and summary.sizes[2]["random_n"] == 2
    for row in rows.values():
        assert 0.0 <= row["metrics"]["accuracy"] <= 1.0 and 0.0 <= row["metrics"]["macro_f1"] <= 1.0
        assert (cfg.workdir_path() / row["model_dir"] / "alft_model.json").exists()
    assert summary.headline.startswith("target model: alft ") and "at 40 labels" in summary.headline


def test_alft_arm_trains_on_the_campaign_labels_in_selection_order(compared, banking_subset):
    _, cfg, summary = compared
    store = CampaignStore(cfg.store_url())
    rows = target_runs.finished(store, cfg.name, summary.spec)
    order = [s["example_id"] for s in sorted(store.selections(cfg.name), key=lambda s: (s["round"], s["position"]))]
    assert sorted(rows[("alft", 20, 0)]["example_ids"]) == sorted(order[:20])
    assert sorted(rows[("alft", 40, 1)]["example_ids"]) == sorted(order[:40])
    # the random arm is labeled with gold and drawn from the whole pool
    gold = {r["id"]: r["label"] for r in read_jsonl(banking_subset["pool"])}
    ctx = _ctx(cfg)
    pids, labels = training_data(ctx, TargetRun("random", 40, 1), seed=cfg.seed)
    assert [ctx.data.pool.ids[int(i)] for i in pids] == rows[("random", 40, 1)]["example_ids"]
    assert labels == [gold[ctx.data.pool.ids[int(i)]] for i in pids]


def test_the_random_control_never_depends_on_the_campaign_selections(compared, banking_subset, tiny_model, tmp_path):
    """Another campaign over the same pool selects other examples; its random arm is the same."""
    from flows.campaign import campaign

    _, cfg, summary = compared
    _, other = _config(tmp_path, banking_subset, tiny_model, name="target-other", strategy={"name": "entropy"},
                       cold_start={"name": "random"})
    campaign(other)
    a, b = _ctx(cfg), _ctx(other)
    assert {s["example_id"] for s in a.store.selections(a.name)} != {s["example_id"] for s in b.store.selections(b.name)}
    for n, r in ((20, 0), (40, 1)):
        ids_a, _ = training_data(a, TargetRun("random", n, r), seed=cfg.seed)
        ids_b, _ = training_data(b, TargetRun("random", n, r), seed=cfg.seed)
        assert np.array_equal(ids_a, ids_b)
        assert np.array_equal(ids_a, random_pool_ids(np.arange(len(a.data.pool)), n, cfg.seed, r))
        alft_a, _ = training_data(a, TargetRun("alft", n, r), seed=cfg.seed)
        alft_b, _ = training_data(b, TargetRun("alft", n, r), seed=cfg.seed)
        assert not np.array_equal(alft_a, alft_b)


def test_mlflow_has_the_comparison_run_plot_table_and_alft_models(compared):
    from mlflow import MlflowClient

    _, cfg, summary = compared
    client = MlflowClient(cfg.tracking_uri())
    run = client.get_run(summary.mlflow_run_id)
    assert run.data.tags["alft.kind"] == "target" and run.data.tags["alft.target_spec"] == summary.spec
    assert run.data.tags["alft.target_headline"] == summary.headline
    hist = client.get_metric_history(run.info.run_id, "target.alft.accuracy")
    assert sorted(m.step for m in hist) == [20, 40]
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "target.random.accuracy")) == [20, 40, 60]
    diff = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "target.diff.accuracy")}
    assert diff[40] == pytest.approx(summary.sizes[1]["diff_mean"])
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"target_curve.png", "target_runs.json", "target_summary.json"} <= arts
    models = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")
    assert sorted(m.name for m in models) == ["alft-n20", "alft-n40"]


def test_a_second_comparison_trains_nothing_and_logs_nothing_twice(compared):
    from mlflow import MlflowClient

    from flows.target import target

    path, cfg, summary = compared
    store = CampaignStore(cfg.store_url())
    before = target_runs.finished(store, cfg.name, summary.spec)
    again = target(CampaignRef(config_file=str(path)))
    assert target_runs.finished(store, cfg.name, summary.spec) == before
    assert again.mlflow_run_id == summary.mlflow_run_id and again.sizes == summary.sizes
    hist = MlflowClient(cfg.tracking_uri()).get_metric_history(summary.mlflow_run_id, "target.alft.accuracy")
    assert len(hist) == 2


def test_a_killed_comparison_resumes_and_keeps_its_finished_runs(compared, prefect_server, tmp_path):
    """`alft target` SIGKILLed inside the 6th run; the re-run trains only the runs not recorded."""
    path, cfg, summary = compared
    more = tmp_path / "more.yaml"
    more.write_text(path.read_text().replace("repeats: 2", "repeats: 3"))
    changed = load_config(more)
    spec = spec_digest(changed)
    assert spec != summary.spec  # another target spec: trained from scratch
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "ALFT_FAULT": "target.random.40.0.commit"}
    cli = [sys.executable, "-m", "alft.cli", "target", str(more)]
    killed = subprocess.run(cli, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stdout + killed.stderr
    store = CampaignStore(cfg.store_url())
    partial = target_runs.finished(store, cfg.name, spec)
    # runs in plan order: alft/random for 20 × 3 repeats, then alft 40 r0; random 40 r0 was killed
    assert sorted(partial) == sorted([(a, 20, r) for a in ("alft", "random") for r in range(3)] + [("alft", 40, 0)])
    env.pop("ALFT_FAULT")
    done = subprocess.run(cli, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "target model: alft" in done.stdout
    final = target_runs.finished(store, cfg.name, spec)
    assert len(final) == 3 * 2 * 2 + 3
    assert all(final[k]["finished_at"] == partial[k]["finished_at"] for k in partial)  # not trained again
    # status shows the latest comparison's headline
    status = subprocess.run([sys.executable, "-m", "alft.cli", "status", str(more)], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and "target model: alft" in status.stdout and "over 3 repeats" in status.stdout


def test_without_a_target_section_the_command_says_so(banking_subset, tiny_model, tmp_path):
    path = campaign_yaml(tmp_path, banking_subset, tiny_model, name="no-target")
    res = subprocess.run([sys.executable, "-m", "alft.cli", "target", str(path)], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "campaign 'no-target' has no target section" in res.stdout + res.stderr
