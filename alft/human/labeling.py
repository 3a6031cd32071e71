"""Human labels: one transaction for every route (page, Prefect input, file, Label Studio).

Whatever route a label takes, it ends in ``submit``: the whole submission is checked
against the pending batch and the label set, then written as append-only events in one
transaction, or refused as a whole with every problem named. Nothing is ever updated or
deleted: a correction is a newer event, an undo is a ``retract`` event.

How an example's label follows from its events is ``alft.resolve`` (pure; the store and
export use it too).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from alft import faults
from alft.errors import LabelError
from alft.resolve import KINDS, LabelState, ResolvePolicy, as_policy, resolve
from alft.store.batches import Shown


class LabelRejected(LabelError):
    """A submission refused as a whole; ``problems`` lists (example id, reason)."""

    def __init__(self, problems: Sequence[tuple[str, str]], n_items: int) -> None:
        self.problems = list(problems)
        shown = "; ".join(f"{ex!r}: {why}" for ex, why in self.problems[:5])
        more = f"; and {len(self.problems) - 5} more" if len(self.problems) > 5 else ""
        super().__init__(
            f"{len(self.problems)} of {n_items} submitted labels refused, nothing was written: "
            f"{shown}{more}"
        )


class NoPendingBatch(LabelError):
    """Labels arrived while no round is waiting for any."""


@dataclass(frozen=True)
class LabelItem:
    """One submitted judgement: ``label`` for kind ``label``; ignored for the others.

    ``shown``: the proposal (label and confidence) or draft the annotator saw with the
    example, as the route reports it; None = nothing was shown (the label was typed).
    """

    example_id: str
    label: str | None = None
    kind: str = "label"
    shown: Shown | None = None


def _shown_problem(shown: Shown | None, known: set[str]) -> str | None:
    """Why the reported proposal cannot be recorded, or None."""
    import math

    if shown is None:
        return None
    if shown.kind not in ("label", "draft"):
        return f"unknown proposal kind {shown.kind!r} (label or draft)"
    if shown.confidence is not None and (
        isinstance(shown.confidence, bool)
        or not isinstance(shown.confidence, (int, float))
        or not math.isfinite(shown.confidence)
        or not 0 <= shown.confidence <= 1
    ):
        return f"the proposal's confidence {shown.confidence!r} is not a probability in [0, 1]"
    if shown.kind == "draft":
        return None if isinstance(shown.draft, str) else "a shown draft needs its text"
    if known and shown.label not in known:
        return f"the proposal shown, {shown.label!r}, is not in the label set"
    if not known and not isinstance(shown.label, str):
        return "a shown proposal needs its label"
    return None


# --------------------------------------------------------------------------- batches
@dataclass
class PendingBatch:
    """The round waiting for labels, and where each of its examples stands."""

    round: int
    items: list[dict[str, Any]]  # selections rows, in selection order
    states: dict[str, LabelState]
    policy: ResolvePolicy = field(default_factory=ResolvePolicy)

    @property
    def example_ids(self) -> list[str]:
        return [s["example_id"] for s in self.items]

    def remaining(self) -> list[str]:
        """Ids not resolved yet, in selection order."""
        return [ex for ex in self.example_ids if self.states.get(ex) is None or self.states[ex].label is None]

    @property
    def complete(self) -> bool:
        return not self.remaining()

    def queue_for(self, annotator: str) -> list[str]:
        """Ids this annotator can still help with, in selection order.

        Unresolved examples without their vote; under a routing-back rule also the
        disputed ones they voted on (to reconsider); for the adjudicator, every dispute.
        """
        out = []
        for ex in self.remaining():
            st = self.states.get(ex)
            if st is None or annotator not in st.votes:
                out.append(ex)
            elif st.status == "disputed" and (
                self.policy.routes_back or annotator == self.policy.adjudicator
            ):
                out.append(ex)
        return out


def pending_round(store, name: str, conn=None) -> int | None:
    """The newest round whose batch is selected and whose labels step is not done."""
    return store.pending_label_round(name, conn=conn)


def pending_batch(store, name: str, overlap: int | ResolvePolicy = 1, conn=None) -> PendingBatch | None:
    """The batch of the round waiting for labels, or None when no round waits."""
    r = pending_round(store, name, conn)
    if r is None:
        return None
    items = store.selections(name, r, conn=conn)
    events = store.batch_label_events(name, r, conn=conn)
    policy = as_policy(overlap)
    return PendingBatch(round=r, items=items, states=resolve(events, policy), policy=policy)


#: Longest response a generation campaign accepts (about 25k tokens): a paste gone wrong
#: should be refused, not written into the training set.
MAX_RESPONSE_CHARS = 100_000


def _free_text_problem(text: str | None) -> str | None:
    """Why a written response cannot be stored, or None."""
    if not isinstance(text, str) or not text.strip():
        return "the response is empty"
    if len(text) > MAX_RESPONSE_CHARS:
        return f"the response has {len(text)} characters, more than {MAX_RESPONSE_CHARS}"
    if "\x00" in text:
        return "the response holds a NUL byte (binary data?)"
    return None


@dataclass(frozen=True)
class SubmitResult:
    """What one submission did; ``remaining`` and ``size`` counted under ``policy``."""

    round: int
    written: int
    unchanged: int
    remaining: int
    complete: bool
    size: int | None = None
    policy: ResolvePolicy | None = None


def policy_key(policy: ResolvePolicy) -> str:
    """The policy as ``batch_counts`` records it: counts under another policy do not apply."""
    import json

    return json.dumps([policy.overlap, policy.rule, policy.adjudicator])


def _is_resolved(states: Mapping[str, LabelState], ex: str) -> bool:
    st = states.get(ex)
    return st is not None and st.label is not None


def _batch_progress(
    store, conn, name: str, r: int, policy: ResolvePolicy, state: dict[str, Any],
    events: list[dict[str, Any]], written: list[dict[str, Any]],
) -> tuple[int, int]:
    """(size, resolved examples) of round ``r``'s batch once this submission's rows are written.

    ``events``: the submitted examples' events before the write; ``state``: the batch's
    ``BatchQueries.batch_state`` before it. When the stored counts are current (same policy,
    head = the campaign's newest event id, same size) the submission's own examples are
    re-resolved and the difference added: a submit costs the same at any batch size.
    Otherwise (the round's first submission, labels written by another route than
    ``submit``, another policy) the batch is recounted once.
    """
    head, size, counts = state["head"], state["size"], state["counts"]
    key = policy_key(policy)
    current = counts is not None and (counts["policy"], counts["head"], counts["size"]) == (key, head, size)
    if current and not written:
        return size, counts["resolved"]
    if current:
        before, after = resolve(events, policy), resolve(events + written, policy)
        touched = {w["example_id"] for w in written}
        resolved = counts["resolved"] + sum(_is_resolved(after, ex) - _is_resolved(before, ex) for ex in touched)
    else:
        states = resolve(store.batch_label_events(name, r, conn=conn), policy)  # this write included
        resolved = sum(1 for ex in store.batch_example_ids(name, r, conn=conn) if _is_resolved(states, ex))
    store.set_batch_counts(conn, name, r, policy=key, head=None if written else head, size=size, resolved=resolved)
    return size, resolved


def submit(
    store,
    name: str,
    items: Sequence[LabelItem],
    *,
    annotator: str,
    source: str,
    label_set: Sequence[str] | None,
    overlap: int | ResolvePolicy = 1,
    round_: int | None = None,
    input_key: str | None = None,
) -> SubmitResult:
    """Check and write a submission in one transaction; all of it, or none (LabelRejected).

    ``label_set`` empty or None: free text (a generation campaign's label is the reference
    response the expert wrote): any non-blank text up to ``MAX_RESPONSE_CHARS``.
    ``round_``, when given, is the round the submitter believes is pending: a submission
    made against a batch that has closed since is stale and refused. ``input_key`` names a
    Prefect run input: it is recorded in the same transaction and a replay of it (a
    suspended flow re-running from the top) writes nothing.
    """
    if not annotator or not annotator.strip():
        raise LabelRejected([("-", "the annotator is empty")], len(items))
    if len(annotator) > 128:
        raise LabelRejected([("-", f"annotator name longer than 128 characters ({len(annotator)})")], len(items))
    known = set(label_set or ())
    free_text = not known
    with store.transaction() as conn:
        store.lock_campaign(conn, name)
        r = pending_round(store, name, conn)
        if r is None:
            raise NoPendingBatch(f"campaign {name!r} has no batch waiting for labels")
        if round_ is not None and round_ != r:
            raise LabelRejected(
                [("-", f"stale submission: it is for round {round_}, the pending batch is round {r}")],
                len(items),
            )
        # Only the submitted examples are read (indexed lookups), never the whole batch.
        submitted = [it.example_id for it in items]
        batch = store.batch_members(name, r, submitted, conn=conn)
        events = store.example_label_events(name, [ex for ex in submitted if ex in batch], conn=conn)
        state = store.batch_state(name, r, conn=conn)  # before this write: the counts' version check
        mine = {}  # example -> this annotator's latest event
        for e in events:
            if e["annotator"] == annotator:
                mine[e["example_id"]] = e
        problems: list[tuple[str, str]] = []
        seen: set[str] = set()
        writes: dict[str, list[tuple[str, str]]] = {k: [] for k in KINDS}
        shown: list[Shown | None] = []  # what was shown with each label write
        unchanged = 0
        for it in items:
            ex = it.example_id
            if ex in seen:
                problems.append((ex, "submitted twice in one request"))
                continue
            seen.add(ex)
            if it.kind not in KINDS:
                problems.append((ex, f"unknown kind {it.kind!r} (label, retract or unsure)"))
                continue
            if ex not in batch:
                problems.append((ex, f"not in the pending batch of round {r}"))
                continue
            last = mine.get(ex)
            last_kind = (last.get("kind") or "label") if last else None
            if it.kind == "label":
                if free_text:
                    why = _free_text_problem(it.label)
                    if why is not None:
                        problems.append((ex, why))
                        continue
                elif it.label not in known:
                    problems.append((ex, f"label {it.label!r} is not in the label set"))
                    continue
                why = _shown_problem(it.shown, known)
                if why is not None:
                    problems.append((ex, why))
                    continue
                if last_kind == "label" and last["label"] == it.label:
                    unchanged += 1  # the same judgement again (a retried request): no new event
                    continue
                writes["label"].append((ex, it.label))
                shown.append(it.shown)
            elif it.kind == "retract":
                if last_kind != "label":
                    problems.append((ex, f"stale undo: {annotator!r} has no label on it to retract"))
                    continue
                writes["retract"].append((ex, last["label"]))
            else:
                if last_kind == "unsure":
                    unchanged += 1
                    continue
                writes["unsure"].append((ex, ""))
        if problems:
            raise LabelRejected(problems, len(items))
        if input_key is not None and not store.consume_input(conn, name, input_key, r):
            writes = {k: [] for k in KINDS}
            unchanged = len(items)
        for kind, rows in writes.items():
            if rows:
                store.add_label_events(
                    conn, name, r, rows, annotator, source, kind=kind, shown=shown if kind == "label" else None
                )
        faults.point(f"r{r}.labels.submit")  # inside the transaction: a kill here writes nothing
        # this submission's rows in write order: appended to ``events``, what a re-read returns
        written = [
            {"example_id": ex, "label": lab, "annotator": annotator, "kind": kind}
            for kind, rows in writes.items()
            for ex, lab in rows
        ]
        policy = as_policy(overlap)
        size, resolved = _batch_progress(store, conn, name, r, policy, state, events, written)
    return SubmitResult(
        round=r,
        written=len(written),
        unchanged=unchanged,
        remaining=size - resolved,
        complete=resolved == size,
        size=size,
        policy=policy,
    )


class _JoinedStore:
    """A store whose ``transaction()`` joins an open one, so ``submit`` can run inside it."""

    def __init__(self, store, conn) -> None:
        self._store = store
        self._conn = conn

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._store, attr)

    def transaction(self):
        from contextlib import nullcontext

        return nullcontext(self._conn)


def submit_many(
    store,
    name: str,
    groups: Sequence[tuple[str, Sequence[LabelItem]]],
    *,
    source: str,
    label_set: Sequence[str] | None,
    overlap: int | ResolvePolicy = 1,
    round_: int | None = None,
) -> SubmitResult:
    """Several annotators' submissions (one file's) in one transaction: all of them, or none.

    Each (annotator, items) group goes through ``submit`` itself, joined to one outer
    transaction, so the checks are exactly ``submit``'s; the problems of every group are
    collected and refused together (LabelRejected), and then no group is written.
    """
    n_items = sum(len(items) for _, items in groups)
    if not groups:
        raise LabelRejected([("-", "nothing to submit")], 0)
    problems: list[tuple[str, str]] = []
    results: list[SubmitResult] = []
    with store.transaction() as conn:
        joined = _JoinedStore(store, conn)
        for annotator, items in groups:
            try:
                results.append(
                    submit(joined, name, items, annotator=annotator, source=source,
                           label_set=label_set, overlap=overlap, round_=round_)
                )
            except LabelRejected as exc:
                for ex, why in exc.problems:
                    p = (ex, f"{why} (annotator {annotator!r})" if len(groups) > 1 and ex != "-" else why)
                    if p not in problems:
                        problems.append(p)
        if problems:
            # Raised inside the transaction: the groups already written are rolled back too.
            raise LabelRejected(problems, n_items)
    return SubmitResult(
        round=results[-1].round,
        written=sum(r.written for r in results),
        unchanged=sum(r.unchanged for r in results),
        remaining=results[-1].remaining,
        complete=results[-1].complete,
        size=results[-1].size,
        policy=results[-1].policy,
    )


# --------------------------------------------------------------------------- tokens
def new_token(store, name: str) -> str:
    """A fresh access token for the campaign's labeling routes; only its SHA-256 is stored."""
    token = secrets.token_urlsafe(24)
    with store.transaction() as conn:
        store.set_token_hash(conn, name, hashlib.sha256(token.encode()).hexdigest())
    return token


def check_token(store, name: str, token: str | None) -> bool:
    """True when ``token`` is the campaign's current token (constant-time comparison)."""
    digest = store.token_hash(name)
    if digest is None or not token:
        return False
    return hmac.compare_digest(digest, hashlib.sha256(token.encode()).hexdigest())


# --------------------------------------------------------------------------- readiness
def readiness(
    batch: PendingBatch, wait: Mapping[str, Any] | None, oracle: Mapping[str, Any], now=None
) -> tuple[bool, str]:
    """Whether the round may go on, and why (or why not).

    Complete batches may; with ``deadline_s`` set, so may a batch whose resolved share
    reached ``min_fraction`` once the deadline (counted from the start of the wait) passed.
    """
    total = len(batch.items)
    return _ready(total - len(batch.remaining()), total, wait, oracle, now)


def _ready(
    done: int, total: int, wait: Mapping[str, Any] | None, oracle: Mapping[str, Any], now=None
) -> tuple[bool, str]:
    """``readiness`` from the batch's counts: ``done`` resolved of ``total``."""
    import datetime as dt

    if done == total:
        return True, f"all {total} labeled"
    deadline = oracle.get("deadline_s")
    if deadline and wait is not None:
        started = wait["started_at"]
        if started.tzinfo is None:  # SQLite hands back naive datetimes (stored as UTC)
            started = started.replace(tzinfo=dt.timezone.utc)
        now = now or dt.datetime.now(dt.timezone.utc)
        waited = (now - started).total_seconds()
        share = done / total if total else 1.0
        if waited >= deadline and share >= float(oracle.get("min_fraction", 1.0)):
            return True, (
                f"deadline of {deadline} s passed with {done} of {total} labeled "
                f"({share:.0%} >= {float(oracle.get('min_fraction', 1.0)):.0%}); the rest returns to the pool"
            )
    return False, f"{done} of {total} labeled"


# --------------------------------------------------------------------------- resuming
def resume_if_complete(store, name: str, result: SubmitResult, patience_s: float = 15.0) -> str | None:
    """Resume the flow run waiting on this batch once the round may go on; its id, or None.

    "May go on" is ``readiness`` under the campaign's stored oracle settings. Exactly one
    caller resumes (the store records it). A run that is about to pause (it checked the
    store a moment before these labels landed) is retried for ``patience_s``. Runs that
    wait by polling the store need nothing: they see the labels themselves.
    """
    import time

    # the cheap check first: most submissions find nobody to resume (poll mode, or no run yet)
    wait = store.wait_row(name, result.round)
    if wait is None or wait["flow_run_id"] is None or wait["mode"] == "poll":
        return None
    camp = store.campaign(name) or {}
    oracle = (camp.get("config") or {}).get("oracle") or {}
    if not result.complete:  # a deadline may still let an incomplete batch go on
        policy = ResolvePolicy(
            overlap=int(oracle.get("overlap", 1)),
            rule=str(oracle.get("resolve", "majority")),
            adjudicator=oracle.get("adjudicator"),
        )
        if result.policy == policy and result.size is not None:
            # counted under the campaign's own policy by the submission: no batch re-read
            if pending_round(store, name) != result.round:
                return None
            ready, _ = _ready(result.size - result.remaining, result.size, wait, oracle)
        else:
            batch = pending_batch(store, name, policy)
            if batch is None or batch.round != result.round:
                return None
            ready, _ = readiness(batch, wait, oracle)
        if not ready:
            return None
    with store.transaction() as conn:
        if not store.mark_resumed(conn, name, result.round):
            return None
    from prefect.exceptions import NotPausedError
    from prefect.flow_runs import resume_flow_run

    deadline = time.monotonic() + patience_s
    while True:
        try:
            # An empty input: the flow reads the labels from the store, not from here.
            resume_flow_run(wait["flow_run_id"], run_input={"annotator": "alft", "labels": {}})
            return str(wait["flow_run_id"])
        except NotPausedError:
            if time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            with store.transaction() as conn:
                store.clear_resumed(conn, name, result.round)
            return None
        except Exception:
            # Un-mark, so the next route that completes (or a retry of this one) resumes it.
            with store.transaction() as conn:
                store.clear_resumed(conn, name, result.round)
            raise
