"""Data loading through `datasets` and the schema checks, on real BANKING77 and SMS rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alft.config import DataConfig, DataSource, load_config
from alft.data import load_campaign_data, load_split
from alft.errors import DataError
from tests.conftest import SHARED, read_jsonl, write_jsonl

ROWS = read_jsonl(SHARED / "sms_spam" / "train.jsonl")[:40]
DCFG = DataConfig(pool=DataSource(path="x"))


def load(path: Path, role: str = "pool", need_gold: bool = True, **kw):
    return load_split(DataSource(path=str(path), **kw), DCFG, role, need_gold)


def test_jsonl_csv_parquet_and_saved_folder_agree(tmp_path):
    import datasets
    import pandas as pd

    write_jsonl(tmp_path / "a.jsonl", ROWS)
    pd.DataFrame(ROWS).to_csv(tmp_path / "a.csv", index=False)
    pd.DataFrame(ROWS).to_parquet(tmp_path / "a.parquet")
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "dd"))
    loaded = [load(tmp_path / n) for n in ("a.jsonl", "a.csv", "a.parquet", "saved", "dd")]
    assert [d.fmt for d in loaded] == ["json", "csv", "parquet", "disk", "disk"]
    for d in loaded:
        assert d.ids == [r["id"] for r in ROWS]
        assert d.texts == [r["text"] for r in ROWS]
        assert d.gold == [r["label"] for r in ROWS]
        assert d.digest == loaded[0].digest


def test_pool_ids_index_rows(tmp_path):
    d = load(write_jsonl(tmp_path / "a.jsonl", ROWS))
    assert d.pool_id(ROWS[7]["id"]) == 7
    with pytest.raises(KeyError):
        d.pool_id("no-such-id")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"data file not found: .*nope.jsonl"):
        load(tmp_path / "nope.jsonl")


def test_hub_id_offline_is_a_clear_error():
    with pytest.raises(DataError, match=r"pool data someone/no-such-dataset: cannot load as hub"):
        load_split(DataSource(path="someone/no-such-dataset"), DCFG, "pool", True)


def test_unknown_extension(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("hello")
    with pytest.raises(DataError, match=r"cannot tell the format from the extension '.txt'"):
        load(p)


def test_missing_column_lists_columns(tmp_path):
    p = write_jsonl(tmp_path / "a.jsonl", [{"id": "1", "body": "x", "label": "ham"}])
    with pytest.raises(DataError, match=r"no column 'text' \(columns: id, body, label\)"):
        load(p)


def test_duplicate_ids_give_rows(tmp_path):
    rows = ROWS[:5] + [dict(ROWS[2], text="another text")]
    with pytest.raises(DataError, match=rf"1 duplicate ids; first '{ROWS[2]['id']}' at rows 3 and 6"):
        load(write_jsonl(tmp_path / "a.jsonl", rows))


def test_empty_texts_give_rows_and_ids(tmp_path):
    rows = [dict(r) for r in ROWS[:6]]
    rows[4]["text"] = "   "
    with pytest.raises(DataError, match=rf"1 empty texts: row 5 \(id '{rows[4]['id']}'\)"):
        load(write_jsonl(tmp_path / "a.jsonl", rows))


def test_binary_text(tmp_path):
    rows = [dict(r) for r in ROWS[:3]]
    rows[1]["text"] = "abc\x00def"
    with pytest.raises(DataError, match="NUL bytes"):
        load(write_jsonl(tmp_path / "a.jsonl", rows))


def test_missing_gold_for_simulated_oracle(tmp_path):
    rows = [dict(r) for r in ROWS[:4]]
    rows[2]["label"] = None
    with pytest.raises(DataError, match=r"1 rows have no gold label in 'label': row 3"):
        load(write_jsonl(tmp_path / "a.jsonl", rows))


def test_latin1_csv_is_named(tmp_path):
    p = tmp_path / "a.csv"
    p.write_bytes("id,text,label\n1,caf\xe9 au lait,ham\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"a.csv line 2, column 6: not UTF-8 \(byte 0xe9\)"):
        load(p)


def test_empty_file(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text("")
    with pytest.raises(DataError, match="the file is empty"):
        load(p)


def test_malformed_jsonl_names_the_file(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"id": "1", "text": "a", "label": "ham"}\n{"id": "2", "text": \n')
    with pytest.raises(DataError, match=r"a.jsonl line 2, column 21: not valid JSON \(Expecting value\)"):
        load(p)


def _campaign(tmp_path, pool_rows, eval_rows, labels) -> Path:
    write_jsonl(tmp_path / "pool.jsonl", pool_rows)
    write_jsonl(tmp_path / "eval.jsonl", eval_rows)
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    p = tmp_path / "c.yaml"
    p.write_text(
        "name: t\nbudget: 4\nbatch_size: 2\ndata:\n  pool: {path: pool.jsonl}\n"
        "  eval: {path: eval.jsonl}\n  labels: labels.json\n"
    )
    return p


def test_labels_not_in_the_label_set(tmp_path):
    cfg = load_config(_campaign(tmp_path, ROWS[:10], ROWS[10:14], ["ham", "spam-ish"]))
    with pytest.raises(DataError, match=r"pool data .*rows have labels not in the label set \(2 labels\): 'spam'"):
        load_campaign_data(cfg)


def test_label_set_is_inferred_from_gold(tmp_path):
    cfg = load_config(_campaign(tmp_path, ROWS[:20], ROWS[20:24], ["ham", "spam"]), ["data.labels=null"])
    data = load_campaign_data(cfg)
    assert data.labels == sorted({r["label"] for r in ROWS[:20]})


def test_label_file_must_be_a_list(tmp_path):
    cfg = load_config(_campaign(tmp_path, ROWS[:10], ROWS[10:14], ["ham", "spam"]))
    (tmp_path / "labels.json").write_text('{"a": 1}')
    with pytest.raises(DataError, match="must hold a JSON list of non-empty strings"):
        load_campaign_data(cfg)


def test_pool_smaller_than_first_batch(tmp_path):
    cfg = load_config(_campaign(tmp_path, ROWS[:3], ROWS[10:14], ["ham", "spam"]), ["budget=10", "batch_size=5"])
    with pytest.raises(DataError, match=r"3 rows, fewer than the first batch \(5\)"):
        load_campaign_data(cfg)
