"""Which example goes to which annotator: the page's per-process state over the store.

``LabelPage`` keeps the pending batch up to date from the store's new events
(``alft.human.page.live.BatchView``), hands each annotator the next example of their queue
while keeping track of what is on other annotators' screens (claims), and funnels every
submission into ``alft.labeling.submit``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from alft.campaign.prelabel import LIST_SIZE
from alft.config import CampaignConfig
from alft.errors import AlftError
from alft.human.labeling import (
    LabelItem,
    PendingBatch,
    check_token,
    pending_round,
    resolve,
    resume_if_complete,
    submit,
)
from alft.human.page.live import BatchView, Tally
from alft.human.proposals import batch_shown, preselected
from alft.resolve import AgreementCounts, agreement_counts
from alft.store.batches import Shown

log = logging.getLogger("alft")
#: labels sent with an example, most probable first (the page lists those at LIST_MIN_P or more)
SUGGESTIONS = LIST_SIZE

CLAIM_TTL_S = 120.0


@dataclass
class Snapshot:
    """The pending batch and its label events as the page knows them at one moment.

    Earlier rounds' labels cannot change while a round waits (every route writes to the
    pending batch only), so what the page shows about them is computed once per round:
    ``labeled_before`` and ``agreement_before``.
    """

    round: int | None
    batch: PendingBatch | None
    events: list[dict[str, Any]]  # the pending batch's events (any round), oldest first
    states: dict[str, Any]  # example id -> LabelState, the pending batch only
    labeled_before: int = 0  # resolved labels outside the pending batch
    agreement_before: Any = None  # AgreementCounts outside the pending batch
    tally: Tally | None = None  # the batch's counts (None: no batch)


class LabelPage:
    """What the app keeps per process: pool texts, label set, suggestions, claims."""

    def __init__(
        self,
        cfg: CampaignConfig,
        store,
        name: str,
        *,
        default_annotator: str | None = None,
        claim_ttl: float = CLAIM_TTL_S,
    ) -> None:
        from alft.campaign.context import CampaignContext, campaign_data

        row = store.campaign(name)
        if row is None:
            raise AlftError(f"no campaign {name!r} in the store")
        data = campaign_data(cfg)
        if row.get("pool_digest") and row["pool_digest"] != data.pool.digest:
            raise AlftError(
                f"campaign {name!r}: the pool data on disk ({data.pool.source}) is not the data the "
                "campaign was created with; the page would show the wrong texts"
            )
        self.cfg = cfg
        self.store = store
        self.name = name
        self.labels: list[str] = list(row.get("labels") or data.labels)
        self.texts: list[str] = data.pool.texts
        # generation: the expert writes (or corrects a draft of) the response to an instruction
        self.generation = cfg.task == "generation"
        self.pool = data.pool
        self.overlap = cfg.oracle.overlap
        self.policy = cfg.oracle.policy()
        self.budget = cfg.budget
        self.default_annotator = default_annotator
        self.ctx = CampaignContext(config=cfg, uid=row["uid"])
        self.claim_ttl = claim_ttl
        self._lock = threading.Lock()
        # Hand-outs (claims -> store -> pick -> claim) run one at a time. A submission commits
        # first and releases its claim after, while a hand-out reads the claims first and the
        # store after: an example whose claim it finds released has its commit visible, so it
        # is never handed to a second annotator just after being labeled (benchmarks/
        # label_load.py saw 5 of 200 examples labeled twice by 20 clients without the order).
        # A hand-out therefore never waits for a submission's commit (its fsync).
        self._handout = threading.RLock()
        self._view_lock = threading.Lock()  # the BatchView, updated by hand-outs and snapshots
        self._view: BatchView | None = None
        # SQLite serialises writers (BEGIN IMMEDIATE), and its busy handler sleeps in growing
        # steps; queueing this process's submissions on a lock instead keeps 20 concurrent
        # annotators from oversleeping. Reads use the reader engine (WAL: they never wait).
        # Other databases run their transactions side by side.
        self.db_lock: Any = threading.Lock() if store.engine.dialect.name == "sqlite" else nullcontext()
        self._probs: dict[int, tuple[int, dict[int, int], np.ndarray] | None] = {}
        self._shown: dict[int, dict[str, Shown]] = {}  # round -> its stored proposals, once final
        self.prelabel = cfg.oracle.prelabel
        self.preselect_min = cfg.oracle.preselect_min_confidence
        self._round_cache: dict[int | None, tuple] = {}
        self._claims: dict[str, tuple[str, float]] = {}  # annotator -> (example id, when)

    # ------------------------------------------------------------------ reads
    def _refresh(self) -> BatchView | None:
        """The pending batch's view, brought up to the store (call with ``_view_lock`` held).

        A new pending round builds a new view (its batch, its events up to the campaign's
        newest event id); otherwise only the events after that id are read and applied.
        """
        st = self.store
        with st.reader.connect() as conn:
            state = st.label_state(self.name, conn=conn)  # round, proposals, newest event id
            r = state["round"]
            if r is None:
                self._view = None
                return None
            view = self._view
            if view is not None and view.round == r:
                if state["head"] > view.head:
                    view.apply(st.label_events_since(self.name, view.head, conn=conn))
                view.prelabeled = state["prelabeled"]
                return view
            fixed = self._round_cache.get(r)
            if fixed is None:
                # once per pending round: its batch and what lies outside it
                items = st.selections(self.name, r, conn=conn)
                ids = {s["example_id"] for s in items}
                outside = [e for e in st.label_events(self.name, conn=conn) if e["example_id"] not in ids]
                before = sum(1 for v in resolve(outside, self.policy).values() if v.label is not None)
                fixed = (items, before, agreement_counts(outside))
                self._round_cache = {r: fixed}
            # the head was read first: events committed after it come with the next refresh, once
            head = state["head"]
            events = [e for e in st.batch_label_events(self.name, r, conn=conn) if e["event_id"] <= head]
        view = BatchView(r, fixed[0], self.policy)
        view.apply(events)
        view.head = max(view.head, head)
        view.prelabeled = state["prelabeled"]
        self._view = view
        return view

    def _before(self, r: int | None) -> tuple[int, Any]:
        fixed = self._round_cache.get(r)
        return (fixed[1], fixed[2]) if fixed is not None else (0, None)

    def snapshot(self) -> Snapshot:
        """The pending batch, its events, states and counts, up to date with the store."""
        with self._view_lock:
            view = self._refresh()
            if view is None:
                return Snapshot(None, None, [], {})
            states, events, tally = dict(view.states), list(view.events), view.tally()
        batch = PendingBatch(round=view.round, items=view.items, states=states, policy=self.policy)
        return Snapshot(view.round, batch, events, states, *self._before(view.round), tally=tally)

    def suggestion(self, round_: int, pool_id: int) -> list[tuple[str, float]]:
        """The proposal source's top labels for a candidate of ``round_`` (best first); [] without
        probs. ``prelabel: model``: the score step's ``probs.npy``; ``llm`` / ``pooled``: the
        probabilities the proposals came from (``proposal_probs.npz``)."""
        from alft.campaign.rounds import round_files

        files = round_files(self.ctx, round_)
        own = self.prelabel in ("llm", "pooled")
        src = files["proposal_probs"] if own else files["probs"]
        try:
            stamp = src.stat().st_mtime_ns
        except OSError:
            return []
        with self._lock:
            cached = self._probs.get(round_)
        if cached is None or cached[0] != stamp:
            try:
                if own:
                    with np.load(src) as z:
                        probs, cand = z["probs"], z["pool_ids"]
                else:
                    probs = np.load(files["probs"])
                    cand = np.load(files["candidates"])
            except (OSError, ValueError, KeyError) as exc:
                log.warning("round %d: cannot read the proposals' probabilities (%s)", round_, exc)
                return []
            if probs.ndim != 2 or probs.shape[0] != cand.shape[0] or probs.shape[1] != len(self.labels):
                log.warning("round %d: probabilities of shape %s do not fit %d candidates x %d labels",
                            round_, probs.shape, cand.shape[0], len(self.labels))
                return []
            cached = (stamp, {int(p): i for i, p in enumerate(cand.tolist())}, probs)
            with self._lock:
                self._probs = {round_: cached}  # one round pending at a time
        _, index, probs = cached
        row = index.get(int(pool_id))
        if row is None:
            return []
        p = probs[row]
        top = np.argsort(-p, kind="stable")[:SUGGESTIONS]
        return [(self.labels[int(i)], float(p[int(i)])) for i in top if math.isfinite(float(p[int(i)]))]

    def shown_for(
        self, batch: PendingBatch | BatchView, example_id: str, sugg: list[tuple[str, float]]
    ) -> Shown | None:
        """What the page shows with ``example_id``: the round's stored proposal; before it is
        stored (``prelabel: model``), the classifier's top label from the score step's file."""
        with self._lock:
            final = self._shown.get(batch.round)
        if final is not None:
            return final.get(example_id)
        generation_drafts = self.generation and self.prelabel == "model"
        prelabeled = getattr(batch, "prelabeled", None)  # a BatchView read it with its refresh
        if prelabeled is None:
            prelabeled = self.store.prelabel_round(self.name, batch.round) is not None
        if not generation_drafts and not prelabeled:
            if self.prelabel == "model" and not self.generation and sugg:
                return Shown("label", sugg[0][0], sugg[0][1])
            return None
        shown, done = batch_shown(self.ctx, batch.round, batch.items, store=self.store)
        if done:
            with self._lock:
                self._shown = {batch.round: shown}  # one round pending at a time
        return shown.get(example_id)

    # ------------------------------------------------------------------ claims
    def _others_claims(self, annotator: str) -> dict[str, int]:
        now = time.monotonic()
        out: dict[str, int] = {}
        with self._lock:
            for ann, (ex, t) in list(self._claims.items()):
                if now - t > self.claim_ttl:
                    del self._claims[ann]
                elif ann != annotator:
                    out[ex] = out.get(ex, 0) + 1
        return out

    def claim(self, annotator: str, example_id: str | None) -> None:
        with self._lock:
            if example_id is None:
                self._claims.pop(annotator, None)
            else:
                self._claims[annotator] = (example_id, time.monotonic())

    # ------------------------------------------------------------------ views
    def progress(self, snap: Snapshot, annotator: str | None = None) -> dict[str, Any]:
        return self._progress(snap.round, snap.tally, snap.labeled_before, snap.agreement_before, annotator)

    def _progress(
        self, round_: int | None, t: Tally | None, labeled_before: int, agreement_before: Any, annotator: str | None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "campaign": self.name,
            "round": round_,
            "labeled": labeled_before + (t.resolved if t is not None else 0),
            "budget": self.budget,
            "overlap": self.overlap,
            "agreement": (
                (t.agreement if t is not None else AgreementCounts()) + (agreement_before or AgreementCounts())
            ).summary(),
        }
        if t is not None:
            out["batch"] = {"size": t.size, "done": t.resolved, "remaining": t.remaining, "disputed": t.disputed}
            if annotator:
                out["batch"]["queue"] = t.queue(annotator)
                out["batch"]["mine"] = t.mine.get(annotator, 0)
        else:
            out["batch"] = None
        return out

    def next_for(self, annotator: str, skip: list[str], first: str | None) -> dict[str, Any]:
        """The example to show ``annotator`` next, with the numbers the page displays."""
        with self._handout:
            return self._next_for(annotator, skip, first)

    def _next_for(self, annotator: str, skip: list[str], first: str | None) -> dict[str, Any]:
        # the claims before the store: see ``_handout`` in __init__
        busy = self._others_claims(annotator)
        with self._view_lock:
            b = self._refresh()
            counts = b.tally() if b is not None else None
            r = b.round if b is not None else None
            out = self._progress(r, counts, *self._before(r), annotator)
            out["example"] = None
            out["undo"] = None
            if b is None:
                out["message"] = "no batch is waiting for labels"
                self.claim(annotator, None)
                return out
            last_label = b.last_label(annotator)
            if last_label is not None:
                out["undo"] = {"id": last_label["example_id"], "label": last_label["label"]}
            queued = counts.queue(annotator)
            if not queued:
                out["message"] = (
                    "this batch is complete" if not counts.remaining
                    else "nothing left for you: the rest waits for other annotators"
                )
                self.claim(annotator, None)
                return out
            # Order: ``first`` (undo) whoever holds it; then what this annotator did not mark
            # unsure, what is on fewer other screens than it needs votes, what they did not skip
            # (skipped ones in skip order), selection order. An example already on enough other
            # annotators' screens is not handed out again (it would be labeled twice); the page
            # asks again every few seconds, and a claim lapses after claim_ttl.
            skip_rank = {ex: i + 1 for i, ex in enumerate(dict.fromkeys(skip))}
            ex = b.pick(annotator, busy, skip_rank, first, self.overlap)
            if ex is None:
                out["message"] = (
                    f"the {queued} example{'s' if queued != 1 else ''} left for you "
                    f"{'are' if queued != 1 else 'is'} on other annotators' screens; "
                    "this page checks again every few seconds"
                )
                self.claim(annotator, None)
                return out
            self.claim(annotator, ex)
            mine = b.latest(annotator, ex) or {}
            st = b.states.get(ex)  # never mutated by later updates: safe after the lock

        def needs(ex: str) -> int:
            return st.needs if st is not None else self.overlap

        sel = b.items[b.pos[ex]]
        sugg = self.suggestion(b.round, sel["pool_id"]) if self.prelabel != "none" and not self.generation else []
        shown = self.shown_for(b, ex, sugg)
        if shown is None or shown.kind != "label":
            sugg = []  # the classifier's ranking goes with its shown proposal only (never to a blind audit)
        pool_id = int(sel["pool_id"])
        out["example"] = {
            "id": ex,
            "text": self.texts[pool_id] if 0 <= pool_id < len(self.texts) else "",
            "round": b.round,
            "position": sel["position"],
            # blind: a control-arm example shows the round's strategy (alft/campaign/control.py)
            "strategy": b.strategy or sel["strategy"],
            "suggestion": shown.label if shown is not None and shown.kind == "label" else None,
            "confidence": shown.confidence if shown is not None and shown.kind == "label" else None,
            "suggestions": [{"label": lab, "p": p} for lab, p in sugg],
            # what the page shows and sends back with the label (its provenance)
            "proposal": None if shown is None or shown.kind != "label" else {
                "label": shown.label,
                "confidence": shown.confidence,
                "source": self.prelabel,
                "preselect": preselected(shown, self.preselect_min),
            },
            "status": st.status if st is not None else "pending",
            "votes": len(st.votes) if st is not None else 0,
            "needs": needs(ex),
            "unsure": mine.get("kind") == "unsure",
        }
        if self.generation and 0 <= pool_id < len(self.texts):
            pool = self.pool
            draft = shown.draft if shown is not None and shown.kind == "draft" else ""
            own = mine if mine.get("kind") == "label" else {}
            out["example"].update(
                instruction=pool.instructions[pool_id],
                input=pool.inputs[pool_id] if pool.inputs is not None else "",
                # a routed-back example shows the annotator's own answer to revise
                draft=own.get("label") or draft,
                # a proposal's draft (not one's own answer): accepted as is, or edited
                draft_proposed=bool(draft) and not own.get("label"),
                has_candidate=pool.candidates is not None,
            )
        if st is not None and st.status == "disputed":
            # routed back: show how the votes split (not who cast them) and this annotator's own
            tally: dict[str, int] = {}
            for lab in st.votes.values():
                tally[lab] = tally.get(lab, 0) + 1
            out["example"]["tally"] = sorted(tally.items(), key=lambda kv: (-kv[1], kv[0]))
            out["example"]["your_vote"] = st.votes.get(annotator)
        return out

    def status(self) -> dict[str, Any]:
        snap = self.snapshot()
        out = self.progress(snap)
        out["annotators"] = dict(snap.tally.label_events) if snap.tally is not None else {}
        return out

    def check(self, token: str) -> bool:
        return check_token(self.store, self.name, token)  # a read: the reader engine, no lock

    def submit(self, annotator: str, round_: int | None, items: list[LabelItem]) -> dict[str, Any]:
        with self.db_lock:
            res = self._submit(annotator, round_, items)
        self.claim(annotator, None)  # after the commit: see ``_handout`` in __init__
        out: dict[str, Any] = {
            "round": res.round,
            "written": res.written,
            "unchanged": res.unchanged,
            "remaining": res.remaining,
            "complete": res.complete,
            "resumed": None,
        }
        try:
            out["resumed"] = resume_if_complete(self.store, self.name, res)
        except Exception as exc:  # the labels are stored; the next completing submit retries
            log.warning("round %d is complete but resuming its flow run failed: %s", res.round, exc)
            out["resume_error"] = str(exc)
        return out

    def _with_drafts(self, items: list[LabelItem]) -> list[LabelItem]:
        """Fill in the text of each draft the page says it showed (the page sends only that it
        did: the server knows which draft it handed out)."""
        from dataclasses import replace

        if not any(it.shown is not None and it.shown.kind == "draft" for it in items):
            return items
        r = pending_round(self.store, self.name)
        batch_items = self.store.selections(self.name, r) if r is not None else []
        drafts, _ = batch_shown(self.ctx, r, batch_items, store=self.store) if r is not None else ({}, True)
        out = []
        for it in items:
            if it.shown is not None and it.shown.kind == "draft":
                d = drafts.get(it.example_id)
                # no draft known for it (none proposed): the response counts as written from scratch
                it = replace(it, shown=d if d is not None and d.kind == "draft" else None)
            out.append(it)
        return out

    def _submit(self, annotator: str, round_: int | None, items: list[LabelItem]):
        items = self._with_drafts(items)
        return submit(
            self.store,
            self.name,
            items,
            annotator=annotator,
            source="page",
            label_set=self.labels,
            overlap=self.policy,
            round_=round_,
        )
