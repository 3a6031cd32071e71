"""Schema v4: proposals written once per round, and the provenance every label event carries."""

from __future__ import annotations

import sqlite3

import pytest

from alft.store.batches import Shown, provenance
from alft.store.campaign_store import CampaignStore
from tests.store.test_store import V3_STATEMENTS, _schema_version, _set_schema


@pytest.fixture
def store(tmp_path):
    st = CampaignStore(f"sqlite:///{tmp_path / 'c.db'}")
    with st.transaction() as conn:
        st.create_campaign(
            conn, name="c", uid="u1", config={}, seed=0, pool_digest="p", pool_size=10,
            eval_digest=None, labels=["x", "y"], model_digest="m",
        )
        st.add_selections(conn, "c", 1, [(f"e{i}", i, None) for i in range(4)], "margin")
    yield st
    st.close()


def test_provenance_follows_from_what_was_shown():
    offer = Shown("label", "x", 0.9)
    assert provenance("x", offer, "page") == "accepted"
    assert provenance("y", offer, "page") == "corrected"
    assert provenance("x", None, "page") == "typed"
    assert provenance("x", offer, "auto") == "auto"
    draft = Shown("draft", draft="Paris is the capital.\r\n")
    assert provenance("Paris is the capital.", draft, "page") == "accepted"  # a textarea's line ends
    assert provenance("Paris is the capital of France.", draft, "page") == "corrected"


def test_label_events_record_the_proposal_and_the_provenance(store):
    with store.transaction() as conn:
        store.add_label_events(
            conn, "c", 1, [("e0", "x"), ("e1", "x"), ("e2", "y")], "ann", "page",
            shown=[Shown("label", "x", 0.9), Shown("label", "y", 0.3), None],
        )
        store.add_label_events(conn, "c", 1, [("e3", "y")], "llm-auto", "auto", shown=[Shown("label", "y", 0.99)])
        store.add_label_events(conn, "c", 1, [("e2", "")], "ann", "page", kind="unsure")
    got = [(e["example_id"], e["shown"], e["proposal"], e["proposal_confidence"], e["provenance"])
           for e in store.label_events("c")]
    assert got == [
        ("e0", "label", "x", 0.9, "accepted"),
        ("e1", "label", "y", 0.3, "corrected"),
        ("e2", None, None, None, "typed"),
        ("e3", "label", "y", 0.99, "auto"),
        ("e2", None, None, None, None),  # an unsure mark is no label: no provenance
    ]


def test_a_shown_list_of_the_wrong_length_is_refused(store):
    from alft.errors import StoreError

    with pytest.raises(StoreError, match="2 label events with 1 shown proposals"):
        with store.transaction() as conn:
            store.add_label_events(conn, "c", 1, [("e0", "x"), ("e1", "x")], "ann", "page", shown=[None])
    assert store.label_events("c") == []


def test_proposals_are_written_once_per_round(store):
    rows = [
        {"example_id": "e0", "label": "x", "confidence": 0.8, "agrees": True, "decision": None},
        {"example_id": "e1", "label": "y", "confidence": 0.4, "agrees": False, "decision": None},
    ]
    with store.transaction() as conn:
        assert store.add_proposals(conn, "c", 1, "llm", rows, {"shots": 4}) is True
    with store.transaction() as conn:  # a re-run: the marker is there, nothing is added
        assert store.add_proposals(conn, "c", 1, "llm", rows[:1], {"shots": 0}) is False
    got = store.proposals("c", 1)
    assert [(p["example_id"], p["label"], p["confidence"], p["source"], p["agrees"]) for p in got] == [
        ("e0", "x", 0.8, "llm", True),
        ("e1", "y", 0.4, "llm", False),
    ]
    assert store.prelabel_round("c", 1)["info"] == {"shots": 4}
    assert store.prelabel_round("c", 2) is None
    assert store.dump("c")["proposals"] == [
        {"round": 1, "example_id": "e0", "label": "x", "confidence": 0.8, "source": "llm", "agrees": True, "decision": None},
        {"round": 1, "example_id": "e1", "label": "y", "confidence": 0.4, "source": "llm", "agrees": False, "decision": None},
    ]


def test_a_round_without_proposals_still_has_its_marker(store):
    with store.transaction() as conn:
        assert store.add_proposals(conn, "c", 0, "model", [], {"reason": "no model before round 0"})
    assert store.proposals("c", 0) == []
    assert store.prelabel_round("c", 0)["source"] == "model"


def test_a_failed_transaction_leaves_no_proposals_and_no_marker(store):
    with pytest.raises(RuntimeError):
        with store.transaction() as conn:
            store.add_proposals(conn, "c", 1, "model", [{"example_id": "e0", "label": "x", "confidence": 0.7}], {})
            raise RuntimeError("killed while writing")
    assert store.proposals("c") == [] and store.prelabel_round("c", 1) is None


def test_a_version_3_store_is_migrated_in_place(tmp_path):
    path = tmp_path / "v3.db"
    st = CampaignStore(f"sqlite:///{path}")
    with st.transaction() as conn:
        st.create_campaign(
            conn, name="c", uid="u1", config={}, seed=0, pool_digest="p", pool_size=10,
            eval_digest=None, labels=["x", "y"], model_digest="m",
        )
        st.add_label_events(conn, "c", 0, [("e1", "x")], "ann", "page")
    st.close()
    _set_schema(path, 3, *V3_STATEMENTS)
    db = sqlite3.connect(path)
    cols = [r[1] for r in db.execute("PRAGMA table_info(label_events)")]
    db.close()
    assert "provenance" not in cols  # really a v3 store

    again = CampaignStore(f"sqlite:///{path}")
    old = again.label_events("c")[0]
    assert (old["label"], old["kind"], old["provenance"], old["shown"]) == ("x", "label", None, None)  # not known before v4
    assert again.current_labels("c") == {"e1": "x"}
    with again.transaction() as conn:
        again.add_label_events(conn, "c", 0, [("e2", "y")], "ann", "page", shown=[Shown("label", "y", 0.6)])
        assert again.add_proposals(conn, "c", 0, "model", [{"example_id": "e2", "label": "y", "confidence": 0.6}], {})
    assert again.label_events("c")[-1]["provenance"] == "accepted"
    assert len(again.proposals("c")) == 1
    again.close()
    assert _schema_version(path) == "5"
