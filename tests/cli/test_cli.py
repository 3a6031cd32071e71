"""The CLI's bad-input paths: one clear message, exit code 2, the store exactly as it was."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alft.cli import app
from alft.store.campaign_store import CampaignStore
from strategies import available
from tests.conftest import campaign_yaml, read_jsonl, write_jsonl

runner = CliRunner()


def test_strategies_lists_every_registered_name_with_a_description():
    res = runner.invoke(app, ["strategies"])
    assert res.exit_code == 0
    lines = res.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == [s.name for s in available()]
    assert all(len(line.split(None, 1)) == 2 for line in lines)


def test_strategies_details_show_inputs_and_options():
    res = runner.invoke(app, ["strategies", "--details"])
    assert res.exit_code == 0
    out = res.output
    assert "needs: prob_samples" in out.split("bald", 1)[1].split("bandit", 1)[0]
    assert "options: niter=20" in out.split("\nkmeans", 1)[1]
    assert out.count("needs:") == len(available())


@pytest.fixture
def existing_store(tmp_path, banking_subset, tiny_model):
    """A store that already holds a campaign with labels; bad runs must not touch it."""
    cfg_path = campaign_yaml(tmp_path, banking_subset, tiny_model, name="kept")
    from alft.config import load_config

    cfg = load_config(cfg_path)
    store = CampaignStore(cfg.store_url())
    with store.transaction() as conn:
        store.create_campaign(
            conn, name="kept", uid="u", config={}, seed=3, pool_digest="x", pool_size=1,
            eval_digest=None, labels=["a", "b"], model_digest="m",
        )
        store.add_label_events(conn, "kept", 0, [("e1", "a")], "human", "page")
    db = Path(cfg.store_url().removeprefix("sqlite:///"))
    store.close()
    return cfg_path, db


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_pool(files, tmp, mutate) -> dict:
    rows = read_jsonl(files["pool"])
    mutate(rows)
    return {**files, "pool": write_jsonl(tmp / "bad-pool.jsonl", rows)}


CASES = {
    "missing pool file": (
        lambda f, t: ({**f, "pool": t / "nope.jsonl"}, {}),
        r"data file not found: .*nope.jsonl",
    ),
    "wrong text column": (
        lambda f, t: (f, {"data": {"text_field": "utterance"}}),
        r"no column 'utterance' \(columns: id, text, label\)",
    ),
    "duplicate ids": (
        lambda f, t: (_write_pool(f, t, lambda rows: rows[5].update(id=rows[2]["id"])), {}),
        r"1 duplicate ids; first '.*' at rows 3 and 6",
    ),
    "empty text": (
        lambda f, t: (_write_pool(f, t, lambda rows: rows[4].update(text="")), {}),
        r"1 empty texts: row 5",
    ),
    "unknown label": (
        lambda f, t: (_write_pool(f, t, lambda rows: rows[1].update(label="not_an_intent")), {}),
        r"1 rows have labels not in the label set \(8 labels\): 'not_an_intent'",
    ),
    "a label that looks like markup": (
        lambda f, t: (_write_pool(f, t, lambda rows: rows[1].update(label="[/x] root:x:0")), {}),
        r"labels not in the label set \(8 labels\): '\[/x\] root:x:0'",
    ),
    "budget smaller than a batch": (
        lambda f, t: (f, {"budget": 10}),
        r"budget \(10\) is smaller than one batch \(initial_size=20\)",
    ),
    "model path missing": (
        lambda f, t: (f, {"model": {"path": str(t / "no-model")}}),
        r"model path does not exist: .*no-model",
    ),
    "unknown strategy": (
        lambda f, t: (f, {"strategy": {"name": "least_confusion"}}),
        r"unknown strategy 'least_confusion' \(known: .*least_confidence",
    ),
    "unknown key": (
        lambda f, t: (f, {"trainer": {"kind": "head", "heads": {}}}),
        r"unknown key 'trainer.heads'",
    ),
}


def deep_update(doc: dict, over: dict) -> dict:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(doc.get(k), dict):
            deep_update(doc[k], v)
        else:
            doc[k] = v
    return doc


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_clear_message(case, existing_store, banking_subset, tiny_model, tmp_path):
    import re

    import yaml

    cfg_path, db = existing_store
    before = digest(db)
    build, message = CASES[case]
    files, over = build(banking_subset, tmp_path)
    (tmp_path / "bad").mkdir()
    bad = campaign_yaml(tmp_path / "bad", files, tiny_model, name="kept", workdir=str(cfg_path.parent / "work"))
    bad.write_text(yaml.safe_dump(deep_update(yaml.safe_load(bad.read_text()), over)))
    res = runner.invoke(app, ["run", str(bad)])
    assert res.exit_code == 2, res.output
    assert re.search(message, res.output.replace("\n", " ")), res.output
    assert res.output.count("error:") == 1
    assert digest(db) == before


def test_resuming_with_other_data_is_refused(existing_store):
    cfg_path, db = existing_store
    before = digest(db)
    res = runner.invoke(app, ["run", str(cfg_path)])
    assert res.exit_code == 2
    assert "campaign 'kept' in sqlite:///" in res.output
    assert "was created with a different pool data (ids or texts changed)" in res.output.replace("\n", " ")
    assert digest(db) == before


def test_status_of_a_missing_campaign(tmp_path):
    res = runner.invoke(app, ["status", str(tmp_path)])
    assert res.exit_code == 2
    assert "is not a campaign folder (no campaign.db)" in res.output.replace("\n", " ")
