"""The campaign store's contract on a real PostgreSQL server (psycopg 3).

The server is the session's throwaway cluster (``postgres_url`` in conftest: Debian's
initdb + pg_ctl); every test gets a fresh database in it.
"""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy.exc import IntegrityError

from alft.errors import StoreError
from alft.human.labeling import LabelItem, pending_batch, submit
from alft.store.campaign_store import CampaignStore
from alft.store.schema import SCHEMA_VERSION
from tests.conftest import concurrent_submissions
from tests.servers import new_database

LABELS = ["x", "y", "z"]


def schema_version(store: CampaignStore) -> int:
    """The version the store's ``alft_meta`` row records (what a migration wrote)."""
    with store.engine.connect() as c:
        return int(c.exec_driver_sql("SELECT value FROM alft_meta WHERE key = 'schema_version'").scalar())


@pytest.fixture
def pg(postgres_url) -> str:
    return new_database(postgres_url)


def make_campaign(st: CampaignStore, name: str = "c", uid: str = "u1", **over) -> None:
    values = dict(
        name=name, uid=uid, config={"a": 1, "nested": {"b": [1, 2.5, None]}}, seed=0, pool_digest="p",
        pool_size=10, eval_digest=None, labels=["x", "y"], model_digest="m",
    )
    values.update(over)
    with st.transaction() as conn:
        st.create_campaign(conn, **values)


@pytest.fixture
def store(pg):
    st = CampaignStore(pg)
    make_campaign(st)
    st.ensure_round("c", 0, "kmeans")
    yield st
    st.close()


def test_it_really_is_postgresql(store):
    assert store.engine.dialect.name == "postgresql" and store.engine.driver == "psycopg"
    assert store.reader is store.engine
    with store.engine.connect() as c:
        assert c.exec_driver_sql("SHOW server_version").scalar().split(".")[0].isdigit()


def test_a_campaign_is_created_and_resumed(store, pg):
    again = CampaignStore(pg)  # a second process opening the same database: nothing re-created
    row = again.campaign("c")
    assert row["config"] == {"a": 1, "nested": {"b": [1, 2.5, None]}} and row["labels"] == ["x", "y"]
    assert row["created_at"].utcoffset() == dt.timedelta(0)
    assert again.campaign_names() == ["c"] and again.rounds("c")[0]["strategy"] == "kmeans"
    with again.transaction() as conn:
        again.set_stop(conn, "c", 0, "budget", "budget of 10 labels reached")
    assert store.campaign("c")["stopped_round"] == 0
    with again.transaction() as conn:
        again.clear_stop(conn, "c")
    assert store.campaign("c")["stop_rule"] is None
    assert schema_version(again) == SCHEMA_VERSION == 5
    again.close()


def test_a_failed_transaction_writes_nothing(store):
    with pytest.raises(RuntimeError):
        with store.transaction() as conn:
            store.add_selections(conn, "c", 0, [("e1", 1, 0.5)], "kmeans")
            store.add_label_events(conn, "c", 0, [("e1", "x")], "a", "page")
            store.finish_step(conn, "c", 0, "select", {"k": 1}, 0.1)
            raise RuntimeError("killed mid-step")
    assert store.selections("c") == [] and store.label_events("c") == []
    assert store.step_result("c", 0, "select") is None


def test_an_example_is_selected_at_most_once(store):
    with store.transaction() as conn:
        store.add_selections(conn, "c", 0, [("e1", 1, 0.5), ("e2", 2, None)], "kmeans")
    with pytest.raises(IntegrityError):
        with store.transaction() as conn:
            store.add_selections(conn, "c", 1, [("e3", 3, 0.1), ("e1", 1, 0.9)], "margin")
    assert [s["example_id"] for s in store.selections("c")] == ["e1", "e2"]  # e3 rolled back too
    assert store.selections("c")[0]["score"] == 0.5 and store.selections("c")[1]["score"] is None
    assert sorted(store.selected_pool_ids("c")) == [1, 2]


def test_a_step_is_finished_once_and_its_result_round_trips(store):
    result = {"n": 1, "f": 0.1 + 0.2, "path": "rounds/000/x.npy", "list": [1, "a", None], "d": {"k": True}}
    with store.transaction() as conn:
        store.finish_step(conn, "c", 0, "embed", result, 1.0)
    with pytest.raises(IntegrityError):
        with store.transaction() as conn:
            store.finish_step(conn, "c", 0, "embed", {"n": 2}, 1.0)
    assert store.step_result("c", 0, "embed") == result  # floats exact, key order kept
    assert list(store.step_result("c", 0, "embed")) == list(result)


def test_labels_are_append_only_events_and_the_latest_wins(store):
    with store.transaction() as conn:
        store.add_label_events(conn, "c", 0, [("e1", "x"), ("e2", "y")], "ann-a", "page")
    with store.transaction() as conn:
        store.add_label_events(conn, "c", 0, [("e1", "y")], "ann-b", "page")
    with store.transaction() as conn:
        store.add_label_events(conn, "c", 0, [("e2", "y")], "ann-a", "page", kind="retract")
    events = store.label_events("c")
    assert [(e["example_id"], e["label"], e["annotator"], e["kind"]) for e in events] == [
        ("e1", "x", "ann-a", "label"), ("e2", "y", "ann-a", "label"), ("e1", "y", "ann-b", "label"),
        ("e2", "y", "ann-a", "retract"),
    ]
    ids = [e["event_id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == 4  # the sequence numbers them in write order
    assert all(e["created_at"].utcoffset() == dt.timedelta(0) for e in events)
    assert store.current_labels("c") == {"e1": "y"}
    with pytest.raises(StoreError, match="unknown label event kind"):
        with store.transaction() as conn:
            store.add_label_events(conn, "c", 0, [("e1", "x")], "a", "page", kind="delete")


def test_a_written_response_is_stored_whole(store):
    """Generation labels are long texts: VARCHAR limits (enforced here, unlike SQLite) must not cut them."""
    response = "Résumé ✓ " * 5000
    with store.transaction() as conn:
        store.add_label_events(conn, "c", 0, [("e1", response)], "expert", "page")
    assert store.current_labels("c") == {"e1": response}


def test_history_lists_evaluated_rounds(store):
    with store.transaction() as conn:
        store.add_metrics(conn, "c", 0, 2, {"accuracy": 0.5, "macro_f1": 0.4})
        store.finish_step(conn, "c", 0, "evaluate", {"n_labels": 2}, 0.1)
        store.finish_round(conn, "c", 0, 2)
    h = store.history("c")
    assert len(h) == 1 and h[0].n_labels == 2 and h[0].metrics == {"accuracy": 0.5, "macro_f1": 0.4}
    assert store.round_row("c", 0)["finished_at"].utcoffset() == dt.timedelta(0)


def test_campaigns_are_isolated(store):
    make_campaign(store, name="d", uid="u2", seed=1)
    with store.transaction() as conn:
        store.add_label_events(conn, "d", 0, [("e1", "x")], "a", "page")
        store.add_selections(conn, "d", 0, [("e1", 1, None)], "random")  # the same id, another campaign
        store.add_selections(conn, "c", 0, [("e1", 1, None)], "random")
    assert store.current_labels("c") == {} and store.current_labels("d") == {"e1": "x"}
    assert store.campaign_names() == ["c", "d"]
    with pytest.raises(IntegrityError):  # the uid is unique across campaigns
        make_campaign(store, name="e", uid="u2")


def test_waits_inputs_and_tokens(store):
    with store.transaction() as conn:
        store.set_wait(conn, "c", 0, "suspend", "run-1")
        assert store.consume_input(conn, "c", "labels-r0-0", 0)
        assert not store.consume_input(conn, "c", "labels-r0-0", 0)
        store.set_token_hash(conn, "c", "a" * 64)
    with store.transaction() as conn:
        store.set_token_hash(conn, "c", "b" * 64)
        assert store.mark_resumed(conn, "c", 0)
        assert not store.mark_resumed(conn, "c", 0)
    assert store.consumed_count("c", 0) == 1 and store.token_hash("c") == "b" * 64
    assert store.wait_row("c", 0)["started_at"].utcoffset() == dt.timedelta(0)


def test_timestamps_come_back_in_utc_whatever_the_server_zone(postgres_url):
    url = new_database(postgres_url, timezone="Asia/Kolkata")
    st = CampaignStore(url)
    make_campaign(st)
    before = dt.datetime.now(dt.timezone.utc)
    with st.transaction() as conn:
        st.add_label_events(conn, "c", 0, [("e1", "x")], "a", "page")
    at = st.label_events("c")[0]["created_at"]
    assert at.utcoffset() == dt.timedelta(0) and abs((at - before).total_seconds()) < 60
    with st.engine.connect() as c:
        assert c.exec_driver_sql("SHOW TimeZone").scalar() == "UTC"
    st.close()


def test_concurrent_openers_of_a_new_database_create_the_schema_once(pg):
    """Processes starting at once (a worker pool) all open the same empty database."""
    errors, stores = [], []
    barrier = threading.Barrier(8)

    def opener():
        try:
            barrier.wait()
            stores.append(CampaignStore(pg))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(stores) == 8
    with stores[0].engine.connect() as c:
        assert c.exec_driver_sql("SELECT count(*) FROM alft_meta").scalar() == 1
    for s in stores:
        s.close()


def test_a_version_1_store_is_migrated_in_place(pg):
    st = CampaignStore(pg)
    make_campaign(st)
    with st.transaction() as conn:
        st.add_label_events(conn, "c", 0, [("e1", "x")], "ann", "page")
        # turn it back into a version-1 store: no kind column, none of the v2 to v5 tables,
        # columns and indexes, version 1
        for column in ("kind", "shown", "proposal", "proposal_confidence", "provenance"):
            conn.exec_driver_sql(f"ALTER TABLE label_events DROP COLUMN {column}")
        conn.exec_driver_sql("DROP INDEX ix_label_events_campaign_event")
        for table in ("access_tokens", "waits", "consumed_inputs", "run_leases", "proposals", "prelabel_rounds",
                      "batch_counts"):
            conn.exec_driver_sql(f"DROP TABLE {table}")
        conn.exec_driver_sql("UPDATE alft_meta SET value = '1' WHERE key = 'schema_version'")
    st.close()
    again = CampaignStore(pg)
    assert again.label_events("c")[0]["kind"] == "label"
    assert again.current_labels("c") == {"e1": "x"}
    with again.transaction() as conn:
        again.set_token_hash(conn, "c", "f" * 64)  # a v2 table exists again
    assert again.leases("c") == []  # and the v3 one
    assert schema_version(again) == SCHEMA_VERSION == 5
    again.close()


def test_a_version_3_store_gets_the_provenance_columns_and_proposal_tables(pg):
    from alft.store.batches import Shown

    st = CampaignStore(pg)
    make_campaign(st)
    with st.transaction() as conn:
        st.add_label_events(conn, "c", 0, [("e1", "x")], "ann", "page")
        for column in ("shown", "proposal", "proposal_confidence", "provenance"):
            conn.exec_driver_sql(f"ALTER TABLE label_events DROP COLUMN {column}")
        conn.exec_driver_sql("DROP INDEX ix_label_events_campaign_event")
        for table in ("proposals", "prelabel_rounds", "batch_counts"):
            conn.exec_driver_sql(f"DROP TABLE {table}")
        conn.exec_driver_sql("UPDATE alft_meta SET value = '3' WHERE key = 'schema_version'")
    st.close()
    again = CampaignStore(pg)
    assert again.label_events("c")[0]["provenance"] is None  # what was shown before v4 is unknown
    with again.transaction() as conn:
        again.add_label_events(conn, "c", 0, [("e2", "y")], "ann", "page", shown=[Shown("label", "x", 0.75)])
        assert again.add_proposals(conn, "c", 0, "llm", [{"example_id": "e2", "label": "x", "confidence": 0.75}], {})
    last = again.label_events("c")[-1]
    assert (last["proposal"], last["proposal_confidence"], last["provenance"]) == ("x", 0.75, "corrected")
    assert [p["label"] for p in again.proposals("c", 0)] == ["x"]
    assert schema_version(again) == SCHEMA_VERSION == 5
    again.close()


def test_a_version_4_store_gets_the_event_index_and_batch_counts(pg):
    st = CampaignStore(pg)
    make_campaign(st)
    with st.transaction() as conn:
        st.add_selections(conn, "c", 0, [("e1", 1, None), ("e2", 2, None)], "random")
        st.finish_step(conn, "c", 0, "select", {"k": 2}, 0.1)
        st.add_label_events(conn, "c", 0, [("e1", "x")], "ann", "page")
        conn.exec_driver_sql("DROP INDEX ix_label_events_campaign_event")
        conn.exec_driver_sql("DROP TABLE batch_counts")
        conn.exec_driver_sql("UPDATE alft_meta SET value = '4' WHERE key = 'schema_version'")
    st.close()
    again = CampaignStore(pg)
    assert schema_version(again) == SCHEMA_VERSION == 5
    with again.engine.connect() as c:
        assert c.exec_driver_sql(
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_label_events_campaign_event'"
        ).scalar() == 1
    res = submit(again, "c", [LabelItem("e2", "y")], annotator="ann", source="test", label_set=LABELS)
    assert (res.remaining, res.complete) == (0, True)  # e1 kept its pre-v5 label
    assert again.batch_counts("c", 0)["resolved"] == 2
    again.close()


def test_a_newer_store_is_refused(pg):
    st = CampaignStore(pg)
    with st.transaction() as conn:
        conn.exec_driver_sql("UPDATE alft_meta SET value = '9' WHERE key = 'schema_version'")
    st.close()
    with pytest.raises(StoreError, match="schema version 9, this alft expects 5"):
        CampaignStore(pg)


def test_an_unreachable_server_is_a_clear_error_without_the_password(tmp_path):
    url = f"postgresql+psycopg://alft:secret@/alft?host={tmp_path}&port=1"
    with pytest.raises(StoreError, match=r"cannot open campaign store postgresql\+psycopg://alft:\*\*\*@") as err:
        CampaignStore(url)
    assert "secret" not in str(err.value)


# --------------------------------------------------------------------------- concurrency
def test_concurrent_annotators_lose_and_duplicate_nothing(pg):
    seconds = concurrent_submissions(pg)
    print(f"\n20 threads, 1,000 labels, 220 submissions on PostgreSQL: {seconds:.2f} s")


def test_the_same_request_arriving_many_times_at_once_is_written_once(pg):
    """20 threads send one annotator's identical 50 labels, and 20 more replay one run input.

    Without the campaign lock each transaction would see no earlier vote and write its own
    copy (READ COMMITTED); with it, the first writes and the rest find their labels unchanged.
    """
    st = CampaignStore(pg)
    with st.transaction() as conn:
        st.create_campaign(
            conn, name="c", uid="u", config={}, seed=0, pool_digest="p", pool_size=100,
            eval_digest=None, labels=LABELS, model_digest="m",
        )
        st.add_selections(conn, "c", 0, [(f"e{i}", i, None) for i in range(100)], "random")
        st.finish_step(conn, "c", 0, "select", {"k": 100}, 0.1)
    items = [LabelItem(f"e{i}", LABELS[i % 3]) for i in range(50)]
    replay = [LabelItem(f"e{i}", "z") for i in range(50, 100)]
    errors, results = [], []
    barrier = threading.Barrier(40)

    def send(batch, **kw):
        try:
            barrier.wait()
            results.append(submit(st, "c", batch, source="load", label_set=LABELS, **kw))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(items,), kwargs={"annotator": "ann"}) for _ in range(20)]
    threads += [
        threading.Thread(target=send, args=(replay,), kwargs={"annotator": f"w{i}", "input_key": "labels-r0-0"})
        for i in range(20)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(r.written for r in results) == [0] * 38 + [50, 50]
    events = st.label_events("c")
    assert len(events) == 100 and len({e["example_id"] for e in events}) == 100
    assert st.consumed_count("c", 0) == 1 and pending_batch(st, "c").complete
    st.close()


# --------------------------------------------------------------------------- end to end
def test_a_campaign_on_postgresql_records_what_it_records_on_sqlite(
    postgres_url, tmp_path, banking_subset, tiny_model
):
    from alft.config import load_config
    from benchmarks.plain import run_plain
    from tests.conftest import campaign_yaml

    dumps = {}
    for backend, url in (("sqlite", None), ("postgresql", new_database(postgres_url))):
        tmp = tmp_path / backend
        tmp.mkdir()
        over = {"store": {"url": url}} if url else {}
        cfg = load_config(campaign_yaml(tmp, banking_subset, tiny_model, name="pg-e2e", **over))
        run_plain(cfg)
        st = CampaignStore(cfg.store_url())
        assert st.engine.dialect.name == backend
        dumps[backend] = st.dump(cfg.name)
        st.close()
    assert len(dumps["postgresql"]["selections"]) == 60 and len(dumps["postgresql"]["labels"]) == 60
    assert dumps["postgresql"]["stop"][0] is not None
    assert dumps["postgresql"] == dumps["sqlite"]


def test_missing_server_binaries_name_the_debian_package(tmp_path):
    from tests.conftest import postgres_binaries

    with pytest.raises(RuntimeError, match=r"initdb and pg_ctl were not found.*apt-get install -y postgresql"):
        postgres_binaries(tmp_path, path=str(tmp_path))
    found = postgres_binaries()
    assert found["initdb"].exists() and found["pg_ctl"].exists()
