"""20 annotators voting on the same examples at the same moment, on SQLite and PostgreSQL.

The page's hand-out keeps annotators apart; these tests bypass it (``submit`` and ``POST
/api/labels`` called directly), so every submission races the others on the same examples,
under a policy where resolution matters: 3 votes, strict majority, 12 of the 20 votes on
each example x and 4 each y and z, so disputes come and go while votes arrive. Read back
from the store afterwards:

* every vote is stored exactly once: none lost, none doubled (a retried request writes nothing);
* each submission's events lie together in commit order (one transaction), and the
  ``remaining`` it reported is what a one-at-a-time replay of the stored events gives at its
  commit: the incremental batch counts (``batch_counts``) never drift;
* the final labels follow from the votes, and the stored count says the batch is resolved;
* the completed batch is detected: the paused flow run waiting for it is resumed exactly once.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from alft.human.labeling import LabelItem, resume_if_complete, submit
from alft.resolve import ResolvePolicy, resolve
from alft.store.campaign_store import CampaignStore
from tests.servers import new_database

LABELS = ["x", "y", "z"]
N_ANNOTATORS = 20
N_EXAMPLES = 8
POLICY = ResolvePolicy(overlap=3, rule="majority")
ORACLE = {"overlap": 3, "resolve": "majority"}


def vote(k: int, j: int, labels: list[str]) -> str:
    """Annotator ``k``'s vote on example ``j``: 12 of 20 the first label, 4 the second, 4 the third."""
    r = (k + j) % 5
    return labels[1] if r == 0 else labels[2] if r == 1 else labels[0]


def requests_of(k: int, batch: list[str], labels: list[str]) -> list[list[tuple[str, str]]]:
    """Two halves of the batch, then the first half again (a retried request)."""
    first = [(ex, vote(k, j, labels)) for j, ex in enumerate(batch[: len(batch) // 2])]
    second = [(ex, vote(k, j + len(first), labels)) for j, ex in enumerate(batch[len(first) :])]
    return [first, second, first]


@dataclass
class Call:
    annotator: str
    items: list[tuple[str, str]]
    written: int
    unchanged: int
    remaining: int
    complete: bool


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'votes.db'}"
    return new_database(request.getfixturevalue("postgres_url"))


def race(n: int, work) -> list[str]:
    """Run ``work(k)`` in ``n`` threads released together; the errors they raised."""
    errors: list[str] = []
    barrier = threading.Barrier(n)

    def run(k: int) -> None:
        try:
            barrier.wait()
            work(k)
        except Exception as exc:  # reported by the test
            errors.append(f"annotator {k}: {exc!r}")

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return errors


def check_votes(store, name: str, batch: list[str], calls: list[Call], labels: list[str]) -> int:
    """Everything the module docstring promises, read back from the store; the number of
    submissions that completed the batch (disputes may reopen it between two of them)."""
    ids = set(batch)
    events = [e for e in store.label_events(name) if e["example_id"] in ids]
    expected = {(f"a{k:02d}", ex): vote(k, j, labels) for k in range(N_ANNOTATORS) for j, ex in enumerate(batch)}
    got = Counter((e["annotator"], e["example_id"], e["label"], e["kind"]) for e in events)
    assert got == Counter({(ann, ex, lab, "label"): 1 for (ann, ex), lab in expected.items()})
    assert len(calls) == 3 * N_ANNOTATORS
    for ann in {c.annotator for c in calls}:
        first, second, retry = [c for c in calls if c.annotator == ann]
        assert (first.written, second.written) == (len(first.items), len(second.items))
        assert (retry.written, retry.unchanged) == (0, len(retry.items))  # nothing doubled
    # replay the stored events one submission at a time, in commit order
    index = {(e["annotator"], e["example_id"]): i for i, e in enumerate(events)}
    writes = sorted((min(index[(c.annotator, ex)] for ex, _ in c.items), c) for c in calls if c.written)
    completions, before = 0, len(batch)
    for start, c in writes:
        end = start + len(c.items)
        assert sorted(index[(c.annotator, ex)] for ex, _ in c.items) == list(range(start, end))  # one transaction
        states = resolve(events[:end], POLICY)
        remaining = sum(1 for ex in batch if states.get(ex) is None or states[ex].label is None)
        assert (c.remaining, c.complete) == (remaining, remaining == 0), (c, remaining)
        completions += before > 0 and remaining == 0
        before = remaining
    final = resolve(events, POLICY)
    assert {ex: final[ex].label for ex in batch} == {ex: labels[0] for ex in batch}
    current = store.current_labels(name, overlap=POLICY)
    assert {ex: current.get(ex) for ex in batch} == {ex: labels[0] for ex in batch}
    counts = store.batch_counts(name, events[0]["round"])
    assert (counts["size"], counts["resolved"]) == (len(batch), len(batch))
    assert completions >= 1
    return completions


def test_twenty_annotators_submit_votes_on_the_same_examples_at_once(store_url, monkeypatch):
    import prefect.flow_runs

    resumed: list[str] = []
    monkeypatch.setattr(prefect.flow_runs, "resume_flow_run", lambda run_id, run_input=None: resumed.append(run_id))
    st = CampaignStore(store_url)
    batch = [f"e{j}" for j in range(N_EXAMPLES)]
    with st.transaction() as conn:
        st.create_campaign(
            conn, name="c", uid="u", config={"oracle": ORACLE}, seed=0, pool_digest="p", pool_size=N_EXAMPLES,
            eval_digest=None, labels=LABELS, model_digest="m",
        )
        st.add_selections(conn, "c", 0, [(ex, j, None) for j, ex in enumerate(batch)], "random")
        st.finish_step(conn, "c", 0, "select", {"k": N_EXAMPLES}, 0.1)
        st.set_wait(conn, "c", 0, "pause", "run-1")  # a paused flow run waits for this batch
    calls: list[Call] = []
    lock = threading.Lock()

    def annotate(k: int) -> None:
        ann = f"a{k:02d}"
        for items in requests_of(k, batch, LABELS):
            res = submit(st, "c", [LabelItem(ex, lab) for ex, lab in items], annotator=ann, source="test",
                         label_set=LABELS, overlap=POLICY)
            resume_if_complete(st, "c", res, patience_s=0)
            with lock:
                calls.append(Call(ann, items, res.written, res.unchanged, res.remaining, res.complete))

    assert race(N_ANNOTATORS, annotate) == []
    check_votes(st, "c", batch, calls, LABELS)
    assert resumed == ["run-1"]  # completion detected, and acted on, exactly once
    assert st.wait_row("c", 0)["resumed_at"] is not None
    st.close()


def test_twenty_clients_post_votes_on_the_same_examples_to_the_page(store_url, tmp_path):
    import httpx

    from alft.human.page.app import create_app, running
    from benchmarks.label_load import build_load_campaign

    camp = build_load_campaign(tmp_path / "camp", N_EXAMPLES, n_pool=40, store_url=store_url, oracle=ORACLE)
    labels = camp.labels[:3]
    calls: list[Call] = []
    lock = threading.Lock()
    app = create_app(camp.cfg, camp.store, camp.name)
    with running(app) as base:
        def annotate(k: int) -> None:
            ann = f"a{k:02d}"
            headers = {"X-Alft-Token": camp.token, "Origin": base}
            with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
                for items in requests_of(k, camp.batch, labels):
                    body: dict[str, Any] = {"round": 1, "annotator": ann,
                                            "items": [{"id": ex, "label": lab} for ex, lab in items]}
                    r = c.post("/api/labels", json=body)
                    assert r.status_code == 200, r.text
                    d = r.json()
                    with lock:
                        calls.append(Call(ann, items, d["written"], d["unchanged"], d["remaining"], d["complete"]))

        assert race(N_ANNOTATORS, annotate) == []
        status = httpx.get(f"{base}/api/status", headers={"X-Alft-Token": camp.token}).json()
    check_votes(camp.store, camp.name, camp.batch, calls, labels)
    # the page's own live counts agree with the store
    assert status["batch"] == {"size": N_EXAMPLES, "done": N_EXAMPLES, "remaining": 0, "disputed": 0}
    assert status["annotators"] == {f"a{k:02d}": N_EXAMPLES for k in range(N_ANNOTATORS)}
