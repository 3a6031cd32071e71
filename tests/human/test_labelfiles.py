"""The file route: pending batch out as JSONL/CSV, labeled files back in, all or nothing."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from alft.cli import app as cli_app
from alft.errors import LabelError
from alft.human.files import (
    LabelRow,
    file_round,
    group_by_annotator,
    load_label_file,
    read_label_file,
    write_pending,
)
from alft.human.labeling import LabelItem, LabelRejected, pending_batch, submit_many
from alft.store.campaign_store import CampaignStore
from tests.conftest import pending_store, campaign_yaml, read_jsonl

LABELS = ["x", "y", "z"]
TEXTS = [f"text number {i}, with a comma and \"quotes\"\nand a second line" for i in range(10)]


@pytest.fixture
def store(tmp_path):
    """A campaign whose round 1 batch (e1..e4, pool ids 1..4) waits for labels; round 0 is labeled."""
    return pending_store(tmp_path / "c.db", LABELS)


def import_rows(store, rows, default=None, source="file"):
    """What `alft labels import` does with the rows of a file."""
    groups = group_by_annotator(rows, default)
    return submit_many(
        store, "c",
        [(a, [LabelItem(r.example_id, r.label, r.kind) for r in rs]) for a, rs in groups.items()],
        source=source, label_set=LABELS, round_=file_round(rows),
    )


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_fill_import_round_trip(store, tmp_path, fmt):
    batch = pending_batch(store, "c")
    out = tmp_path / f"batch.{fmt}"
    assert write_pending(batch, TEXTS, out, fmt) == 4
    if fmt == "jsonl":
        rows = read_jsonl(out)
        assert rows[0] == {"id": "e1", "text": TEXTS[1], "round": 1, "position": 0, "label": ""}
        for r, lab in zip(rows, "xyzx"):
            r["label"] = lab
        out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        with open(out, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        assert [r["id"] for r in rows] == ["e1", "e2", "e3", "e4"] and rows[1]["text"] == TEXTS[2]
        for r, lab in zip(rows, "xyzx"):
            r["label"] = lab
        with open(out, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    lf = load_label_file(out)
    assert [(r.example_id, r.label, r.round) for r in lf.rows] == [("e1", "x", 1), ("e2", "y", 1), ("e3", "z", 1), ("e4", "x", 1)]
    res = import_rows(store, lf.rows, default="alice")
    assert (res.round, res.written, res.remaining, res.complete) == (1, 4, 0, True)
    assert store.current_labels("c") == {"e0": "x", "e1": "x", "e2": "y", "e3": "z", "e4": "x"}
    ev = [e for e in store.label_events("c") if e["round"] == 1]
    assert {(e["annotator"], e["source"]) for e in ev} == {("alice", "file")}
    # importing the same file again is a retry: nothing new is written
    again = import_rows(store, read_label_file(out), default="alice")
    assert (again.written, again.unchanged) == (0, 4)
    assert len(store.label_events("c")) == 5


def test_partly_labeled_file_imports_its_labels_and_reports_blank_rows(store, tmp_path):
    f = write(tmp_path / "b.csv", "id,label,annotator\ne1,x,alice\ne2,,alice\ne3,y,bob\n")
    lf = load_label_file(f)
    assert [r.example_id for r in lf.rows] == ["e1", "e3"] and lf.blank == [f"{f} line 3"]
    res = import_rows(store, lf.rows)
    assert (res.written, res.remaining) == (2, 2)
    assert {(e["example_id"], e["annotator"]) for e in store.label_events("c") if e["round"] == 1} == {
        ("e1", "alice"), ("e3", "bob"),
    }


def test_retract_and_unsure_rows(store, tmp_path):
    import_rows(store, read_label_file(write(tmp_path / "a.jsonl", '{"id": "e1", "label": "x"}\n')), "ann")
    f = write(tmp_path / "b.jsonl", '{"id": "e1", "label": null, "kind": "retract"}\n{"id": "e2", "label": "", "kind": "unsure"}\n')
    rows = read_label_file(f)
    assert [(r.kind, r.label) for r in rows] == [("retract", None), ("unsure", None)]
    import_rows(store, rows, "ann")
    assert "e1" not in store.current_labels("c")
    assert [e["kind"] for e in store.label_events("c")][-2:] == ["retract", "unsure"]


def test_utf8_bom_and_crlf_csv_from_a_spreadsheet(tmp_path):
    f = write(tmp_path / "b.csv", "\ufeffid,label\r\ne1,x\r\n\r\n".encode())
    assert [(r.example_id, r.label) for r in read_label_file(f)] == [("e1", "x")]


def test_write_is_atomic_and_keeps_texts_exact(store, tmp_path):
    batch = pending_batch(store, "c")
    odd = list(TEXTS)
    odd[1] = "line\u2028separator, tab\t and emoji \U0001F600"
    for fmt in ("jsonl", "csv"):
        out = tmp_path / f"b.{fmt}"
        write_pending(batch, odd, out, fmt)
        if fmt == "jsonl":
            assert read_jsonl(out)[0]["text"] == odd[1]
        else:
            with open(out, newline="", encoding="utf-8") as fh:
                assert next(csv.DictReader(fh))["text"] == odd[1]
        # reading our own export back: every row blank, nothing to import, but no parse error
        with pytest.raises(LabelError, match="all 4 rows have an empty label"):
            load_label_file(out)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_export_leaves_out_resolved_examples_unless_asked(store, tmp_path):
    import_rows(store, [LabelRow("e2", "y", "ann", where="t")])
    batch = pending_batch(store, "c")
    assert write_pending(batch, TEXTS, tmp_path / "a.jsonl") == 3
    assert write_pending(batch, TEXTS, tmp_path / "b.jsonl", only_remaining=False) == 4


# ------------------------------------------------------------------ errors: file and line named
ERRORS = {
    "empty file": ("b.jsonl", b"", r"label file .*b.jsonl is empty"),
    "blank lines only": ("b.jsonl", b"\n  \n", r"is empty"),
    "not utf-8": ("b.csv", b"id,label\ne1,caf\xe9\n", r"b.csv line 2, column 7: not UTF-8 \(byte 0xe9\)"),
    "malformed json": ("b.jsonl", b'{"id": "e1", "label": "x"}\n{"id": "e2", "label": \n', r"b.jsonl line 2: not valid JSON"),
    "json not an object": ("b.jsonl", b'["e1", "x"]\n', r"line 1: a JSON object is expected, got list"),
    "missing id": ("b.jsonl", b'{"id": "e1", "label": "x"}\n{"label": "x"}\n', r"b.jsonl line 2: no 'id'"),
    "missing label": ("b.jsonl", b'{"id": "e1"}\n', r"b.jsonl line 1: no 'label'"),
    "id not a string": ("b.jsonl", b'{"id": 7, "label": "x"}\n', r"line 1: 'id' must be a string, got int 7"),
    "label not a string": ("b.jsonl", b'{"id": "e1", "label": ["x"]}\n', r"line 1: 'label' must be a string, got list"),
    "annotator not a string": ("b.jsonl", b'{"id": "e1", "label": "x", "annotator": 3}\n', r"'annotator' must be a string"),
    "empty id": ("b.jsonl", b'{"id": " ", "label": "x"}\n', r"line 1: 'id' is empty"),
    "unknown kind": ("b.jsonl", b'{"id": "e1", "label": "x", "kind": "maybe"}\n', r"line 1: unknown kind 'maybe'"),
    "bad round": ("b.csv", b"id,label,round\ne1,x,one\n", r"b.csv line 2: 'round' must be a round number"),
    "csv no label column": ("b.csv", b"id,lable\ne1,x\n", r"b.csv line 1: the header has no 'label' column \(columns: id, lable\)"),
    "csv header only": ("b.csv", b"id,label\n", r"holds no label rows"),
    "csv field count": ("b.csv", b"id,label\ne1,x\ne2,y,extra\n", r"b.csv line 3: 3 fields, the header has 2"),
    "csv repeated column": ("b.csv", b"id,label,label\ne1,x,y\n", r"line 1: the header repeats column 'label'"),
    "csv bad quoting": ("b.csv", b'id,label\ne1,"x"y\n', r"b.csv line 2: malformed CSV"),
    "csv line after multi-line field": ("b.csv", b'id,text,label\ne1,"two\nlines",x\ne2,t\n', r"b.csv line 4: 2 fields"),
    "nul byte": ("b.csv", b"id,label\ne\x001,x\n", r"line 2: 'id' holds a NUL byte"),
    "huge integer": ("b.jsonl", b'{"id": "e1", "label": "x", "round": ' + b"9" * 5000 + b"}\n", r"line 1: not valid JSON"),
    "unknown suffix": ("b.txt", b"id,label\n", r"cannot tell the format of .*b.txt"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_bad_files_name_file_and_line_and_change_nothing(store, tmp_path, case):
    name, data, message = ERRORS[case]
    before = store.label_events("c")
    with pytest.raises(LabelError, match=message):
        import_rows(store, read_label_file(write(tmp_path / name, data)), "ann")
    assert store.label_events("c") == before


def test_missing_file_directory_fifo_and_symlinks(tmp_path):
    with pytest.raises(LabelError, match=r"label file not found: .*nope.csv"):
        read_label_file(tmp_path / "nope.csv")
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(LabelError, match=r"d.csv is a directory, not a regular file"):
        read_label_file(tmp_path / "d.csv")
    os.mkfifo(tmp_path / "f.csv")
    with pytest.raises(LabelError, match=r"f.csv is a FIFO, not a regular file"):
        read_label_file(tmp_path / "f.csv")  # refused at once: never blocks waiting for a writer
    os.symlink(tmp_path / "f.csv", tmp_path / "link.csv")
    with pytest.raises(LabelError, match=r"link.csv \(-> .*f.csv\) is a FIFO"):
        read_label_file(tmp_path / "link.csv")
    with pytest.raises(LabelError, match=r"null.csv \(-> /dev/null\) is a device"):
        os.symlink("/dev/null", tmp_path / "null.csv")
        read_label_file(tmp_path / "null.csv")


def test_size_cap(tmp_path):
    f = write(tmp_path / "big.jsonl", '{"id": "e1", "label": "x"}\n' * 100)
    with pytest.raises(LabelError, match=r"big.jsonl is 0.0 MB, over the 0 MB limit"):
        load_label_file(f, max_bytes=1000)
    assert len(load_label_file(f, max_bytes=10_000).rows) == 100


def test_rows_need_an_annotator_and_one_judgement_each(tmp_path):
    f = write(tmp_path / "b.csv", "id,label,annotator\ne1,x,alice\ne2,y,\n")
    with pytest.raises(LabelError, match=r"b.csv line 3: no annotator: add an 'annotator' field or pass --annotator"):
        group_by_annotator(read_label_file(f))
    assert set(group_by_annotator(read_label_file(f), "bob")) == {"alice", "bob"}
    f = write(tmp_path / "c.csv", "id,label,annotator\ne1,x,alice\ne1,y,bob\ne1,z,alice\n")
    with pytest.raises(LabelError, match=r"c.csv line 4: 'e1' is judged twice by 'alice' \(first at .*c.csv line 2\)"):
        group_by_annotator(read_label_file(f))


def test_a_file_from_two_batches_is_refused(tmp_path):
    f = write(tmp_path / "b.csv", "id,label,round\ne1,x,1\ne2,y,0\n")
    with pytest.raises(LabelError, match=r"several batches \(round 0 at .*line 3, round 1 at .*line 2\)"):
        file_round(read_label_file(f))


def test_a_file_for_a_closed_round_is_stale(store, tmp_path):
    f = write(tmp_path / "b.csv", "id,label,round\ne1,x,0\n")
    with pytest.raises(LabelRejected, match="stale submission: it is for round 0, the pending batch is round 1"):
        import_rows(store, read_label_file(f), "ann")


def test_one_bad_annotator_group_refuses_the_whole_file(store, tmp_path):
    f = write(tmp_path / "b.csv", "id,label,annotator\ne1,x,alice\ne2,y,alice\ne3,nope,bob\ne9,x,bob\n")
    before = store.label_events("c")
    with pytest.raises(LabelRejected) as err:
        import_rows(store, read_label_file(f))
    msg = str(err.value)
    assert "2 of 4 submitted labels refused, nothing was written" in msg
    assert "'e3': label 'nope' is not in the label set (annotator 'bob')" in msg
    assert "'e9': not in the pending batch of round 1 (annotator 'bob')" in msg
    assert store.label_events("c") == before  # alice's valid group was rolled back with bob's


def test_two_annotators_in_one_file_with_overlap(store, tmp_path):
    f = write(tmp_path / "b.jsonl", "".join(
        json.dumps({"id": f"e{i}", "label": lab, "annotator": ann}) + "\n"
        for ann, labs in (("alice", "xyzx"), ("bob", "xyzy")) for i, lab in zip(range(1, 5), labs)
    ))
    rows = read_label_file(f)
    groups = group_by_annotator(rows)
    res = submit_many(
        store, "c", [(a, [LabelItem(r.example_id, r.label) for r in rs]) for a, rs in groups.items()],
        source="file", label_set=LABELS, overlap=2,
    )
    assert (res.written, res.remaining) == (8, 1)  # e4 is disputed: it needs a third annotator
    assert store.current_labels("c", overlap=2) == {"e1": "x", "e2": "y", "e3": "z"}


# ------------------------------------------------------------------ fuzz: only LabelError ever
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400), fmt=st.sampled_from(["jsonl", "csv"]))
def test_arbitrary_bytes_never_crash(tmp_path, data, fmt):
    f = tmp_path / f"fuzz.{fmt}"
    f.write_bytes(data)
    try:
        lf = load_label_file(f)
    except LabelError:
        return
    assert lf.rows and all(isinstance(r.example_id, str) and r.example_id.strip() for r in lf.rows)


_cell = st.one_of(
    st.text(max_size=12), st.sampled_from(["id", "label", "kind", "round", "annotator", "x", "e1", "retract", "", '"'])
)
_json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["id", "label", "kind", "round", "annotator"]), inner, max_size=5),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(
    st.lists(_cell, max_size=5).map(lambda cells: ",".join(cells)),
    _json_value.map(json.dumps),
), max_size=8), fmt=st.sampled_from(["jsonl", "csv"]))
def test_arbitrary_lines_never_crash(tmp_path, lines, fmt):
    f = tmp_path / f"fuzz.{fmt}"
    f.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    try:
        lf = load_label_file(f)
    except LabelError:
        return
    for r in lf.rows:
        assert r.kind in ("label", "retract", "unsure") and (r.kind != "label" or r.label)


# ------------------------------------------------------------------ the CLI on a real campaign
runner = CliRunner()


def build_pending_campaign(tmp: Path, files, model, **over) -> Path:
    """A human-labeled campaign run with the plain step functions up to its first batch (round 0 waits)."""
    from alft.config import load_config
    from tasks.campaign import next_round, open_campaign
    from tasks.embed import embed_pool
    from tasks.score import score_pool
    from tasks.select import select_batch

    cfg_path = campaign_yaml(tmp, files, model, oracle={"kind": "human", "wait": "poll"}, **over)
    cfg = load_config(cfg_path)
    ctx = open_campaign.fn(cfg)
    r = next_round.fn(ctx)
    embed_pool.fn(ctx, r)
    score_pool.fn(ctx, r)
    select_batch.fn(ctx, r)  # stop before wait_for_labels: the batch waits for humans
    return cfg_path


@pytest.fixture
def pending_campaign(tmp_path, banking_subset, tiny_model):
    return build_pending_campaign(tmp_path, banking_subset, tiny_model)


def _store_of(cfg_path: Path) -> CampaignStore:
    from alft.config import load_config

    return CampaignStore(load_config(cfg_path).store_url())


def gold_of(files) -> dict[str, str]:
    return {r["id"]: r["label"] for r in read_jsonl(files["pool"])}


def test_cli_export_import_status_round_trip(pending_campaign, banking_subset, tmp_path):
    cfg = str(pending_campaign)
    st_ = _store_of(pending_campaign)
    res = runner.invoke(cli_app, ["labels", "status", cfg])
    assert res.exit_code == 0, res.output
    assert "round 0 waits for labels" in res.output and "20 examples: 0 resolved, 20 remaining, 0 disputed" in res.output

    out = tmp_path / "batch.csv"
    res = runner.invoke(cli_app, ["labels", "export", cfg, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "wrote 20 examples still to label of round 0" in res.output
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 20 and set(rows[0]) == {"id", "text", "campaign", "round", "position", "label"}
    assert {r["campaign"] for r in rows} == {"test-campaign"}  # checked on import
    texts = {r["id"]: r["text"] for r in read_jsonl(banking_subset["pool"])}
    assert all(texts[r["id"]] == r["text"] for r in rows)

    # exporting over a filled-in file needs --force
    res = runner.invoke(cli_app, ["labels", "export", cfg, "--out", str(out)])
    assert res.exit_code == 2 and "batch.csv exists; pass --force" in res.output

    gold = gold_of(banking_subset)
    for r in rows[:15]:
        r["label"] = gold[r["id"]]
    bad = [dict(r) for r in rows]
    bad[3]["label"] = "not-a-label"
    for path, data in ((out, rows), (tmp_path / "bad.csv", bad)):
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(data)

    before = st_.label_events("test-campaign")
    res = runner.invoke(cli_app, ["labels", "import", str(tmp_path / "bad.csv"), cfg, "--annotator", "alice"])
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "label 'not-a-label' is not in the label set" in lines[0]
    assert st_.label_events("test-campaign") == before == []

    res = runner.invoke(cli_app, ["labels", "import", str(out), cfg])
    assert res.exit_code == 2 and "no annotator: add an 'annotator' field or pass --annotator" in res.output

    res = runner.invoke(cli_app, ["labels", "import", str(out), cfg, "--annotator", "alice"])
    assert res.exit_code == 0, res.output
    assert "round 0: 15 written, 0 unchanged" in res.output and "annotators: alice 15" in res.output
    assert "skipped 5 rows with an empty label" in res.output and "5 examples of round 0 still need labels" in res.output
    ev = st_.label_events("test-campaign")
    assert len(ev) == 15 and {(e["annotator"], e["source"], e["kind"]) for e in ev} == {("alice", "file", "label")}
    assert all(gold[e["example_id"]] == e["label"] for e in ev)

    # the rest, by another annotator, from JSONL: the batch completes
    out2 = tmp_path / "rest.jsonl"
    res = runner.invoke(cli_app, ["labels", "export", cfg, "--out", str(out2)])
    assert res.exit_code == 0 and "wrote 5 examples still to label" in res.output
    rest = read_jsonl(out2)
    out2.write_text("".join(json.dumps({**r, "label": gold[r["id"]], "annotator": "bob"}) + "\n" for r in rest))
    res = runner.invoke(cli_app, ["labels", "import", str(out2), cfg])
    assert res.exit_code == 0, res.output
    assert "the batch of round 0 is complete" in res.output and "resumed" not in res.output  # poll mode
    res = runner.invoke(cli_app, ["labels", "status", cfg])
    assert "20 examples: 20 resolved, 0 remaining, 0 disputed" in res.output
    assert "labels by: alice 15, bob 5" in res.output


def test_cli_errors_are_one_line_exit_2(pending_campaign, tmp_path):
    cfg = str(pending_campaign)
    cases = [
        (["labels", "import", str(tmp_path), cfg], "is a directory, not a regular file"),
        (["labels", "import", str(tmp_path / "nope.csv"), cfg], "label file not found"),
        (["labels", "import", str(write(tmp_path / "x.txt", "a")), cfg], "cannot tell the format of"),
        (["labels", "import", str(write(tmp_path / "e.jsonl", "{\n")), cfg, "-a", "a"], "e.jsonl line 1: not valid JSON"),
        (["labels", "export", cfg, "--out", str(tmp_path / "b.csv"), "--format", "xls"], "unknown --format 'xls'"),
        (["labels", "status", str(tmp_path / "nowhere")], "no campaign config file or folder"),
    ]
    for args, message in cases:
        res = runner.invoke(cli_app, args)
        assert res.exit_code == 2, (args, res.output)
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], (args, res.output)


def test_cli_without_a_waiting_batch(pending_campaign, tmp_path):
    st_ = _store_of(pending_campaign)
    with st_.transaction() as conn:
        st_.finish_step(conn, "test-campaign", 0, "labels", {}, 0.1)
    res = runner.invoke(cli_app, ["labels", "export", str(pending_campaign), "--out", str(tmp_path / "b.csv")])
    assert res.exit_code == 2 and "has no batch waiting for labels" in res.output
    assert not (tmp_path / "b.csv").exists()
    res = runner.invoke(cli_app, ["labels", "status", str(pending_campaign)])
    assert res.exit_code == 0 and "no batch waits for labels" in res.output


def test_cli_resumes_the_waiting_flow_run_once_complete(pending_campaign, banking_subset, tmp_path, monkeypatch):
    import prefect.flow_runs

    st_ = _store_of(pending_campaign)
    with st_.transaction() as conn:
        st_.set_wait(conn, "test-campaign", 0, "pause", "run-123")
    resumed = []
    monkeypatch.setattr(prefect.flow_runs, "resume_flow_run", lambda run_id, **kw: resumed.append(run_id))
    gold = gold_of(banking_subset)
    ids = [s["example_id"] for s in st_.selections("test-campaign", 0)]
    half = tmp_path / "half.jsonl"
    half.write_text("".join(json.dumps({"id": ex, "label": gold[ex]}) + "\n" for ex in ids[:10]))
    res = runner.invoke(cli_app, ["labels", "import", str(half), str(pending_campaign), "-a", "alice"])
    assert res.exit_code == 0 and "resumed" not in res.output and resumed == []  # not complete yet

    def fail(run_id, **kw):
        raise RuntimeError("no Prefect server")

    monkeypatch.setattr(prefect.flow_runs, "resume_flow_run", fail)
    full = tmp_path / "full.jsonl"
    full.write_text("".join(json.dumps({"id": ex, "label": gold[ex]}) + "\n" for ex in ids))
    res = runner.invoke(cli_app, ["labels", "import", str(full), str(pending_campaign), "-a", "alice"])
    assert res.exit_code == 1 and "the labels are saved, but resuming the waiting flow run failed" in res.output
    assert len(st_.label_events("test-campaign")) == 20

    # the retry writes nothing new and resumes the run
    monkeypatch.setattr(prefect.flow_runs, "resume_flow_run", lambda run_id, **kw: resumed.append(run_id))
    res = runner.invoke(cli_app, ["labels", "import", str(full), str(pending_campaign), "-a", "alice"])
    assert res.exit_code == 0, res.output
    assert "0 written, 20 unchanged" in res.output and "resumed flow run run-123" in res.output
    assert resumed == ["run-123"] and len(st_.label_events("test-campaign")) == 20
