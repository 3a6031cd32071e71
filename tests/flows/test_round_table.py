"""A real campaign (Prefect test server, MLflow on SQLite) whose labels are not Latin: every
class's F1 reaches MLflow under its own key, and each round ends with its table as a Prefect
markdown artifact under one key per campaign."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alft.config import load_config
from alft.store.campaign_store import CampaignStore
from tests.conftest import campaign_yaml, read_jsonl, write_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Glyph .* missing from font")]  # confusion plot ticks

# Chinese (two labels that used to share "f1/__"), accented, emoji, and an ASCII one MLflow cannot take as is
NEW_LABELS = ["返金", "送金", "café", "crème brûlée", "👍", "🚀", "naïve", "reverted_card_payment?"]


@pytest.fixture(scope="module")
def finished(prefect_server, banking_subset, tiny_model, tmp_path_factory):
    from flows.campaign import campaign

    tmp = tmp_path_factory.mktemp("round-table")
    old = json.loads(banking_subset["labels"].read_text())
    rename = dict(zip(old, NEW_LABELS, strict=True))
    files = {
        split: write_jsonl(tmp / f"{split}.jsonl", [{**r, "label": rename[r["label"]]} for r in read_jsonl(banking_subset[split])])
        for split in ("pool", "eval")
    }
    files["labels"] = tmp / "labels.json"
    files["labels"].write_text(json.dumps(NEW_LABELS, ensure_ascii=False), encoding="utf-8")
    cfg = load_config(campaign_yaml(tmp, files, tiny_model, name="unicode-labels", budget=40,
                                    tracking={"log_models": False}))
    return cfg, campaign(cfg)


def test_every_class_f1_reaches_mlflow_under_its_own_key(finished, tmp_path):
    from mlflow import MlflowClient

    from alft.campaign.tracking import metric_keys

    cfg, summary = finished
    store = CampaignStore(cfg.store_url())
    client = MlflowClient(tracking_uri=cfg.tracking_uri())
    per_round = store.metrics(cfg.name)
    for r in summary.rounds:
        run_id = store.round_row(cfg.name, r.round)["mlflow_run_id"]
        logged = client.get_run(run_id).data.metrics
        f1 = {k: v for k, v in per_round[r.round].items() if k.startswith("f1/")}
        assert sorted(f1) == sorted(f"f1/{lab}" for lab in NEW_LABELS)  # every class is in the eval split
        keys = metric_keys(f1)
        assert len(set(keys.values())) == len(NEW_LABELS)
        assert {keys[k]: logged[keys[k]] for k in f1} == {keys[k]: v for k, v in f1.items()}  # none overwritten
        names = json.loads(Path(client.download_artifacts(run_id, "metric_names.json", str(tmp_path))).read_text("utf-8"))
        assert {names[keys[k]] for k in f1} == set(f1)  # the table maps each key back to its label
        assert keys["f1/reverted_card_payment?"] == "f1/reverted_card_payment_"  # as before the change


def test_each_round_ends_with_its_table_as_a_markdown_artifact(finished):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    cfg, summary = finished
    key = "unicode-labels-rounds"
    with get_client(sync_client=True) as client:
        versions = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
        latest = client.read_latest_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert len(versions) == len(summary.rounds) == 2  # one version per round, under the campaign's key
    (art,) = latest
    assert art.type == "markdown" and art.description == (
        "campaign unicode-labels after round 1: budget exhausted: 40 labels / budget 40"
    )
    md = art.data
    assert md.startswith("### unicode-labels: 2 rounds, 40 labels\n")
    assert "| round | strategy | labels | accuracy | macro-F1 | seconds |" in md
    for r in summary.rounds:
        assert f"| {r.round} | {r.strategy} | {r.n_labels} | {r.accuracy:.4f} | {r.macro_f1:.4f} | " in md
    assert "**Stop:** budget exhausted: 40 labels / budget 40" in md
    curve = md.split("**Learning curve:** [learning_curve.png](", 1)[1].split(")", 1)[0]
    assert Path(curve).is_file() and Path(curve).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"MLflow: run `{summary.mlflow_run_id}`" in md
    # the first round's version: its own table, not stopped yet
    first = min(versions, key=lambda a: a.created)
    assert "| 0 | kmeans | 20 |" in first.data and "| 1 |" not in first.data
    assert "**Stop:** not stopped: the next round follows" in first.data
