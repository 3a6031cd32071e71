"""The pending batch as one page process knows it, brought up to date from new events only.

Re-reading and re-resolving the whole batch on every request made each request cost grow with
the batch (at 2,000 examples, ~12 ms for ``/api/next`` alone, single-threaded). A
``BatchView`` is built once per pending round; every request then reads only the label events
written since (``label_events_since``: an indexed range above the newest event id it applied),
re-resolves the examples they touch with ``alft.resolve.resolve`` over each one's events, and
adjusts the counts the page shows by the difference.

It stays correct with other writers (a second page process, file imports, the flow) because
every label is an event in the store and one campaign's event ids grow in commit order
(``add_label_events`` holds the campaign lock from its insert to its commit): the events above
the head are exactly the ones not yet applied. The batch itself is fixed while its round waits;
a new pending round builds a new view.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from alft.resolve import AgreementCounts, LabelState, ResolvePolicy, agreement_counts, resolve


@dataclass(frozen=True)
class Tally:
    """The batch's counts at one moment (copies: safe to read outside the view's lock)."""

    size: int
    resolved: int
    disputed: int
    agreement: AgreementCounts  # pairwise agreement over the batch's examples
    mine: Mapping[str, int]  # annotator -> batch examples holding their vote
    held: Mapping[str, int]  # annotator -> unresolved examples not in their queue
    label_events: Mapping[str, int]  # annotator -> their label events on the batch

    @property
    def remaining(self) -> int:
        return self.size - self.resolved

    def queue(self, annotator: str) -> int:
        """How many examples ``PendingBatch.queue_for(annotator)`` holds."""
        return self.remaining - self.held.get(annotator, 0)


class BatchView:
    """One pending batch, its events and states, and the page's counts over them."""

    def __init__(self, round_: int, items: list[dict[str, Any]], policy: ResolvePolicy, head: int = 0) -> None:
        self.round = round_
        self.items = items  # selections rows, in selection order
        self.pos = {s["example_id"]: i for i, s in enumerate(items)}
        self.policy = policy
        self.head = head  # newest event id applied (of any example of the campaign)
        self.prelabeled: bool | None = None  # the round's proposals exist (None: not read)
        self.events: list[dict[str, Any]] = []  # the batch's events, oldest first
        self.states: dict[str, LabelState] = {}  # replaced, never mutated: safe to hand out
        self._by_example: dict[str, list[dict[str, Any]]] = {}
        self._latest: dict[str, dict[str, dict[str, Any]]] = {}  # annotator -> example -> latest event
        self._by_annotator: dict[str, list[dict[str, Any]]] = {}  # annotator -> events, oldest first
        self.remaining = list(range(len(items)))  # positions of unresolved examples, sorted
        self.resolved = 0
        self.disputed = 0
        self.mine: Counter = Counter()
        self.held: Counter = Counter()
        self.label_events: Counter = Counter()
        self.agreement = AgreementCounts()
        self._agreement_of: dict[str, AgreementCounts] = {}
        # the strategy the page names: the round's, not the blind control arm's
        self.strategy = next((s["strategy"] for s in items if s["strategy"] != "random-control"), None)

    # ------------------------------------------------------------------ updates
    def apply(self, events: list[dict[str, Any]]) -> None:
        """Take in events newer than ``head``, oldest first (others' examples only move the head)."""
        touched: dict[str, None] = {}
        for e in events:
            if e["event_id"] <= self.head:
                continue  # read twice (a refresh racing a rebuild): applied already
            self.head = e["event_id"]
            ex = e["example_id"]
            if ex not in self.pos:
                continue
            ann = e["annotator"]
            self.events.append(e)
            self._by_example.setdefault(ex, []).append(e)
            self._latest.setdefault(ann, {})[ex] = e
            self._by_annotator.setdefault(ann, []).append(e)
            if (e.get("kind") or "label") == "label":
                self.label_events[ann] += 1
            touched[ex] = None
        for ex in touched:
            self._restate(ex)

    def _restate(self, ex: str) -> None:
        evs = self._by_example[ex]
        new = resolve(evs, self.policy)[ex]
        old = self.states.get(ex)
        if old is not None:
            self._count(old, -1)
        self._count(new, +1)
        self.states[ex] = new
        was_open, now_open = old is None or old.label is None, new.label is None
        p = self.pos[ex]
        if was_open and not now_open:
            del self.remaining[bisect.bisect_left(self.remaining, p)]
        elif now_open and not was_open:
            bisect.insort(self.remaining, p)
        agree = agreement_counts(evs)
        self.agreement = self.agreement - self._agreement_of.get(ex, AgreementCounts()) + agree
        self._agreement_of[ex] = agree

    def _count(self, st: LabelState, sign: int) -> None:
        if st.label is not None:
            self.resolved += sign
        if st.status == "disputed":
            self.disputed += sign
        for ann in st.votes:
            self.mine[ann] += sign
        if st.label is None:
            for ann in st.votes:
                if not self._routed_back(st, ann):
                    self.held[ann] += sign

    def _routed_back(self, st: LabelState, ann: str) -> bool:
        return st.status == "disputed" and (self.policy.routes_back or ann == self.policy.adjudicator)

    # ------------------------------------------------------------------ reads
    def tally(self) -> Tally:
        return Tally(
            size=len(self.items), resolved=self.resolved, disputed=self.disputed, agreement=self.agreement,
            mine=dict(self.mine), held=dict(self.held), label_events=dict(self.label_events),
        )

    def latest(self, annotator: str, ex: str) -> dict[str, Any] | None:
        """``annotator``'s newest event on ``ex``."""
        return self._latest.get(annotator, {}).get(ex)

    def in_queue(self, annotator: str, ex: str) -> bool:
        """``ex`` is in ``PendingBatch.queue_for(annotator)``."""
        st = self.states.get(ex)
        if st is None:
            return True
        if st.label is not None:
            return False
        return annotator not in st.votes or self._routed_back(st, annotator)

    def last_label(self, annotator: str) -> dict[str, Any] | None:
        """``annotator``'s newest event that is still their label on its example (what undo undoes)."""
        latest = self._latest.get(annotator, {})
        for e in reversed(self._by_annotator.get(annotator, [])):
            if latest.get(e["example_id"]) is e and (e.get("kind") or "label") == "label":
                return e
        return None

    def pick(
        self, annotator: str, busy: Mapping[str, int], skip_rank: Mapping[str, int], first: str | None, overlap: int
    ) -> str | None:
        """The example the page hands ``annotator`` (see ``LabelPage._next_for`` for the order), or None.

        Walks the unresolved examples in selection order and stops at the first one that is
        free, not skipped and not marked unsure by them: usually within the few that other
        annotators' screens hold, whatever the batch size.
        """
        if first is not None and first in self.pos and self.in_queue(annotator, first):
            return first  # undo: shown again whoever else holds it
        mine = self._latest.get(annotator, {})
        best: tuple[tuple[bool, int, int], str] | None = None
        for p in self.remaining:
            ex = self.items[p]["example_id"]
            if not self.in_queue(annotator, ex):
                continue
            st = self.states.get(ex)
            if busy.get(ex, 0) >= (st.needs if st is not None else overlap):
                continue  # on enough other screens already
            key = ((mine.get(ex) or {}).get("kind") == "unsure", skip_rank.get(ex, 0), p)
            if not key[0] and not key[1]:
                return ex
            if best is None or key < best[0]:
                best = (key, ex)
        return best[1] if best is not None else None
