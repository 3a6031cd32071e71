"""What MLflow gets about the human side of a round, computed from a hand-built store."""

from __future__ import annotations

import datetime as dt

import pytest

from alft.campaign.provenance import human_side
from alft.store.batches import AUTO_SOURCE, Shown
from alft.store.campaign_store import CampaignStore
from alft.store.schema import steps, waits


@pytest.fixture
def store(tmp_path):
    st = CampaignStore(f"sqlite:///{tmp_path / 'c.db'}")
    with st.transaction() as conn:
        st.create_campaign(
            conn, name="c", uid="u1", config={}, seed=0, pool_digest="p", pool_size=10,
            eval_digest=None, labels=["x", "y"], model_digest="m",
        )
        st.add_selections(conn, "c", 1, [(f"e{i}", i, None) for i in range(5)], "margin")
        st.finish_step(conn, "c", 1, "select", {"k": 5}, 0.1)
        st.add_proposals(conn, "c", 1, "llm", [
            {"example_id": "e0", "label": "x", "confidence": 0.9, "agrees": True},
            {"example_id": "e1", "label": "x", "confidence": 0.4, "agrees": True},
            {"example_id": "e2", "label": "y", "confidence": 0.99, "agrees": True, "decision": "auto"},
            {"example_id": "e3", "label": "y", "confidence": 0.98, "agrees": True, "decision": "audit"},
        ], {"source": "llm", "threshold": 0.95, "calibration_n": 160, "auto": 1, "audit": 1})
        st.add_label_events(conn, "c", 1, [("e2", "y")], "llm-auto", AUTO_SOURCE, shown=[Shown("label", "y", 0.99)])
        st.set_wait(conn, "c", 1, "poll", None)
    with st.transaction() as conn:
        # ann kept e0, corrected e1, typed e3 (the blind audit: x, against the proposal y) and e4
        st.add_label_events(conn, "c", 1, [("e0", "x"), ("e1", "y"), ("e3", "x"), ("e4", "y")], "ann", "page",
                            shown=[Shown("label", "x", 0.9), Shown("label", "x", 0.4), None, None])
        # bob labels e0 too (agreement) and changes his mind on e4 (an undo: no standing vote)
        st.add_label_events(conn, "c", 1, [("e0", "x"), ("e4", "x")], "bob", "page", shown=[Shown("label", "x", 0.9), None])
        st.add_label_events(conn, "c", 1, [("e4", "x")], "bob", "page", kind="retract")
        conn.execute(waits.update().values(started_at=dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc)))
        st.finish_step(conn, "c", 1, "labels", {}, 0.1)
        conn.execute(steps.update().where(steps.c.step == "labels").values(
            finished_at=dt.datetime(2026, 1, 1, 12, 30, tzinfo=dt.timezone.utc)))
    yield st
    st.close()


def test_counts_rates_prelabel_accuracy_and_the_audit(store):
    m, art = human_side(store, "c", 1, generation=False)
    # standing votes: ann e0 e1 e3 e4, bob e0, llm-auto e2 (bob's e4 was retracted)
    assert (m["labels.accepted"], m["labels.corrected"], m["labels.typed"], m["labels.auto"]) == (2, 1, 2, 1)
    assert m["labels.accepted_rate"] == pytest.approx(2 / 6) and m["labels.auto_rate"] == pytest.approx(1 / 6)
    # human votes on proposed examples: e0 x2 equal, e1 differs, e3 (audit) differs
    assert (m["prelabel.accuracy"], m["prelabel.n"]) == (pytest.approx(2 / 4), 4)
    assert (m["auto.count"], m["auto.threshold"], m["auto.calibration_n"]) == (1, 0.95, 160)
    assert (m["auto.audit_n"], m["auto.audit_error"]) == (1, 1.0)
    assert m["annotators.n"] == 2
    # ann and bob share e0 (agree) and e4 (bob retracted: no longer a vote)
    assert (m["agreement.percent"], m["agreement.n_items"]) == (1.0, 1)
    assert m["human.wait_seconds"] == 1800.0
    assert art["annotators"] == {"ann": 4, "bob": 1, "llm-auto": 1}
    assert [r["kind"] for r in art["labels"]].count("retract") == 1 and len(art["labels"]) == 8
    assert {r["provenance"] for r in art["labels"] if r["source"] == AUTO_SOURCE} == {"auto"}
    assert art["prelabel"]["source"] == "llm" and art["prelabel"]["threshold"] == 0.95


def test_a_round_without_proposals_or_people_logs_only_what_it_has(tmp_path):
    st = CampaignStore(f"sqlite:///{tmp_path / 'd.db'}")
    with st.transaction() as conn:
        st.create_campaign(
            conn, name="c", uid="u1", config={}, seed=0, pool_digest="p", pool_size=10,
            eval_digest=None, labels=["x", "y"], model_digest="m",
        )
        st.add_selections(conn, "c", 0, [("e0", 0, None)], "kmeans")
        st.add_label_events(conn, "c", 0, [("e0", "x")], "oracle:gold", "simulated")
        st.add_proposals(conn, "c", 0, "model", [], {"source": "model", "reason": "no classifier before the first labels"})
    m, _ = human_side(st, "c", 0, generation=False)
    assert m["labels.typed"] == 1 and m["labels.typed_rate"] == 1.0
    for absent in ("prelabel.accuracy", "auto.count", "auto.threshold", "agreement.percent", "human.wait_seconds"):
        assert absent not in m  # nothing to measure: not logged (never a NaN)
    st.close()
