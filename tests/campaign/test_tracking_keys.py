"""Per-class metric names in MLflow: one key per class whatever the label's script, through a
real MLflow tracking store (SQLite)."""

from __future__ import annotations

import json

import pytest

from alft.campaign.tracking import Tracker, metric_key, metric_keys

LABELS = ["返金", "送金", "café", "crème brûlée", "👍", "🚀", "reverted_card_payment?", "card_arrival"]


def test_keys_are_distinct_and_ascii_names_keep_their_old_key():
    names = [f"f1/{lab}" for lab in LABELS] + ["accuracy", "f1/a?", "f1/a!", "f1/a_"]
    keys = metric_keys(names)
    assert len(set(keys.values())) == len(names)
    # ASCII names: the key they always had (dashboards keep working), unless two of them share it
    assert keys["f1/reverted_card_payment?"] == "f1/reverted_card_payment_" == metric_key("f1/reverted_card_payment?")
    assert keys["f1/card_arrival"] == "f1/card_arrival" and keys["accuracy"] == "accuracy"
    assert keys["f1/a_"] == "f1/a_"  # MLflow takes it as it is: it never moves
    assert keys["f1/a?"] != keys["f1/a!"] and keys["f1/a?"].startswith("f1/a_-")
    # other scripts: the ASCII rest and a hash of the whole name, the same in every batch
    assert keys["f1/返金"].startswith("f1/__-") and keys["f1/送金"].startswith("f1/__-")
    assert keys["f1/café"].startswith("f1/caf_-")
    assert metric_keys(["f1/返金"]) == {"f1/返金": keys["f1/返金"]}
    assert all(metric_key(k) == k for k in keys.values())  # MLflow accepts every one


@pytest.fixture
def tracker(tmp_path):
    return Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "keys", (tmp_path / "mlartifacts").as_uri())


def _metric_names(tracker, run, tmp_path) -> dict[str, str]:
    local = tracker.client.download_artifacts(run, "metric_names.json", str(tmp_path))
    with open(local, encoding="utf-8") as fh:
        return json.load(fh)


def test_every_class_reaches_mlflow_under_its_own_key(tracker, tmp_path):
    values = {f"f1/{lab}": round(0.1 * (i + 1), 2) for i, lab in enumerate(LABELS)}
    values["accuracy"] = 0.5
    run = tracker.campaign_run("c", "uid-1", {})
    tracker.log_metrics(run, values, step=20, timestamp_ms=1_700_000_000_000)

    got = tracker.client.get_run(run).data.metrics
    assert len(got) == len(values)  # none overwritten by another class
    names = _metric_names(tracker, run, tmp_path / "a")
    assert {names.get(k, k): v for k, v in got.items()} == values
    # the table lists exactly the keys that are not their names
    assert set(names) == {k for k in got if k not in values}
    assert names["f1/reverted_card_payment_"] == "f1/reverted_card_payment?"

    # a re-log (a resumed campaign) adds no point and keeps the table
    tracker.log_metrics(run, values, step=20, timestamp_ms=1_700_000_000_000)
    key = metric_keys(values)["f1/送金"]
    assert [(m.step, m.value) for m in tracker.client.get_metric_history(run, key)] == [(20, values["f1/送金"])]
    assert _metric_names(tracker, run, tmp_path / "b") == names
