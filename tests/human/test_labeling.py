"""Human labels: resolution, the all-or-nothing submission, undo, overlap, concurrency."""

from __future__ import annotations


import pytest

from alft.human.labeling import (
    LabelItem,
    LabelRejected,
    NoPendingBatch,
    check_token,
    new_token,
    pending_batch,
    submit,
)
from alft.resolve import ResolvePolicy, agreement, resolve
from tests.conftest import concurrent_submissions, pending_store

LABELS = ["x", "y", "z"]


def ev(ex, label, ann, kind="label"):
    return {"example_id": ex, "label": label, "annotator": ann, "kind": kind}


@pytest.fixture
def store(tmp_path):
    """A campaign whose round 1 batch (e1..e4) waits for labels; round 0 is labeled."""
    return pending_store(tmp_path / "c.db", LABELS)


def sub(store, items, ann="ann", **kw):
    return submit(store, "c", [LabelItem(*i) if isinstance(i, tuple) else i for i in items],
                  annotator=ann, source="test", label_set=LABELS, **kw)


# ------------------------------------------------------------------ resolution
def test_resolve_single_annotator_latest_wins_and_undo_unlabels():
    events = [ev("a", "x", "p"), ev("a", "y", "q"), ev("b", "z", "p"), ev("b", "z", "p", "retract")]
    st = resolve(events)
    assert st["a"].label == "y" and st["a"].status == "resolved"
    assert st["b"].label is None and st["b"].status == "pending"


def test_resolve_majority_with_overlap_and_disputes_go_back():
    events = [ev("a", "x", "p"), ev("a", "x", "q"), ev("b", "x", "p"), ev("b", "y", "q"), ev("c", "x", "p")]
    st = resolve(events, overlap=2)
    assert (st["a"].label, st["a"].status) == ("x", "resolved")
    assert (st["b"].label, st["b"].status, st["b"].needs) == (None, "disputed", 1)
    assert (st["c"].label, st["c"].status, st["c"].needs) == (None, "pending", 1)
    st = resolve(events + [ev("b", "y", "r")], overlap=2)  # a third annotator breaks the tie
    assert st["b"].label == "y"


def test_agreement_by_hand():
    # pairs: a (x, x) same; b (x, y) differ -> percent 0.5
    # marginals over pair members: x 3, y 1 -> pe = (3/4)^2 + (1/4)^2 = 0.625
    # kappa = (0.5 - 0.625) / (1 - 0.625) = -1/3
    events = [ev("a", "x", "p"), ev("a", "x", "q"), ev("b", "x", "p"), ev("b", "y", "q"), ev("c", "z", "p")]
    a = agreement(events)
    assert a["n_items"] == 2 and a["pairs"] == 2 and a["percent"] == 0.5
    assert a["kappa"] == pytest.approx(-1 / 3)


# ------------------------------------------------------------------ submission
def test_a_complete_submission_resolves_the_batch(store):
    r = sub(store, [("e1", "x"), ("e2", "y"), ("e3", "z")])
    assert (r.round, r.written, r.remaining, r.complete) == (1, 3, 1, False)
    r = sub(store, [("e4", "x")])
    assert r.complete
    assert store.current_labels("c") == {"e0": "x", "e1": "x", "e2": "y", "e3": "z", "e4": "x"}


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([("e1", "x"), ("e9", "x")], r"'e9': not in the pending batch of round 1"),
        ([("e0", "x")], r"'e0': not in the pending batch of round 1"),  # an earlier round's example
        ([("e1", "nope")], r"'e1': label 'nope' is not in the label set"),
        ([("e1", "x"), ("e1", "y")], r"'e1': submitted twice in one request"),
        ([("e2", None, "retract")], r"stale undo"),
        ([("e2", None, "maybe")], r"unknown kind 'maybe'"),
    ],
)
def test_bad_submissions_change_nothing(store, items, message):
    before = store.label_events("c")
    with pytest.raises(LabelRejected, match=message) as err:
        sub(store, [("e3", "x")] + items)
    assert "nothing was written" in str(err.value)
    assert store.label_events("c") == before


def test_a_stale_round_is_refused(store):
    with pytest.raises(LabelRejected, match="stale submission: it is for round 0, the pending batch is round 1"):
        sub(store, [("e1", "x")], round_=0)


def test_no_pending_batch(store):
    with store.transaction() as conn:
        store.finish_step(conn, "c", 1, "labels", {}, 0.1)
    with pytest.raises(NoPendingBatch, match="no batch waiting"):
        sub(store, [("e1", "x")])


def test_retries_are_idempotent_and_undo_is_an_event(store):
    sub(store, [("e1", "x")])
    r = sub(store, [("e1", "x")])  # the same request again
    assert (r.written, r.unchanged) == (0, 1)
    sub(store, [("e1", None, "retract")])
    assert "e1" not in store.current_labels("c")
    kinds = [(e["example_id"], e["kind"]) for e in store.label_events("c")]
    assert kinds[-2:] == [("e1", "label"), ("e1", "retract")]  # append-only: nothing deleted
    sub(store, [("e1", "y")])
    assert store.current_labels("c")["e1"] == "y"


def test_overlap_needs_several_annotators(store):
    sub(store, [("e1", "x")], ann="p", overlap=2)
    batch = pending_batch(store, "c", overlap=2)
    assert batch.queue_for("p") == ["e2", "e3", "e4"]  # p has voted on e1
    assert batch.queue_for("q") == ["e1", "e2", "e3", "e4"]
    sub(store, [("e1", "y")], ann="q", overlap=2)
    batch = pending_batch(store, "c", overlap=2)
    assert batch.states["e1"].status == "disputed" and "e1" in batch.queue_for("r")
    sub(store, [("e1", "y")], ann="r", overlap=2)
    assert store.current_labels("c", overlap=2)["e1"] == "y"


def test_unanimous_routes_every_disagreement_back_until_the_voters_agree(store):
    policy = ResolvePolicy(overlap=2, rule="unanimous")
    sub(store, [("e1", "x"), ("e2", "x")], ann="p", overlap=policy)
    sub(store, [("e1", "x"), ("e2", "y")], ann="q", overlap=policy)
    batch = pending_batch(store, "c", overlap=policy)
    assert batch.states["e1"].label == "x"
    assert (batch.states["e2"].status, batch.states["e2"].label) == ("disputed", None)
    # routed back to both voters (majority would only ask a third annotator)
    assert "e2" in batch.queue_for("p") and "e2" in batch.queue_for("q")
    assert "e2" not in pending_batch(store, "c", overlap=2).queue_for("p")
    # a third vote for y makes a 2:1 majority, which the unanimous rule does not accept
    sub(store, [("e2", "y")], ann="r", overlap=policy)
    assert pending_batch(store, "c", overlap=policy).states["e2"].status == "disputed"
    assert store.current_labels("c", overlap=2)["e2"] == "y"
    sub(store, [("e2", "y")], ann="p", overlap=policy)  # p reconsiders: every vote agrees
    assert store.current_labels("c", overlap=policy)["e2"] == "y"
    assert [e["label"] for e in store.label_events("c") if e["example_id"] == "e2"] == ["x", "y", "y", "y"]


def test_an_adjudicator_decides_a_dispute_under_either_rule():
    # three different votes: no majority, not unanimous; the lead's vote (2 of 4) decides
    events = [ev("a", "x", "p"), ev("a", "y", "q"), ev("a", "z", "r")]
    for rule in ("majority", "unanimous"):
        policy = ResolvePolicy(overlap=2, rule=rule, adjudicator="lead")
        assert resolve(events, policy)["a"].status == "disputed"
        st = resolve(events + [ev("a", "y", "lead")], policy)["a"]
        assert (st.label, st.status) == ("y", "adjudicated")
    # without a dispute the adjudicator is one more voter
    st = resolve([ev("a", "x", "p"), ev("a", "x", "q"), ev("a", "y", "lead")], ResolvePolicy(2, "majority", "lead"))["a"]
    assert (st.label, st.status) == ("x", "resolved")


def test_a_policy_names_its_bad_values():
    with pytest.raises(ValueError, match="overlap must be >= 1, got 0"):
        ResolvePolicy(overlap=0)
    with pytest.raises(ValueError, match="unknown resolve rule 'vote'"):
        ResolvePolicy(overlap=2, rule="vote")


def test_tokens_are_stored_hashed(store):
    token = new_token(store, "c")
    assert check_token(store, "c", token)
    assert not check_token(store, "c", token + "x") and not check_token(store, "c", None)
    assert token not in str(store.token_hash("c"))
    assert check_token(store, "c", new_token(store, "c")) and not check_token(store, "c", token)  # rotated


def test_concurrent_annotators_lose_and_duplicate_nothing(tmp_path):
    """20 threads submit 1,000 labels (50 each, some twice) against one batch."""
    seconds = concurrent_submissions(f"sqlite:///{tmp_path / 'load.db'}")
    print(f"\n20 threads, 1,000 labels, 220 submissions on SQLite: {seconds:.2f} s")


def test_an_undo_withdraws_only_its_own_label():
    # p labels x, q corrects to y, p undoes: q's y stands (p's undo must not erase it)
    st = resolve([ev("a", "x", "p"), ev("a", "y", "q"), ev("a", "x", "p", "retract")])
    assert st["a"].label == "y"
    # q undoes its correction: p's x comes back
    st = resolve([ev("a", "x", "p"), ev("a", "y", "q"), ev("a", "y", "q", "retract")])
    assert st["a"].label == "x"


def test_a_released_example_keeps_its_earlier_events_when_selected_again(store):
    """A batch's events are its examples' events from any round, not only the batch's round."""
    sub(store, [LabelItem("e1", kind="unsure"), ("e2", "x")])
    with store.transaction() as conn:  # a deadline closes round 1 and returns e1 to the pool
        store.release_selections(conn, "c", 1, ["e1", "e3", "e4"])
        store.finish_step(conn, "c", 1, "labels", {}, 0.1)
        store.add_selections(conn, "c", 2, [("e1", 1, 0.9)], "margin")
        store.finish_step(conn, "c", 2, "select", {"k": 1}, 0.1)
    events = store.batch_label_events("c", 2)
    assert [(e["example_id"], e["kind"], e["round"]) for e in events] == [("e1", "unsure", 1)]
    batch = pending_batch(store, "c")
    assert batch.round == 2 and batch.remaining() == ["e1"]
    res = sub(store, [("e1", "z")])
    assert res.complete and store.current_labels("c") == {"e0": "x", "e1": "z", "e2": "x"}


def test_the_batch_counts_follow_labels_written_around_submit(store):
    """Labels the flow writes itself (simulated, automatic) leave ``batch_counts`` behind the
    campaign's newest event: the next submission recounts instead of adding to a stale count."""
    from alft.human.labeling import policy_key

    assert sub(store, [("e1", "x")]).remaining == 3
    assert store.batch_counts("c", 1)["resolved"] == 1
    with store.transaction() as conn:
        store.add_label_events(conn, "c", 1, [("e2", "y"), ("e3", "z")], "llm-auto", "auto")
    r = sub(store, [("e4", "x")])
    assert (r.remaining, r.complete, r.size) == (0, True, 4)
    with store.transaction() as conn:
        store.add_label_events(conn, "c", 1, [("e3", "z")], "llm-auto", "auto", kind="retract")
    assert sub(store, [("e1", "x")]).remaining == 1  # nothing written, the retract counted
    # counts under another policy are not reused: under overlap 2 only e1 gets two votes
    r = sub(store, [("e1", "x")], ann="q", overlap=2)
    assert (r.remaining, store.batch_counts("c", 1)["policy"]) == (3, policy_key(ResolvePolicy(2)))
    assert sub(store, [("e2", "y")], ann="q").remaining == 1  # back to overlap 1: recounted again
