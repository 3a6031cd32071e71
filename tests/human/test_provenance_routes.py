"""Every route records what the annotator was shown: label files, Label Studio, Prefect input.

The campaign has a zero-shot prior, so round 0's batch gets proposals from a real model (the
tiny BERT's label-sentence similarities) when the labels step asks for them.
"""

from __future__ import annotations

import csv
import json

import pytest
from typer.testing import CliRunner

from alft.cli import app as cli_app
from alft.config import load_config
from alft.store.campaign_store import CampaignStore
from tests.conftest import campaign_yaml, read_jsonl

runner = CliRunner()


@pytest.fixture
def proposed(tmp_path, banking_subset, tiny_model):
    """Round 0 (20 examples) waits for people, with a stored proposal for each example."""
    from tasks.campaign import open_campaign
    from tasks.embed import embed_pool
    from tasks.labels import request_labels
    from tasks.score import score_pool
    from tasks.select import select_batch

    path = campaign_yaml(tmp_path, banking_subset, tiny_model, zero_shot={}, oracle={"kind": "human", "wait": "poll"})
    cfg = load_config(path)
    ctx = open_campaign.fn(cfg)
    embed_pool.fn(ctx, 0)
    score_pool.fn(ctx, 0)
    select_batch.fn(ctx, 0)
    request_labels.fn(ctx, 0)  # computes and stores the proposals
    store = CampaignStore(cfg.store_url())
    props = {p["example_id"]: p for p in store.proposals(cfg.name, 0)}
    assert len(props) == 20 and store.prelabel_round(cfg.name, 0)["source"] == "model"
    labels = store.campaign(cfg.name)["labels"]
    gold = {r["id"]: r["label"] for r in read_jsonl(banking_subset["pool"])}
    return path, ctx, store, props, labels, gold


def other(labels, label):
    return next(lab for lab in labels if lab != label)


def events_by_id(store, name):
    return {e["example_id"]: e for e in store.label_events(name)}


def test_a_label_file_carries_the_proposals_and_brings_back_what_was_kept(proposed, tmp_path):
    path, ctx, store, props, labels, _ = proposed
    out = tmp_path / "batch.csv"
    res = runner.invoke(cli_app, ["labels", "export", str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["id", "text", "campaign", "round", "position", "proposal", "proposal_confidence", "label"]
    assert all(r["proposal"] == props[r["id"]]["label"] for r in rows)
    assert all(float(r["proposal_confidence"]) == pytest.approx(props[r["id"]]["confidence"], abs=1e-4) for r in rows)
    kept, changed, blind = rows[0], rows[1], rows[2]
    kept["label"] = kept["proposal"]
    changed["label"] = other(labels, changed["proposal"])
    blind["label"], blind["proposal"], blind["proposal_confidence"] = labels[3], "", ""
    bad = dict(rows[3], label=labels[0], proposal_confidence="sure")

    def write(rs):
        with open(out, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rs)

    write([kept, changed, blind, bad])
    res = runner.invoke(cli_app, ["labels", "import", str(out), str(path), "--annotator", "fay"])
    assert res.exit_code == 2 and "line 5: 'proposal_confidence' must be a number, got 'sure'" in res.output
    assert store.label_events(ctx.name) == []
    write([kept, changed, blind])
    res = runner.invoke(cli_app, ["labels", "import", str(out), str(path), "--annotator", "fay"])
    assert res.exit_code == 0, res.output
    ev = events_by_id(store, ctx.name)
    assert (ev[kept["id"]]["provenance"], ev[kept["id"]]["proposal"]) == ("accepted", kept["proposal"])
    assert ev[kept["id"]]["proposal_confidence"] == pytest.approx(float(kept["proposal_confidence"]))
    assert (ev[changed["id"]]["provenance"], ev[changed["id"]]["proposal"]) == ("corrected", changed["proposal"])
    assert (ev[blind["id"]]["provenance"], ev[blind["id"]]["shown"]) == ("typed", None)


def test_label_studio_predictions_are_the_proposals_and_come_back_as_provenance(proposed, tmp_path):
    path, ctx, store, props, labels, _ = proposed
    out = tmp_path / "tasks.json"
    res = runner.invoke(cli_app, ["labels", "export", str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    tasks = json.loads(out.read_text(encoding="utf-8"))
    for t in tasks:
        pred = t["predictions"][0]
        p = props[t["data"]["alft_id"]]
        assert pred["result"][0]["value"]["choices"] == [p["label"]] and pred["score"] == pytest.approx(p["confidence"])
    first, second = tasks[0], tasks[1]

    def annotate(t, label):
        t["annotations"] = [{"id": 1, "completed_by": 7, "result": [
            {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]}]

    annotate(first, props[first["data"]["alft_id"]]["label"])
    annotate(second, other(labels, props[second["data"]["alft_id"]]["label"]))
    export = tmp_path / "export.json"
    export.write_text(json.dumps([first, second]), encoding="utf-8")
    res = runner.invoke(cli_app, ["labels", "import", str(export), str(path)])
    assert res.exit_code == 0, res.output
    # JSON_MIN has no predictions: the stored proposal (what the task pre-selected) stands in
    third = tasks[2]["data"]
    rec = {**third, "id": 3, "label": props[third["alft_id"]]["label"], "annotator": "gil@example.com", "annotation_id": 9}
    export.write_text(json.dumps([rec]), encoding="utf-8")
    res = runner.invoke(cli_app, ["labels", "import", str(export), str(path)])
    assert res.exit_code == 0, res.output
    ev = events_by_id(store, ctx.name)
    got = {ex: (ev[ex]["provenance"], ev[ex]["proposal"]) for ex in (first["data"]["alft_id"], second["data"]["alft_id"], third["alft_id"])}
    assert got == {
        first["data"]["alft_id"]: ("accepted", props[first["data"]["alft_id"]]["label"]),
        second["data"]["alft_id"]: ("corrected", props[second["data"]["alft_id"]]["label"]),
        third["alft_id"]: ("accepted", props[third["alft_id"]]["label"]),
    }
    assert ev[first["data"]["alft_id"]]["proposal_confidence"] == pytest.approx(props[first["data"]["alft_id"]]["confidence"])


def test_a_prefect_input_may_say_what_was_shown(proposed):
    from tasks.labels import collect_labels

    path, ctx, store, props, labels, gold = proposed
    a, b, c = list(props)[:3]
    given = {
        "annotator": "hal",
        "labels": {a: props[a]["label"], b: other(labels, props[b]["label"]), c: gold[c]},
        "shown": {a: props[a]["label"], b: props[b]["label"]},
    }
    collect_labels.fn(ctx, 0, given, "labels-r0-1")
    ev = events_by_id(store, ctx.name)
    assert [(ev[x]["provenance"], ev[x]["proposal"]) for x in (a, b, c)] == [
        ("accepted", props[a]["label"]), ("corrected", props[b]["label"]), ("typed", None),
    ]
    assert ev[a]["proposal_confidence"] == pytest.approx(props[a]["confidence"])  # from the stored proposal
