"""The batch side of the campaign store: selections, label events, waits, access tokens.

What each round selected, the append-only label events on it, the wait of a human round
(and the Prefect run inputs already consumed by it), and the labeling page's token hash.
``CampaignStore`` inherits these queries; methods taking ``conn`` run inside a transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.engine import Connection

from alft.errors import StoreError
from alft.store.base import StoreBase
from alft.store.schema import (
    access_tokens,
    batch_counts,
    consumed_inputs,
    label_events,
    prelabel_rounds,
    proposals,
    selections,
    steps,
    utcnow,
    waits,
)

#: Ids per ``IN (...)`` list: far below SQLite's and PostgreSQL's bound-parameter limits.
_IN_CHUNK = 500

#: The label-event source of labels accepted without a human (``oracle.kind: mixed``).
AUTO_SOURCE = "auto"
PROVENANCES = ("accepted", "corrected", "typed", "auto")


# ---------------------------------------------------------------- prepared statements
# The labeling page runs these per request (a hand-out, a submission). Building a SQLAlchemy
# statement costs more CPU than running it (at a 2,000 batch, building them once cut the page's
# CPU per label from 5.4 to 2.0 ms on SQLite: label_load.py --page-only), so the statements of
# that path are built once here, with bound parameters: ``camp`` (campaign name), ``rnd`` (round),
# ``ids`` (example ids, an expanding list), ``after`` (event id). Names avoid column names,
# which SQLAlchemy reserves in the SET clause of an UPDATE.
_CAMP = bindparam("camp")
_RND = bindparam("rnd")


def _pending_round_stmt():
    labeled = select(steps.c.round).where((steps.c.campaign == _CAMP) & (steps.c.step == "labels"))
    return select(func.max(steps.c.round)).where(
        (steps.c.campaign == _CAMP) & (steps.c.step == "select") & steps.c.round.not_in(labeled.scalar_subquery())
    )


def _head_stmt():
    """The campaign's newest label event id (a scalar subquery's select)."""
    return select(func.max(label_events.c.event_id)).where(label_events.c.campaign == _CAMP)


_PENDING_ROUND = _pending_round_stmt()


def _label_state_stmt():
    pending = _pending_round_stmt().scalar_subquery()
    marker = select(func.count()).select_from(prelabel_rounds).where(
        (prelabel_rounds.c.campaign == _CAMP) & (prelabel_rounds.c.round == pending)
    )
    return select(
        pending.label("round"), marker.scalar_subquery().label("marker"), _head_stmt().scalar_subquery().label("head")
    )


_LABEL_STATE = _label_state_stmt()
_EVENTS_SINCE = (
    select(label_events)
    .where((label_events.c.campaign == _CAMP) & (label_events.c.event_id > bindparam("after")))
    .order_by(label_events.c.event_id)
)
_EXAMPLE_EVENTS = (
    select(label_events)
    .where((label_events.c.campaign == _CAMP) & label_events.c.example_id.in_(bindparam("ids", expanding=True)))
    .order_by(label_events.c.event_id)
)
_BATCH_MEMBERS = select(selections.c.example_id).where(
    (selections.c.campaign == _CAMP)
    & (selections.c.round == _RND)
    & selections.c.example_id.in_(bindparam("ids", expanding=True))
)
_COUNTS_KEY = (batch_counts.c.campaign == _CAMP) & (batch_counts.c.round == _RND)
_COUNTS_STORED = ("policy", "head", "size", "resolved")
_BATCH_STATE = select(
    _head_stmt().scalar_subquery().label("now_head"),
    select(func.count()).select_from(selections)
    .where((selections.c.campaign == _CAMP) & (selections.c.round == _RND))
    .scalar_subquery().label("now_size"),
    *(select(batch_counts.c[c]).where(_COUNTS_KEY).scalar_subquery().label(c) for c in _COUNTS_STORED),
)
_COUNTS_VALUES = {c: bindparam(f"v_{c}") for c in ("policy", "size", "resolved", "updated_at")}
#: ``head`` given (``v_head``), or read by the same statement (the campaign's newest event id)
_COUNTS_UPDATE = batch_counts.update().where(_COUNTS_KEY).values(head=bindparam("v_head"), **_COUNTS_VALUES)
_COUNTS_UPDATE_NOW = batch_counts.update().where(_COUNTS_KEY).values(
    head=_head_stmt().scalar_subquery(), **_COUNTS_VALUES
)
_COUNTS_INSERT = batch_counts.insert().values(
    campaign=_CAMP, round=_RND, head=bindparam("v_head"), **_COUNTS_VALUES
)
_COUNTS_INSERT_NOW = batch_counts.insert().values(
    campaign=_CAMP, round=_RND, head=_head_stmt().scalar_subquery(), **_COUNTS_VALUES
)
_WAIT_ROW = select(waits).where((waits.c.campaign == _CAMP) & (waits.c.round == _RND))


@dataclass(frozen=True)
class Shown:
    """What an annotator was shown with an example: a proposed ``label`` (and its
    ``confidence``), or a ``draft`` response to edit (``kind`` label | draft)."""

    kind: str
    label: str | None = None
    confidence: float | None = None
    draft: str | None = None


def _same_text(a: str, b: str) -> bool:
    # a browser's textarea turns CR LF into LF, and nobody sees trailing blanks
    return a.replace("\r\n", "\n").strip() == b.replace("\r\n", "\n").strip()


def provenance(label: str, shown: Shown | None, source: str) -> str:
    """accepted (the label is what was proposed), corrected (a proposal was shown, the label
    differs), typed (nothing was shown) or auto (accepted without a human)."""
    if source == AUTO_SOURCE:
        return "auto"
    if shown is None:
        return "typed"
    if shown.kind == "draft":
        return "accepted" if _same_text(label, shown.draft or "") else "corrected"
    return "accepted" if label == shown.label else "corrected"


class BatchQueries(StoreBase):
    """Selections, label events, waits and access tokens of the campaigns in one store."""

    # ------------------------------------------------------------ selections
    def add_selections(
        self,
        conn: Connection,
        name: str,
        round_: int,
        rows: Sequence[tuple[str, int, float | None]],
        strategy: str,
        positions: Sequence[int] | None = None,
    ) -> None:
        """``rows`` = (example id, pool id, score or None) in selection order.

        ``positions``: the rows' places in the batch (default 0, 1, ...); a batch written by
        several calls (the strategy's picks and the random control arm) gives them explicitly.
        """
        now = utcnow()
        if positions is None:
            positions = range(len(rows))
        if len(positions) != len(rows):
            raise StoreError(f"{len(rows)} selections with {len(positions)} positions")
        conn.execute(
            selections.insert(),
            [
                {
                    "campaign": name,
                    "example_id": ex,
                    "pool_id": int(pid),
                    "round": round_,
                    "position": int(i),
                    "score": score,
                    "strategy": strategy,
                    "selected_at": now,
                }
                for i, (ex, pid, score) in zip(positions, rows, strict=True)
            ],
        )
        if self.engine.dialect.name == "postgresql":
            # A batch is a bulk load: refresh the planner's statistics now (autovacuum takes up
            # to a minute), or the batch's label-event join (``batch_label_events``) is planned
            # for an empty table and turns quadratic (measured at a 1,000-example batch with 500
            # events: 38 ms instead of 2.4 ms for that one query).
            conn.exec_driver_sql("ANALYZE selections")

    def selections(
        self, name: str, round_: int | None = None, conn: Connection | None = None
    ) -> list[dict[str, Any]]:
        q = select(selections).where(selections.c.campaign == name)
        if round_ is not None:
            q = q.where(selections.c.round == round_)
        return self._rows(q.order_by(selections.c.round, selections.c.position), conn)

    def selected_pool_ids(self, name: str) -> list[int]:
        with self.reader.connect() as conn:
            return list(conn.execute(select(selections.c.pool_id).where(selections.c.campaign == name)).scalars())

    # ------------------------------------------------------------ labels
    def add_label_events(
        self,
        conn: Connection,
        name: str,
        round_: int,
        labels: Sequence[tuple[str, str]],
        annotator: str,
        source: str,
        kind: str = "label",
        shown: Sequence[Shown | None] | None = None,
    ) -> None:
        """Append one event per (example id, label); ``kind`` label, retract or unsure.

        ``shown``: per row, what its annotator was shown (None: nothing); a label's
        provenance follows from it (``provenance``).
        """
        if kind not in ("label", "retract", "unsure"):
            raise StoreError(f"unknown label event kind {kind!r}")
        if shown is None:
            shown = [None] * len(labels)
        if len(shown) != len(labels):
            raise StoreError(f"{len(labels)} label events with {len(shown)} shown proposals")
        # every label write holds the campaign lock: event ids grow in commit order
        self.lock_campaign(conn, name)
        now = utcnow()
        conn.execute(
            label_events.insert(),
            [
                {
                    "campaign": name,
                    "example_id": ex,
                    "round": round_,
                    "label": label,
                    "annotator": annotator,
                    "source": source,
                    "created_at": now,
                    "kind": kind,
                    "shown": sh.kind if sh is not None and kind == "label" else None,
                    "proposal": sh.label if sh is not None and kind == "label" and sh.kind == "label" else None,
                    "proposal_confidence": sh.confidence if sh is not None and kind == "label" else None,
                    "provenance": provenance(label, sh, source) if kind == "label" else None,
                }
                for (ex, label), sh in zip(labels, shown, strict=True)
            ],
        )

    def current_labels(
        self, name: str, conn: Connection | None = None, overlap: Any = 1
    ) -> dict[str, str]:
        """The resolved label of every example that has one (example id -> label).

        ``overlap``: the votes needed (int) or an ``alft.labeling.ResolvePolicy`` (rule and
        adjudicator); 1: an example's newest standing label counts (see ``alft.resolve.resolve``).
        """
        from alft.resolve import resolve

        events = self.label_events(name, conn=conn)
        return {
            ex: r.label for ex, r in resolve(events, overlap).items() if r.label is not None
        }

    def label_events(self, name: str, conn: Connection | None = None) -> list[dict[str, Any]]:
        """Every label event of the campaign, oldest first."""
        q = select(label_events).where(label_events.c.campaign == name).order_by(label_events.c.event_id)
        return self._rows(q, conn)

    def batch_example_ids(self, name: str, round_: int, conn: Connection | None = None) -> set[str]:
        """Example ids selected in ``round_`` (one column: cheaper than ``selections``)."""
        q = select(selections.c.example_id).where((selections.c.campaign == name) & (selections.c.round == round_))
        if conn is not None:
            return set(conn.execute(q).scalars().all())
        with self.reader.connect() as c:
            return set(c.execute(q).scalars().all())

    def batch_label_events(self, name: str, round_: int, conn: Connection | None = None) -> list[dict[str, Any]]:
        """The label events of the examples selected in ``round_`` (any round's events), oldest first.

        One indexed join instead of every event of the campaign: a submission to a batch
        must not slow down as the campaign's history grows.
        """
        sel = select(selections.c.example_id).where(
            (selections.c.campaign == name) & (selections.c.round == round_)
        )
        q = (
            select(label_events)
            .where((label_events.c.campaign == name) & label_events.c.example_id.in_(sel.scalar_subquery()))
            .order_by(label_events.c.event_id)
        )
        return self._rows(q, conn)

    def _scalar(self, q, conn: Connection | None, params: dict[str, Any] | None = None):
        if conn is not None:
            return conn.execute(q, params).scalar()
        with self.reader.connect() as c:
            return c.execute(q, params).scalar()

    def label_events_since(self, name: str, after: int, conn: Connection | None = None) -> list[dict[str, Any]]:
        """The campaign's label events newer than event id ``after``, oldest first.

        Event ids of one campaign grow in commit order (every writer holds the campaign lock
        from its insert to its commit), so once a reader has seen an id, every event it has not
        seen yet has a larger one: the campaign's newest id is the version of its labels.
        """
        return self._rows(_EVENTS_SINCE, conn, {"camp": name, "after": after})

    def example_label_events(
        self, name: str, example_ids: Sequence[str], conn: Connection | None = None
    ) -> list[dict[str, Any]]:
        """The label events of these examples (any round), oldest first: one indexed lookup
        per example, whatever the size of their batch."""
        ids = list(dict.fromkeys(example_ids))
        out: list[dict[str, Any]] = []
        for i in range(0, len(ids), _IN_CHUNK):
            out += self._rows(_EXAMPLE_EVENTS, conn, {"camp": name, "ids": ids[i : i + _IN_CHUNK]})
        return sorted(out, key=lambda e: e["event_id"]) if len(ids) > _IN_CHUNK else out

    def batch_members(
        self, name: str, round_: int, example_ids: Sequence[str], conn: Connection | None = None
    ) -> set[str]:
        """Those of ``example_ids`` that round ``round_`` selected."""
        ids = list(dict.fromkeys(example_ids))
        out: set[str] = set()
        for i in range(0, len(ids), _IN_CHUNK):
            params = {"camp": name, "rnd": round_, "ids": ids[i : i + _IN_CHUNK]}
            out |= {r["example_id"] for r in self._rows(_BATCH_MEMBERS, conn, params)}
        return out

    def pending_label_round(self, name: str, conn: Connection | None = None) -> int | None:
        """The newest round whose batch is selected and whose labels step is not done."""
        r = self._scalar(_PENDING_ROUND, conn, {"camp": name})
        return None if r is None else int(r)

    def label_state(self, name: str, conn: Connection | None = None) -> dict[str, Any]:
        """In one statement: the pending ``round`` (None: none), whether its proposals were
        computed (``prelabeled``: its ``prelabel_rounds`` row exists) and the campaign's newest
        event id (``head``): what the labeling page checks before each hand-out."""
        row = self._rows(_LABEL_STATE, conn, {"camp": name})[0]
        r = row["round"]
        return {
            "round": None if r is None else int(r), "prelabeled": bool(row["marker"]), "head": int(row["head"] or 0)
        }

    # ------------------------------------------------------------ batch counts
    def batch_counts(self, name: str, round_: int, conn: Connection | None = None) -> dict[str, Any] | None:
        """The stored count of resolved examples of a batch (see ``schema.batch_counts``), or None."""
        q = select(batch_counts).where((batch_counts.c.campaign == name) & (batch_counts.c.round == round_))
        rows = self._rows(q, conn)
        return rows[0] if rows else None

    def batch_state(self, name: str, round_: int, conn: Connection | None = None) -> dict[str, Any]:
        """In one statement: the campaign's newest event id (``head``), the batch's ``size``, and
        its stored ``counts`` (``policy``, ``head``, ``size``, ``resolved``; None without a row)."""
        row = self._rows(_BATCH_STATE, conn, {"camp": name, "rnd": round_})[0]
        counts = None if row["policy"] is None else {c: row[c] for c in _COUNTS_STORED}
        return {"head": int(row["now_head"] or 0), "size": int(row["now_size"]), "counts": counts}

    def set_batch_counts(
        self, conn: Connection, name: str, round_: int, *, policy: str, head: int | None, size: int, resolved: int
    ) -> None:
        """Write the batch's count of resolved examples as of event ``head`` under ``policy``
        (``head`` None: the campaign's newest event id now, read by the same statement)."""
        if not 0 <= resolved <= size:
            raise StoreError(f"batch of round {round_}: {resolved} resolved of {size} examples is impossible")
        self.lock_campaign(conn, name)  # update-or-insert: one writer at a time
        params = {
            "camp": name, "rnd": round_, "v_policy": policy, "v_size": size, "v_resolved": resolved,
            "v_updated_at": utcnow(),
        }
        if head is not None:
            params["v_head"] = head
        update, insert = (_COUNTS_UPDATE, _COUNTS_INSERT) if head is not None else (_COUNTS_UPDATE_NOW, _COUNTS_INSERT_NOW)
        if conn.execute(update, params).rowcount == 0:
            conn.execute(insert, params)

    # ------------------------------------------------------------ proposals
    def add_proposals(
        self,
        conn: Connection,
        name: str,
        round_: int,
        source: str,
        rows: Sequence[dict[str, Any]],
        info: dict[str, Any],
    ) -> bool:
        """Record a round's proposals and their marker once; False (nothing written) when the
        round has them already (a re-run, or a second process that computed them too).

        ``rows``: {example_id, label, confidence, agrees, decision} per proposed example.
        """
        self.lock_campaign(conn, name)  # check-then-insert: one writer at a time
        key = (prelabel_rounds.c.campaign == name) & (prelabel_rounds.c.round == round_)
        if conn.execute(select(prelabel_rounds.c.round).where(key)).first():
            return False
        now = utcnow()
        conn.execute(
            prelabel_rounds.insert().values(campaign=name, round=round_, source=source, info=info, created_at=now)
        )
        if rows:
            conn.execute(
                proposals.insert(),
                [
                    {
                        "campaign": name,
                        "round": round_,
                        "example_id": r["example_id"],
                        "label": r["label"],
                        "confidence": r.get("confidence"),
                        "source": source,
                        "agrees": r.get("agrees"),
                        "decision": r.get("decision"),
                        "created_at": now,
                    }
                    for r in rows
                ],
            )
        return True

    def prelabel_round(self, name: str, round_: int, conn: Connection | None = None) -> dict[str, Any] | None:
        """The round's proposal marker (source, info), or None while none was computed."""
        q = select(prelabel_rounds).where((prelabel_rounds.c.campaign == name) & (prelabel_rounds.c.round == round_))
        rows = self._rows(q, conn)
        return rows[0] if rows else None

    def proposals(
        self, name: str, round_: int | None = None, conn: Connection | None = None
    ) -> list[dict[str, Any]]:
        """Proposals of one round (or all), in round then example-id order."""
        q = select(proposals).where(proposals.c.campaign == name)
        if round_ is not None:
            q = q.where(proposals.c.round == round_)
        return self._rows(q.order_by(proposals.c.round, proposals.c.example_id), conn)

    # ------------------------------------------------------------ waiting for labels
    def set_wait(self, conn: Connection, name: str, round_: int, mode: str, flow_run_id: str | None) -> None:
        """Arm the wait of ``round_``: who to resume, not resumed yet.

        Called before every pause; the first call's ``started_at`` is kept (deadlines count
        from the first time the round asked for labels).
        """
        key = (waits.c.campaign == name) & (waits.c.round == round_)
        if conn.execute(select(waits.c.round).where(key)).first():
            conn.execute(waits.update().where(key).values(mode=mode, flow_run_id=flow_run_id, resumed_at=None))
        else:
            conn.execute(
                waits.insert().values(
                    campaign=name, round=round_, mode=mode, flow_run_id=flow_run_id, started_at=utcnow()
                )
            )

    def wait_row(self, name: str, round_: int, conn: Connection | None = None) -> dict[str, Any] | None:
        rows = self._rows(_WAIT_ROW, conn, {"camp": name, "rnd": round_})
        return rows[0] if rows else None

    def mark_resumed(self, conn: Connection, name: str, round_: int) -> bool:
        """Set ``resumed_at`` once; True for the caller that set it (it does the resume)."""
        res = conn.execute(
            waits.update()
            .where((waits.c.campaign == name) & (waits.c.round == round_) & (waits.c.resumed_at.is_(None)))
            .values(resumed_at=utcnow())
        )
        return res.rowcount == 1

    def consume_input(self, conn: Connection, name: str, key: str, round_: int) -> bool:
        """Record run input ``key`` as used; False if it was used before (skip it)."""
        self.lock_campaign(conn, name)  # check-then-insert: one caller at a time
        seen = conn.execute(
            select(consumed_inputs.c.key).where((consumed_inputs.c.campaign == name) & (consumed_inputs.c.key == key))
        ).first()
        if seen:
            return False
        conn.execute(consumed_inputs.insert().values(campaign=name, key=key, round=round_, created_at=utcnow()))
        return True

    def consumed_count(self, name: str, round_: int) -> int:
        with self.reader.connect() as c:
            return len(
                c.execute(
                    select(consumed_inputs.c.key).where(
                        (consumed_inputs.c.campaign == name) & (consumed_inputs.c.round == round_)
                    )
                ).all()
            )

    def release_selections(self, conn: Connection, name: str, round_: int, example_ids: Sequence[str]) -> None:
        """Return unlabeled examples of a closed round to the pool (deadline passed)."""
        if example_ids:
            conn.execute(
                selections.delete().where(
                    (selections.c.campaign == name)
                    & (selections.c.round == round_)
                    & (selections.c.example_id.in_(list(example_ids)))
                )
            )

    def clear_resumed(self, conn: Connection, name: str, round_: int) -> None:
        conn.execute(
            waits.update().where((waits.c.campaign == name) & (waits.c.round == round_)).values(resumed_at=None)
        )

    # ------------------------------------------------------------ access tokens
    def set_token_hash(self, conn: Connection, name: str, digest: str) -> None:
        self.lock_campaign(conn, name)  # delete-then-insert: one caller at a time
        conn.execute(access_tokens.delete().where(access_tokens.c.campaign == name))
        conn.execute(access_tokens.insert().values(campaign=name, token_sha256=digest, created_at=utcnow()))

    def token_hash(self, name: str) -> str | None:
        with self.reader.connect() as c:
            return c.execute(
                select(access_tokens.c.token_sha256).where(access_tokens.c.campaign == name)
            ).scalar()
