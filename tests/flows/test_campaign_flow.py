"""A real campaign through Prefect (test server) with MLflow on SQLite, FAISS and a tiny BERT."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alft.config import load_config
from alft.store.campaign_store import CampaignStore
from tests.conftest import campaign_yaml, read_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(prefect_server, banking_subset, tiny_model, tmp_path_factory):
    """One campaign run to completion: 20 + 20 + 20 labels, budget 60."""
    from flows.campaign import campaign

    tmp = tmp_path_factory.mktemp("flow")
    cfg = load_config(campaign_yaml(tmp, banking_subset, tiny_model))
    summary = campaign(cfg)
    return cfg, summary, tmp


def test_summary_has_every_round(finished):
    cfg, summary, _ = finished
    assert [r.round for r in summary.rounds] == [0, 1, 2]
    assert [r.n_labels for r in summary.rounds] == [20, 40, 60]
    assert [r.strategy for r in summary.rounds] == ["kmeans", "margin", "margin"]
    assert summary.stop_reason == "budget exhausted: 60 labels / budget 60"
    assert all(0 <= r.accuracy <= 1 and 0 <= r.macro_f1 <= 1 for r in summary.rounds)


def test_selected_ids_are_unique_and_never_previously_labeled(finished, banking_subset):
    cfg, _, _ = finished
    store = CampaignStore(cfg.store_url())
    sel = store.selections(cfg.name)
    assert len(sel) == 60 and len({s["example_id"] for s in sel}) == 60
    events = store.label_events(cfg.name)
    for r in (1, 2):
        before = {e["example_id"] for e in events if e["round"] < r}
        assert not before & {s["example_id"] for s in sel if s["round"] == r}
    pool = {row["id"]: row for row in read_jsonl(banking_subset["pool"])}
    for s in sel:
        assert pool[s["example_id"]]["text"]  # ids are real pool ids
    assert [s["pool_id"] for s in sel] == [list(pool).index(s["example_id"]) for s in sel]


def test_labels_equal_gold_and_carry_provenance(finished, banking_subset):
    cfg, _, _ = finished
    store = CampaignStore(cfg.store_url())
    gold = {row["id"]: row["label"] for row in read_jsonl(banking_subset["pool"])}
    events = store.label_events(cfg.name)
    assert len(events) == 60
    assert all(e["label"] == gold[e["example_id"]] for e in events)
    assert {e["annotator"] for e in events} == {"oracle:gold"}
    assert {e["source"] for e in events} == {"simulated"}


def test_metrics_in_the_store_match_a_recomputation(finished, banking_subset):
    from alft.models.loading import load_model
    from alft.campaign.rounds import eval_embeddings
    from alft.campaign.context import CampaignContext, campaign_data

    cfg, summary, _ = finished
    store = CampaignStore(cfg.store_url())
    ctx = CampaignContext(config=cfg, uid=store.campaign(cfg.name)["uid"])
    data = campaign_data(cfg)
    model = load_model(ctx.round_dir(2) / "model")
    pred = model.predict_proba(data.eval.texts, eval_embeddings(ctx)).argmax(1)
    gold = np.array([data.labels.index(g) for g in data.eval.gold])
    assert store.metrics(cfg.name)[2]["accuracy"] == pytest.approx((pred == gold).mean())


def test_mlflow_has_a_parent_run_and_one_nested_run_per_round(finished):
    from mlflow import MlflowClient

    cfg, summary, _ = finished
    client = MlflowClient(cfg.tracking_uri())
    exp = client.get_experiment_by_name("alft/test-campaign")
    assert exp is not None and exp.artifact_location.startswith("file://")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("alft.kind") == "campaign"]
    children = [r for r in runs if r.data.tags.get("alft.kind") == "round"]
    assert len(parents) == 1 and len(children) == 3
    parent = parents[0]
    assert parent.info.run_id == summary.mlflow_run_id
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["strategy"] == "margin" and parent.data.tags["seed"] == "3"
    assert parent.data.tags["alft.stop_rule"] == "budget"
    assert parent.data.params["budget"] == "60"
    assert parent.data.params["strategy.name"] == "margin"
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert sorted(c.info.run_name for c in children) == ["round 0", "round 1", "round 2"]
    history = client.get_metric_history(parent.info.run_id, "accuracy")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (r.n_labels, pytest.approx(r.accuracy)) for r in summary.rounds
    ]
    inputs = {d.dataset.name for d in client.get_run(parent.info.run_id).inputs.dataset_inputs}
    assert inputs == {"pool", "eval"}


def test_mlflow_round_artifacts(finished, tmp_path):
    from mlflow import MlflowClient

    cfg, summary, _ = finished
    client = MlflowClient(cfg.tracking_uri())
    exp = client.get_experiment_by_name("alft/test-campaign")
    child = client.search_runs([exp.experiment_id], "tags.`alft.round` = '1'")[0]
    names = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"selected.json", "confusion.png", "per_class_f1.json"} <= names
    # the model is an MLflow (pyfunc) logged model holding the alft model folder
    (logged,) = client.search_logged_models([exp.experiment_id], filter_string=f"source_run_id = '{child.info.run_id}'")
    inner = "artifacts/model"
    assert {a.path for a in client.list_logged_model_artifacts(logged.model_id, inner)} >= {
        f"{inner}/alft_model.json",
        f"{inner}/head.npz",
    }
    table = json.loads(open(client.download_artifacts(child.info.run_id, "selected.json", str(tmp_path))).read())
    assert len(table["data"]) == 20
    assert set(table["columns"]) >= {"example_id", "score", "strategy", "text"}
    m = client.get_run(child.info.run_id).data.metrics
    assert m["n_labels"] == 40
    assert any(k.startswith("f1/") for k in m)
    parent = client.get_run(summary.mlflow_run_id)
    assert "learning_curve.png" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_each_round_logs_a_loadable_model_and_the_final_one_is_registered(finished):
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    from alft.models.loading import load_model
    from alft.campaign.context import CampaignContext, campaign_data, embeddings_for

    cfg, summary, _ = finished
    client = MlflowClient(cfg.tracking_uri())
    exp = client.get_experiment_by_name("alft/test-campaign")
    rounds = {r.data.tags["alft.round"]: r.info.run_id for r in client.search_runs([exp.experiment_id], "tags.`alft.kind` = 'round'")}
    models = client.search_logged_models([exp.experiment_id])
    assert sorted(m.source_run_id for m in models) == sorted(rounds.values())  # one per round
    versions = client.search_model_versions("name = 'alft-test-campaign'")
    assert [(str(v.version), v.run_id) for v in versions] == [("1", rounds["2"])]
    assert client.get_run(summary.mlflow_run_id).data.tags["alft.registered_model"] == "models:/alft-test-campaign/1"
    # the registered pyfunc embeds texts with the campaign's encoder and predicts as alft does
    store = CampaignStore(cfg.store_url())
    ctx = CampaignContext(config=cfg, uid=store.campaign(cfg.name)["uid"])
    data = campaign_data(cfg)
    texts = data.eval.texts[:10]
    probs = load_model(ctx.round_dir(2) / "model").predict_proba(texts, embeddings_for(cfg, data.eval.texts, data.eval.digest)[:10])
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(cfg.tracking_uri())
    try:
        out = mlflow.pyfunc.load_model("models:/alft-test-campaign/1").predict(pd.DataFrame({"text": texts}))
    finally:
        mlflow.set_tracking_uri(before)
    assert out["label"].tolist() == [data.labels[i] for i in probs.argmax(1)]
    np.testing.assert_allclose(out["confidence"].to_numpy(), probs.max(1), atol=1e-5)
    # a second registration (a resumed, already stopped campaign) adds no version
    from tasks.track import register_final_model

    assert register_final_model.fn(ctx) == "models:/alft-test-campaign/1"
    assert len(client.search_model_versions("name = 'alft-test-campaign'")) == 1


def test_prefect_recorded_named_runs_and_batch_artifacts(finished):
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterName

    cfg, _, _ = finished

    async def look():
        async with get_client() as client:
            runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["test-campaign"])))
            tasks = await client.read_task_runs()
            arts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"test-campaign-round-{r}-batch" for r in range(3)]))
            )
            return runs, tasks, arts

    runs, tasks, arts = asyncio.run(look())
    assert runs and runs[0].state.is_completed()
    names = {t.name for t in tasks}
    for step in ("embed", "score", "select", "wait for labels", "fine-tune", "evaluate", "stop-check"):
        assert f"round 2 · {step}" in names
    assert {a.key for a in arts} == {f"test-campaign-round-{r}-batch" for r in range(3)}
    assert all(len(a.data) == 20 for a in arts if isinstance(a.data, list))


def test_rerunning_a_finished_campaign_changes_nothing(finished):
    from flows.campaign import campaign
    from mlflow import MlflowClient

    cfg, summary, _ = finished
    store = CampaignStore(cfg.store_url())
    before = store.dump(cfg.name)
    again = campaign(cfg)
    assert store.dump(cfg.name) == before
    assert again.rounds == summary.rounds
    client = MlflowClient(cfg.tracking_uri())
    exp = client.get_experiment_by_name("alft/test-campaign")
    assert len(client.search_runs([exp.experiment_id])) == 4


def test_raising_the_budget_continues_the_campaign(finished):
    from flows.campaign import campaign

    cfg, _, tmp = finished
    more = load_config(tmp / "campaign.yaml", ["budget=80"])
    summary = campaign(more)
    assert [r.n_labels for r in summary.rounds] == [20, 40, 60, 80]
    assert summary.stop_reason == "budget exhausted: 80 labels / budget 80"
    store = CampaignStore(more.store_url())
    assert len({s["example_id"] for s in store.selections(more.name)}) == 80


def test_status_shows_rounds_labels_metrics_and_stop(finished):
    from typer.testing import CliRunner

    from alft.cli import app

    cfg, summary, tmp = finished
    res = CliRunner().invoke(app, ["status", str(tmp / "campaign.yaml")], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "campaign test-campaign" in res.output
    assert f"{summary.rounds[1].accuracy:.4f}" in res.output
    assert "stop: budget exhausted" in res.output
    # the campaign folder works as a reference too
    res2 = CliRunner().invoke(app, ["status", cfg.workdir], terminal_width=200)
    assert res2.exit_code == 0 and "campaign test-campaign" in res2.output


def test_export_writes_jsonl_dataset_folder_and_card(finished, tmp_path, banking_subset):
    import datasets
    from typer.testing import CliRunner

    from alft.cli import app

    cfg, _, tmp = finished
    out = tmp_path / "export"
    res = CliRunner().invoke(app, ["export", str(tmp / "campaign.yaml"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    rows = read_jsonl(out / "labeled.jsonl")
    store = CampaignStore(cfg.store_url())
    assert {r["id"]: r["label"] for r in rows} == store.current_labels(cfg.name)
    gold = {row["id"]: row for row in read_jsonl(banking_subset["pool"])}
    assert all(r["text"] == gold[r["id"]]["text"] for r in rows)
    ds = datasets.load_from_disk(str(out / "dataset"))
    assert len(ds) == len(rows) and ds.features["label"].names == json.loads(banking_subset["labels"].read_text())
    card = (out / "README.md").read_text()
    assert f"labeled examples: {len(rows)} of budget" in card and "| label | examples |" in card
    again = CliRunner().invoke(app, ["export", str(tmp / "campaign.yaml"), "--out", str(out)])
    assert again.exit_code == 2 and "exists and is not empty" in again.output


def test_transformer_trainer_campaign(prefect_server, banking_subset, tiny_model, tmp_path):
    """The same flow with full fine-tuning: probabilities for margin come from the fine-tuned model."""
    from flows.campaign import campaign

    cfg = load_config(
        campaign_yaml(
            tmp_path,
            banking_subset,
            tiny_model,
            name="transformer-campaign",
            budget=40,
            trainer={"kind": "transformer", "transformer": {"epochs": 2, "learning_rate": 1e-3, "batch_size": 8, "max_length": 64}},
        )
    )
    summary = campaign(cfg)
    assert [r.n_labels for r in summary.rounds] == [20, 40]
    store = CampaignStore(cfg.store_url())
    train = store.step_result(cfg.name, 1, "train")
    assert train["trainer"] == "transformer" and train["n_train"] == 40
    model_dir = cfg.workdir_path() / train["model_dir"]
    assert (model_dir / "hf" / "config.json").exists()
    sel = store.selections(cfg.name, 1)
    assert all(s["score"] is not None and s["strategy"] == "margin" for s in sel)
    probs = np.load(cfg.workdir_path() / "rounds" / "001" / "probs.npy")
    assert probs.shape == (220, 8) and np.allclose(probs.sum(1), 1, atol=1e-4)


def test_adaptive_campaign_with_model_based_arms_logs_its_choices(prefect_server, banking_subset, tiny_model, tmp_path):
    """A bandit over bald / badge / egl on a fine-tuned transformer: MC dropout, hooked
    features and the classifier layer reach the strategies; every choice reaches MLflow."""
    from mlflow import MlflowClient

    from flows.campaign import campaign

    arms = ["bald", "badge", "egl"]
    cfg = load_config(
        campaign_yaml(
            tmp_path,
            banking_subset,
            tiny_model,
            name="bandit-campaign",
            budget=60,
            strategy={"name": "bandit", "options": {"arms": arms}},
            trainer={
                "kind": "transformer",
                "mc_samples": 3,
                "transformer": {"epochs": 1, "learning_rate": 1e-3, "batch_size": 8, "max_length": 32},
            },
        )
    )
    summary = campaign(cfg)
    assert [r.n_labels for r in summary.rounds] == [20, 40, 60]
    store = CampaignStore(cfg.store_url())
    infos = {r: store.step_result(cfg.name, r, "select")["info"] for r in (1, 2)}
    assert all(i["arm"] in arms and i["policy"] == "thompson" for i in infos.values())
    assert infos[2]["pulls"][infos[1]["arm"]] == 1  # round 2 replayed round 1's pull
    features = np.load(cfg.workdir_path() / "rounds" / "001" / "features.npy")
    assert features.shape == (220, 32)  # the tiny BERT's hidden size, from the classifier hook
    client = MlflowClient(cfg.tracking_uri())
    exp = client.get_experiment_by_name("alft/bandit-campaign")
    for r in (1, 2):
        run = client.search_runs([exp.experiment_id], f"tags.`alft.round` = '{r}'")[0]
        assert run.data.tags["alft.arm"] == infos[r]["arm"]
        assert infos[r]["arm"] == max(infos[r]["draws"], key=infos[r]["draws"].get)  # Thompson: the largest draw
        assert "selection_info.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
