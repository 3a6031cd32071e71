"""The campaign store: transactions, append-only labels, uniqueness, history."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from alft.errors import StoreError
from alft.store.campaign_store import CampaignStore
from alft.store.engine import safe_url


@pytest.fixture
def store(tmp_path):
    st = CampaignStore(f"sqlite:///{tmp_path / 'c.db'}")
    with st.transaction() as conn:
        st.create_campaign(
            conn, name="c", uid="u1", config={"a": 1}, seed=0, pool_digest="p", pool_size=10,
            eval_digest=None, labels=["x", "y"], model_digest="m",
        )
    st.ensure_round("c", 0, "kmeans")
    return st


def test_a_failed_transaction_writes_nothing(store):
    with pytest.raises(RuntimeError):
        with store.transaction() as conn:
            store.add_selections(conn, "c", 0, [("e1", 1, 0.5)], "kmeans")
            store.finish_step(conn, "c", 0, "select", {"k": 1}, 0.1)
            raise RuntimeError("killed mid-step")
    assert store.selections("c") == []
    assert store.step_result("c", 0, "select") is None


def test_an_example_is_selected_at_most_once(store):
    with store.transaction() as conn:
        store.add_selections(conn, "c", 0, [("e1", 1, 0.5), ("e2", 2, None)], "kmeans")
    with pytest.raises(IntegrityError):
        with store.transaction() as conn:
            store.add_selections(conn, "c", 1, [("e1", 1, 0.9)], "margin")
    assert [s["example_id"] for s in store.selections("c")] == ["e1", "e2"]
    assert store.selections("c")[1]["score"] is None


def test_a_step_is_finished_once(store):
    with store.transaction() as conn:
        store.finish_step(conn, "c", 0, "embed", {"n": 1}, 1.0)
    with pytest.raises(IntegrityError):
        with store.transaction() as conn:
            store.finish_step(conn, "c", 0, "embed", {"n": 2}, 1.0)
    assert store.step_result("c", 0, "embed") == {"n": 1}


def test_labels_are_events_and_the_latest_wins(store):
    with store.transaction() as conn:
        store.add_label_events(conn, "c", 0, [("e1", "x"), ("e2", "y")], "ann-a", "page")
    with store.transaction() as conn:
        store.add_label_events(conn, "c", 0, [("e1", "y")], "ann-b", "page")
    assert store.current_labels("c") == {"e1": "y", "e2": "y"}
    events = store.label_events("c")
    assert [(e["example_id"], e["label"], e["annotator"]) for e in events] == [
        ("e1", "x", "ann-a"), ("e2", "y", "ann-a"), ("e1", "y", "ann-b")
    ]
    assert all(e["created_at"] is not None for e in events)


def test_history_lists_evaluated_rounds(store):
    with store.transaction() as conn:
        store.add_metrics(conn, "c", 0, 2, {"accuracy": 0.5, "macro_f1": 0.4})
        store.finish_step(conn, "c", 0, "evaluate", {"n_labels": 2}, 0.1)
    h = store.history("c")
    assert len(h) == 1 and h[0].n_labels == 2 and h[0].metrics["accuracy"] == 0.5


def test_campaigns_are_isolated(store):
    with store.transaction() as conn:
        store.create_campaign(
            conn, name="d", uid="u2", config={}, seed=1, pool_digest="q", pool_size=5,
            eval_digest=None, labels=["x", "y"], model_digest="m",
        )
        store.add_label_events(conn, "d", 0, [("e1", "x")], "a", "page")
    assert store.current_labels("c") == {}
    assert store.current_labels("d") == {"e1": "x"}
    assert store.campaign_names() == ["c", "d"]


def test_reopening_keeps_everything(store, tmp_path):
    with store.transaction() as conn:
        store.add_label_events(conn, "c", 0, [("e1", "x")], "a", "page")
    again = CampaignStore(store.url)
    assert again.current_labels("c") == {"e1": "x"}


def test_unopenable_store_is_a_clear_error(tmp_path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "c.db").write_text("this is not a database")
    with pytest.raises(StoreError, match="cannot open campaign store sqlite:///"):
        CampaignStore(f"sqlite:///{tmp_path / 'ro' / 'c.db'}")


def test_passwords_are_masked():
    assert safe_url("postgresql://alft:secret@db:5432/alft") == "postgresql://alft:***@db:5432/alft"


def _one_labeled_campaign(path) -> None:
    """A current-schema SQLite store at ``path`` with campaign "c" and one label (e1 = x)."""
    st = CampaignStore(f"sqlite:///{path}")
    with st.transaction() as conn:
        st.create_campaign(
            conn, name="c", uid="u1", config={}, seed=0, pool_digest="p", pool_size=10,
            eval_digest=None, labels=["x", "y"], model_digest="m",
        )
        st.add_label_events(conn, "c", 0, [("e1", "x")], "ann", "page")
    st.close()


def _set_schema(path, version: int, *statements: str) -> None:
    """Make the SQLite store at ``path`` look like schema ``version``: run ``statements``, set the version."""
    import sqlite3

    db = sqlite3.connect(path)
    for sql in statements:
        db.execute(sql)
    db.execute(f"UPDATE alft_meta SET value = '{version}' WHERE key = 'schema_version'")
    db.commit()
    db.close()


# What a version 4 store lacks: the v5 event index and batch counts.
V4_STATEMENTS = (
    "DROP INDEX ix_label_events_campaign_event",
    "DROP TABLE batch_counts",
)
# What a version 3 store lacks besides: the v4 provenance columns and the proposal tables.
V3_STATEMENTS = V4_STATEMENTS + (
    "ALTER TABLE label_events DROP COLUMN shown",
    "ALTER TABLE label_events DROP COLUMN proposal",
    "ALTER TABLE label_events DROP COLUMN proposal_confidence",
    "ALTER TABLE label_events DROP COLUMN provenance",
    "DROP TABLE proposals",
    "DROP TABLE prelabel_rounds",
)


def _schema_version(path) -> str:
    import sqlite3

    db = sqlite3.connect(path)
    (value,) = db.execute("SELECT value FROM alft_meta WHERE key = 'schema_version'").fetchone()
    db.close()
    return value


def test_a_version_1_store_is_migrated_in_place(tmp_path):
    path = tmp_path / "v1.db"
    _one_labeled_campaign(path)
    # a version-1 store: no kind column, no lease table
    _set_schema(path, 1, *V3_STATEMENTS, "ALTER TABLE label_events DROP COLUMN kind", "DROP TABLE run_leases")
    again = CampaignStore(f"sqlite:///{path}")
    assert again.label_events("c")[0]["kind"] == "label"
    assert again.current_labels("c") == {"e1": "x"}
    assert _schema_version(path) == "5"
    assert again.leases("c") == []  # the v3 table exists


def test_a_version_2_store_gets_the_run_lease_table(tmp_path):
    from alft.store import leases

    path = tmp_path / "v2.db"
    _one_labeled_campaign(path)
    _set_schema(path, 2, *V3_STATEMENTS, "DROP TABLE run_leases")
    again = CampaignStore(f"sqlite:///{path}")
    assert again.current_labels("c") == {"e1": "x"}  # nothing of v2 changed
    assert leases.acquire(again, "c", "run-1") == []
    assert [r["flow_run_id"] for r in again.leases("c")] == ["run-1"]
    leases.release(again, "c", "run-1", "completed")
    again.close()
    assert _schema_version(path) == "5"


def test_a_version_4_store_gets_the_event_index_and_batch_counts(tmp_path):
    import sqlite3

    from alft.human.labeling import LabelItem, submit

    path = tmp_path / "v4.db"
    _one_labeled_campaign(path)
    _set_schema(path, 4, *V4_STATEMENTS)
    again = CampaignStore(f"sqlite:///{path}")
    assert _schema_version(path) == "5"
    db = sqlite3.connect(path)
    indexes = {row[1] for row in db.execute("PRAGMA index_list(label_events)")}
    plan = " ".join(r[3] for r in db.execute(
        "EXPLAIN QUERY PLAN SELECT max(event_id) FROM label_events WHERE campaign = 'c'"))
    db.close()
    assert "ix_label_events_campaign_event" in indexes and "ix_label_events_campaign_event" in plan
    with again.transaction() as conn:
        again.add_selections(conn, "c", 0, [("e1", 1, None), ("e2", 2, None)], "random")
        again.finish_step(conn, "c", 0, "select", {"k": 2}, 0.1)
    res = submit(again, "c", [LabelItem("e2", "y")], annotator="ann", source="test", label_set=["x", "y"])
    assert (res.remaining, res.complete) == (0, True)  # e1 kept its pre-v5 label
    assert again.batch_counts("c", 0)["resolved"] == 2
    again.close()


def test_a_newer_store_is_refused(tmp_path):
    path = tmp_path / "v9.db"
    CampaignStore(f"sqlite:///{path}").close()
    _set_schema(path, 9)  # as a later alft would leave it
    with pytest.raises(StoreError, match="schema version 9, this alft expects 5"):
        CampaignStore(f"sqlite:///{path}")
