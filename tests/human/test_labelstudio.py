"""The Label Studio route: tasks and labeling config out, its JSON export back in."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from alft.cli import app as cli_app
from alft.errors import LabelError
from alft.human.files import LabelRow, file_round, group_by_annotator
from alft.human.labeling import LabelItem, pending_batch, submit_many
from alft.human.labelstudio import from_export, labeling_config, to_tasks
from tests.conftest import pending_store
from tests.human.test_labelfiles import _store_of, build_pending_campaign, gold_of

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "labelstudio"
LABELS = ["card_arrival", "exchange_rate", "lost_or_stolen_card"]
TEXTS = [f"pool text {i}" for i in range(10)]


@pytest.fixture
def store(tmp_path):
    """Round 1's batch (e1..e4, pool ids 1..4) waits for labels, as in the Label Studio fixtures."""
    return pending_store(tmp_path / "c.db", LABELS)


def import_rows(store, rows, overlap=1):
    groups = group_by_annotator(rows)
    return submit_many(
        store, "c",
        [(a, [LabelItem(r.example_id, r.label, r.kind) for r in rs]) for a, rs in groups.items()],
        source="labelstudio", label_set=LABELS, overlap=overlap, round_=file_round(rows),
    )


def export_fixture() -> list:
    return json.loads((FIXTURES / "export.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------ tasks and config
def test_tasks_follow_the_import_format_with_pre_annotations(store):
    batch = pending_batch(store, "c")
    probs = {"e1": np.array([0.1, 0.7, 0.2], np.float32), "e3": np.array([0.2, 0.2, 0.6], np.float32)}
    tasks = to_tasks(batch, TEXTS, LABELS, probs, model_version="c/round-1")
    assert [t["data"] for t in tasks] == [
        {"text": TEXTS[i], "alft_id": f"e{i}", "alft_round": 1} for i in range(1, 5)
    ]
    assert tasks[0]["predictions"] == [{
        "model_version": "c/round-1",
        "score": pytest.approx(0.7),
        "result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": ["exchange_rate"]}}],
    }]
    assert tasks[2]["predictions"][0]["result"][0]["value"] == {"choices": ["lost_or_stolen_card"]}
    assert "predictions" not in tasks[1]  # no probabilities for it (e.g. round 0: no model yet)
    json.dumps(tasks)  # plain JSON: numpy scalars never leak into it
    assert "predictions" not in to_tasks(batch, TEXTS, LABELS, {"e1": np.array([0.5, 0.5])})[0]  # wrong width


def test_tasks_leave_out_resolved_examples_unless_asked(store):
    import_rows(store, [LabelRow("e2", "exchange_rate", "ann", where="t")])
    batch = pending_batch(store, "c")
    assert [t["data"]["alft_id"] for t in to_tasks(batch, TEXTS, LABELS)] == ["e1", "e3", "e4"]
    assert len(to_tasks(batch, TEXTS, LABELS, only_remaining=False)) == 4


def test_labeling_config_matches_the_tasks_and_escapes_labels():
    labels = ["card_arrival", 'say "hi" & <bye>', "tab\there"]
    xml = labeling_config(labels)
    root = ET.fromstring(xml)
    assert root.tag == "View"
    text = root.find("Text")
    assert (text.get("name"), text.get("value")) == ("text", "$text")
    ch = root.find("Choices")
    assert (ch.get("name"), ch.get("toName"), ch.get("choice")) == ("label", "text", "single")
    assert [c.get("value") for c in ch.findall("Choice")] == labels
    with pytest.raises(LabelError, match="control character"):
        labeling_config(["bad\x01label"])


# ------------------------------------------------------------------ the export read back
def test_fixture_export_rows():
    rows = from_export(FIXTURES / "export.json")
    assert [(r.example_id, r.label, r.annotator, r.round) for r in rows] == [
        ("e1", "card_arrival", "labelstudio:1", 1),
        ("e1", "card_arrival", "labelstudio:bob@example.com", 1),
        # e2: user 1's cancelled annotation is skipped; e3: no annotation, its prediction is not a label
        ("e2", "exchange_rate", "labelstudio:bob@example.com", 1),
        ("e4", "lost_or_stolen_card", "labelstudio:1", 1),
    ]
    assert "task 1 (id 'e1') annotation 2" in rows[1].where


def test_json_min_export_reads_the_same():
    full = [(r.example_id, r.label, r.annotator, r.round) for r in from_export(FIXTURES / "export.json")]
    mini = [(r.example_id, r.label, r.annotator, r.round) for r in from_export(FIXTURES / "export_min.json")]
    assert mini == full


def test_json_min_annotation_without_our_control_is_refused():
    rec = json.loads((FIXTURES / "export_min.json").read_text(encoding="utf-8"))
    rec[0]["sentiment"] = rec[0].pop("label")
    with pytest.raises(LabelError, match=r"task 1 \(id 'e1'\): an annotation without a 'label' value"):
        from_export(rec)


def test_importing_the_fixture(store):
    res = import_rows(store, from_export(FIXTURES / "export.json"))
    assert (res.round, res.written, res.remaining, res.complete) == (1, 4, 1, False)
    ev = [e for e in store.label_events("c") if e["round"] == 1]
    assert {(e["example_id"], e["annotator"], e["source"]) for e in ev} == {
        ("e1", "labelstudio:1", "labelstudio"), ("e1", "labelstudio:bob@example.com", "labelstudio"),
        ("e2", "labelstudio:bob@example.com", "labelstudio"), ("e4", "labelstudio:1", "labelstudio"),
    }
    assert pending_batch(store, "c").remaining() == ["e3"]
    # Label Studio exports everything each time: a later export re-imports as unchanged, plus the new work
    later = export_fixture()
    later[2]["annotations"] = [copy.deepcopy(later[3]["annotations"][0])]
    later[2]["annotations"][0]["result"][0]["value"]["choices"] = ["lost_or_stolen_card"]
    res = import_rows(store, from_export(later))
    assert (res.written, res.unchanged, res.complete) == (1, 4, True)


def test_two_annotators_agreeing_resolve_with_overlap_2(store):
    res = import_rows(store, from_export(FIXTURES / "export.json"), overlap=2)
    assert res.remaining == 3  # only e1 has two votes
    assert store.current_labels("c", overlap=2) == {"e1": "card_arrival"}  # e0 has one vote too


def _broken(edit):
    tasks = export_fixture()
    edit(tasks)
    return tasks


EXPORT_ERRORS = {
    "not a list": ({"tasks": []}, r"a Label Studio JSON export is a list of tasks, got dict"),
    "task not an object": (["e1"], r"task 1: a task must be an object, got str"),
    "no alft_id": (_broken(lambda t: t[1]["data"].pop("alft_id")), r"task 2: no data.alft_id"),
    "alft_id not a string": (_broken(lambda t: t[0]["data"].update(alft_id=5)), r"task 1: data.alft_id must be a non-empty string"),
    "no choices result": (
        _broken(lambda t: t[3]["annotations"][0].update(result=[])),
        r"task 4 \(id 'e4'\) annotation 1: no 'choices' result from 'label' \(the result is empty\)",
    ),
    "another control": (
        _broken(lambda t: t[3]["annotations"][0]["result"][0].update(from_name="sentiment")),
        r"task 4 \(id 'e4'\) annotation 1: no 'choices' result from 'label' \(results: sentiment \(choices\)\)",
    ),
    "several choices": (
        _broken(lambda t: t[0]["annotations"][1]["result"][0]["value"].update(choices=["card_arrival", "exchange_rate"])),
        r"task 1 \(id 'e1'\) annotation 2: 2 choices .* for a single-choice label",
    ),
    "two choices results": (
        _broken(lambda t: t[0]["annotations"][0]["result"].append(copy.deepcopy(t[0]["annotations"][0]["result"][0]))),
        r"task 1 \(id 'e1'\) annotation 1: 2 'choices' results",
    ),
    "label not a string": (
        _broken(lambda t: t[3]["annotations"][0]["result"][0]["value"].update(choices=[3])),
        r"task 4 \(id 'e4'\) annotation 1: the chosen label must be a string, got int",
    ),
    "no annotator": (
        _broken(lambda t: t[3]["annotations"][0].pop("completed_by")),
        r"task 4 \(id 'e4'\) annotation 1: no annotator",
    ),
    "same annotator twice": (
        _broken(lambda t: t[0]["annotations"].append(copy.deepcopy(t[0]["annotations"][0]))),
        r"task 1 \(id 'e1'\) annotation 3: 'e1' is judged twice by 'labelstudio:1' \(first at .*task 1 \(id 'e1'\) annotation 1\)",
    ),
    "unknown label": (
        _broken(lambda t: t[3]["annotations"][0]["result"][0]["value"].update(choices=["Card arrival"])),
        r"'e4': label 'Card arrival' is not in the label set \(annotator 'labelstudio:1'\)",
    ),
    "not in the batch": (
        _broken(lambda t: t[3]["data"].update(alft_id="e9")),
        r"'e9': not in the pending batch of round 1",
    ),
    "stale round": (
        _broken(lambda t: [x["data"].update(alft_round=0) for x in t]),
        r"stale submission: it is for round 0, the pending batch is round 1",
    ),
}


@pytest.mark.parametrize("case", list(EXPORT_ERRORS))
def test_bad_exports_are_refused_whole(store, case):
    obj, message = EXPORT_ERRORS[case]
    before = store.label_events("c")
    with pytest.raises(LabelError, match=message):
        import_rows(store, from_export(obj))
    assert store.label_events("c") == before


def test_bad_export_files(tmp_path):
    (tmp_path / "a.json").write_text("[{}\n,]", encoding="utf-8")
    with pytest.raises(LabelError, match=r"a.json line 2, column 2: not valid JSON"):
        from_export(tmp_path / "a.json")
    (tmp_path / "b.json").write_text('{"id": "e1", "label": "x"}\n{"id": "e2", "label": "y"}\n')
    with pytest.raises(LabelError, match=r"not valid JSON \(Extra data\) \(one JSON object per line is JSONL"):
        from_export(tmp_path / "b.json")
    (tmp_path / "c.json").write_bytes(b"")
    with pytest.raises(LabelError, match=r"Label Studio export .*c.json is empty"):
        from_export(tmp_path / "c.json")
    (tmp_path / "d.json").write_bytes(b'["\xff"]')
    with pytest.raises(LabelError, match=r"d.json line 1, column 3: not UTF-8"):
        from_export(tmp_path / "d.json")


def test_round_trip_tasks_to_export(store):
    """Tasks we write, annotated as Label Studio would, come back as the same examples."""
    tasks = to_tasks(pending_batch(store, "c"), TEXTS, LABELS)
    for i, t in enumerate(tasks):
        t["id"] = 100 + i
        t["annotations"] = [{
            "id": 500 + i, "completed_by": {"id": 7, "email": "ann@example.com"}, "was_cancelled": False,
            "result": [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [LABELS[i % 3]]}}],
        }]
    res = import_rows(store, from_export(json.loads(json.dumps(tasks))))
    assert res.complete
    assert {k: v for k, v in store.current_labels("c").items() if k != "e0"} == {
        f"e{i + 1}": LABELS[i % 3] for i in range(4)
    }


# ------------------------------------------------------------------ the CLI on a real campaign
runner = CliRunner()


def test_cli_label_studio_export_and_import(tmp_path, banking_subset, tiny_model):
    cfg_path = build_pending_campaign(tmp_path, banking_subset, tiny_model)
    cfg = str(cfg_path)
    st_ = _store_of(cfg_path)
    from alft.campaign.context import CampaignContext
    from alft.config import load_config
    from alft.campaign.rounds import round_files

    # Round 0 (cold start) has no model: give it probabilities, as a later round's score step would.
    files = round_files(CampaignContext(config=load_config(cfg_path), uid="x"), 0)
    cands = np.load(files["candidates"])
    labels = st_.campaign("test-campaign")["labels"]
    probs = np.random.default_rng(0).dirichlet(np.ones(len(labels)), size=len(cands)).astype(np.float32)
    np.save(files["probs"], probs)

    out = tmp_path / "tasks.json"
    res = runner.invoke(cli_app, ["labels", "export", cfg, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "wrote 20 examples still to label of round 0" in res.output and "20 tasks pre-annotated" in res.output
    tasks = json.loads(out.read_text(encoding="utf-8"))
    xml = ET.fromstring((tmp_path / "tasks.xml").read_text(encoding="utf-8"))
    assert [c.get("value") for c in xml.iter("Choice")] == labels
    sel = {s["example_id"]: s["pool_id"] for s in st_.selections("test-campaign", 0)}
    row_of = {int(p): i for i, p in enumerate(cands)}
    t0 = tasks[0]
    p = probs[row_of[sel[t0["data"]["alft_id"]]]]
    assert t0["predictions"][0]["result"][0]["value"]["choices"] == [labels[int(p.argmax())]]
    assert t0["predictions"][0]["score"] == pytest.approx(float(p.max()))
    assert t0["predictions"][0]["model_version"] == "test-campaign/round-0"

    # annotate as Label Studio would; one cancelled, the rest by two people
    gold = gold_of(banking_subset)
    for i, t in enumerate(tasks):
        who = 1 if i % 2 else {"id": 2, "email": "bob@example.com"}
        t["annotations"] = [{
            "id": i, "completed_by": who, "was_cancelled": i == 0,
            "result": [] if i == 0 else [
                {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [gold[t["data"]["alft_id"]]]}}
            ],
        }]
    export = tmp_path / "project-3-at-2026-11-25.json"
    export.write_text(json.dumps(tasks), encoding="utf-8")
    res = runner.invoke(cli_app, ["labels", "import", str(export), cfg])
    assert res.exit_code == 0, res.output
    assert "round 0: 19 written" in res.output and "1 example of round 0 still needs labels" in res.output
    ev = st_.label_events("test-campaign")
    assert {e["source"] for e in ev} == {"labelstudio"}
    assert {e["annotator"] for e in ev} == {"labelstudio:1", "labelstudio:bob@example.com"}
    assert all(gold[e["example_id"]] == e["label"] for e in ev)

    # a bad export changes nothing and says so in one line
    tasks[1]["annotations"][0]["result"][0]["value"]["choices"] = ["a", "b"]
    export.write_text(json.dumps(tasks), encoding="utf-8")
    res = runner.invoke(cli_app, ["labels", "import", str(export), cfg])
    assert res.exit_code == 2 and res.output.startswith("error:") and "2 choices" in res.output
    assert st_.label_events("test-campaign") == ev


# ------------------------------------------------------------------ fuzz: only LabelError ever
_keys = st.sampled_from(
    ["data", "alft_id", "alft_round", "annotations", "result", "was_cancelled", "completed_by", "email", "id",
     "from_name", "type", "value", "choices", "label", "annotator"]
)
_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6) | st.sampled_from(["label", "choices", "e1"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(obj=_values)
def test_arbitrary_json_never_crashes_the_export_reader(obj):
    try:
        rows = from_export(obj)
    except LabelError:
        return
    assert all(isinstance(r.label, str) and r.label and r.annotator.startswith("labelstudio:") for r in rows)
