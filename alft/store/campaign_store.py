"""The campaign store: what was selected and labeled, every step's result, the metrics.

SQLAlchemy Core over any URL (SQLite by default, PostgreSQL to scale out). Every table is
keyed by campaign name, so campaigns can share one database. Labels are append-only
events; an example's current label is resolved from them (``alft.resolve.resolve``). A step is done when its row
exists in ``steps``; the step's own rows (selections, label events, metrics) are written in
the *same* transaction as that marker, so a crash leaves either both or neither.

The tables, the schema version and its migrations are in ``alft.store.schema``; engines
in ``alft.store.engine``; transactions in ``alft.store.base``; the selection, label-event,
wait and token queries in ``alft.store.batches``. This module adds the campaigns, rounds,
steps, run leases and metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from alft.store.batches import BatchQueries
from alft.store.schema import (
    STEPS,
    campaigns,
    metrics,
    rounds,
    run_leases,
    steps,
    utcnow,
)
from strategies.stopping import RoundRecord


def _live_lease(name: str, flow_run_id: str):
    """WHERE clause: the lease of ``flow_run_id`` on campaign ``name``, if not ended."""
    return (
        (run_leases.c.campaign == name) & (run_leases.c.flow_run_id == flow_run_id) & run_leases.c.ended_at.is_(None)
    )


class CampaignStore(BatchQueries):
    """Typed access to the campaign tables. Methods taking ``conn`` run inside a transaction."""

    # ------------------------------------------------------------ campaigns
    def campaign(self, name: str) -> dict[str, Any] | None:
        with self.reader.connect() as conn:
            row = conn.execute(select(campaigns).where(campaigns.c.name == name)).mappings().first()
        return dict(row) if row else None

    def campaign_names(self) -> list[str]:
        with self.reader.connect() as conn:
            return list(conn.execute(select(campaigns.c.name).order_by(campaigns.c.name)).scalars())

    def create_campaign(self, conn: Connection, **values: Any) -> None:
        conn.execute(campaigns.insert().values(created_at=utcnow(), **values))

    def update_campaign(self, conn: Connection, name: str, **values: Any) -> None:
        conn.execute(campaigns.update().where(campaigns.c.name == name).values(**values))

    def set_stop(self, conn: Connection, name: str, round_: int, rule: str, reason: str) -> None:
        self.update_campaign(
            conn, name, stop_rule=rule, stop_reason=reason, stopped_round=round_, stopped_at=utcnow()
        )

    def clear_stop(self, conn: Connection, name: str) -> None:
        self.update_campaign(conn, name, stop_rule=None, stop_reason=None, stopped_round=None, stopped_at=None)

    # ------------------------------------------------------------ rounds and steps
    def round_row(self, name: str, round_: int) -> dict[str, Any] | None:
        with self.reader.connect() as conn:
            row = conn.execute(
                select(rounds).where(rounds.c.campaign == name, rounds.c.round == round_)
            ).mappings().first()
        return dict(row) if row else None

    def rounds(self, name: str) -> list[dict[str, Any]]:
        with self.reader.connect() as conn:
            rows = conn.execute(
                select(rounds).where(rounds.c.campaign == name).order_by(rounds.c.round)
            ).mappings()
            return [dict(r) for r in rows]

    def ensure_round(self, name: str, round_: int, strategy: str) -> None:
        with self.transaction() as conn:
            exists = conn.execute(
                select(rounds.c.round).where(rounds.c.campaign == name, rounds.c.round == round_)
            ).first()
            if exists is None:
                conn.execute(
                    rounds.insert().values(campaign=name, round=round_, started_at=utcnow(), strategy=strategy)
                )

    def finish_round(self, conn: Connection, name: str, round_: int, n_labels: int) -> None:
        conn.execute(
            rounds.update()
            .where(rounds.c.campaign == name, rounds.c.round == round_)
            .values(finished_at=utcnow(), n_labels=n_labels)
        )

    def set_round_run(self, name: str, round_: int, run_id: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                rounds.update()
                .where(rounds.c.campaign == name, rounds.c.round == round_)
                .values(mlflow_run_id=run_id)
            )

    def mark_tracked(self, name: str, round_: int) -> None:
        with self.transaction() as conn:
            conn.execute(
                rounds.update()
                .where(rounds.c.campaign == name, rounds.c.round == round_)
                .values(tracked_at=utcnow())
            )

    def step_result(self, name: str, round_: int, step: str) -> dict[str, Any] | None:
        with self.reader.connect() as conn:
            row = conn.execute(
                select(steps.c.result).where(
                    steps.c.campaign == name, steps.c.round == round_, steps.c.step == step
                )
            ).first()
        return dict(row[0]) if row else None

    def steps(self, name: str, round_: int | None = None, conn: Connection | None = None) -> list[dict[str, Any]]:
        q = select(steps).where(steps.c.campaign == name)
        if round_ is not None:
            q = q.where(steps.c.round == round_)
        return self._rows(q.order_by(steps.c.round, steps.c.finished_at), conn)

    def finish_step(
        self, conn: Connection, name: str, round_: int, step: str, result: dict[str, Any], seconds: float
    ) -> None:
        conn.execute(
            steps.insert().values(
                campaign=name, round=round_, step=step, finished_at=utcnow(), seconds=float(seconds), result=result
            )
        )

    # ------------------------------------------------------------ run leases
    def leases(self, name: str, conn: Connection | None = None, live_only: bool = True) -> list[dict[str, Any]]:
        """The campaign's run leases (only those not ended, by default), oldest first."""
        q = select(run_leases).where(run_leases.c.campaign == name)
        if live_only:
            q = q.where(run_leases.c.ended_at.is_(None))
        return self._rows(q.order_by(run_leases.c.started_at), conn)

    def hold_lease(self, conn: Connection, name: str, flow_run_id: str, host: str, pid: int, pid_start: str | None) -> None:
        """Record this process as the holder for ``flow_run_id`` (a resumed flow run re-holds its row)."""
        now = utcnow()
        key = (run_leases.c.campaign == name) & (run_leases.c.flow_run_id == flow_run_id)
        values = dict(host=host, pid=pid, pid_start=pid_start, heartbeat_at=now, ended_at=None, end_reason=None)
        if conn.execute(select(run_leases.c.flow_run_id).where(key)).first():
            conn.execute(run_leases.update().where(key).values(**values))
        else:
            conn.execute(run_leases.insert().values(campaign=name, flow_run_id=flow_run_id, started_at=now, **values))

    def end_lease(self, conn: Connection, name: str, flow_run_id: str, reason: str) -> None:
        conn.execute(run_leases.update().where(_live_lease(name, flow_run_id)).values(ended_at=utcnow(), end_reason=reason))

    def beat(self, held: Sequence[tuple[str, str]]) -> None:
        """Refresh the heartbeat of the (campaign, flow run id) leases this process holds."""
        now = utcnow()
        with self.transaction() as conn:
            for name, flow_run_id in held:
                conn.execute(run_leases.update().where(_live_lease(name, flow_run_id)).values(heartbeat_at=now))

    # ------------------------------------------------------------ metrics and history
    def add_metrics(
        self, conn: Connection, name: str, round_: int, n_labels: int, values: dict[str, float]
    ) -> None:
        if values:
            conn.execute(
                metrics.insert(),
                [
                    {"campaign": name, "round": round_, "name": k, "value": float(v), "n_labels": n_labels}
                    for k, v in values.items()
                ],
            )

    def metrics(self, name: str, round_: int | None = None) -> dict[int, dict[str, float]]:
        q = select(metrics).where(metrics.c.campaign == name)
        if round_ is not None:
            q = q.where(metrics.c.round == round_)
        out: dict[int, dict[str, float]] = {}
        with self.reader.connect() as conn:
            for r in conn.execute(q).mappings():
                out.setdefault(r["round"], {})[r["name"]] = r["value"]
        return out

    def history(self, name: str) -> list[RoundRecord]:
        """Finished rounds (evaluated, labels counted), in round order: the stop rules' input."""
        per_round = self.metrics(name)
        out = []
        for r in self.rounds(name):
            ev = self.step_result(name, r["round"], "evaluate")
            if ev is None:
                continue
            out.append(RoundRecord(round=r["round"], n_labels=int(ev["n_labels"]), metrics=per_round.get(r["round"], {})))
        return out

    def dump(self, name: str) -> dict[str, Any]:
        """Everything recorded for a campaign minus timestamps and run ids (for comparisons)."""
        sel = [
            {k: v for k, v in s.items() if k not in ("selected_at", "campaign")} for s in self.selections(name)
        ]
        labels = [
            {k: v for k, v in e.items() if k not in ("created_at", "campaign", "event_id")}
            for e in self.label_events(name)
        ]
        st = [
            {"round": s["round"], "step": s["step"], "result": {k: v for k, v in s["result"].items() if k != "seconds"}}
            for s in self.steps(name)
        ]
        st.sort(key=lambda s: (s["round"], STEPS.index(s["step"]) if s["step"] in STEPS else 99))
        camp = self.campaign(name) or {}
        props = [
            {k: v for k, v in r.items() if k not in ("created_at", "campaign")} for r in self.proposals(name)
        ]
        return {
            "selections": sel,
            "labels": labels,
            "proposals": props,
            "metrics": self.metrics(name),
            "steps": st,
            "stop": (camp.get("stop_rule"), camp.get("stop_reason"), camp.get("stopped_round")),
        }
