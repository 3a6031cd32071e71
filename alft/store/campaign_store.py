"""The campaign store: what was selected and labeled, every step's result, the metrics.

SQLAlchemy Core over any URL (SQLite by default, PostgreSQL to scale out). Every table is
keyed by campaign name, so campaigns can share one database. Labels are append-only
events; an example's current label is resolved from them (``alft.resolve.resolve``). A step is done when its row
exists in ``steps``; the step's own rows (selections, label events, metrics) are written in
the *same* transaction as that marker, so a crash leaves either both or neither.

Schema (version 3; version 1 and 2 stores are migrated in place on open)::

    campaigns(name PK, uid, created_at, config JSON, seed, pool_digest, pool_size,
              eval_digest, labels JSON, model_digest, mlflow_experiment_id, mlflow_run_id,
              stop_rule, stop_reason, stopped_round, stopped_at)
    rounds(campaign, round, started_at, finished_at, n_labels, strategy, mlflow_run_id,
           tracked_at)                                   PK(campaign, round)
    steps(campaign, round, step, finished_at, seconds, result JSON)
                                                         PK(campaign, round, step)
    selections(campaign, example_id, pool_id, round, position, score, strategy, selected_at)
                                                         PK(campaign, example_id)
                                                         UNIQUE(campaign, round, position)
    label_events(event_id PK, campaign, example_id, round, label, annotator, source,
                 created_at, kind)                       INDEX(campaign, example_id)
                 kind: label | retract (undo of the annotator's last label) | unsure  [v2]
    metrics(campaign, round, name, value, n_labels)      PK(campaign, round, name)
    access_tokens(campaign PK, token_sha256, created_at)                              [v2]
    waits(campaign, round, mode, flow_run_id, started_at, resumed_at)  PK(campaign, round) [v2]
    consumed_inputs(campaign, key, round, created_at)    PK(campaign, key)             [v2]
                 Prefect run inputs already turned into label events (never replayed)
    run_leases(campaign, flow_run_id, host, pid, pid_start, started_at, heartbeat_at,
               ended_at, end_reason)                     PK(campaign, flow_run_id)   [v3]
                 which process runs the campaign (``alft.leases``): one live holder at a time
    alft_meta(key PK, value)                             schema_version
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from alft.errors import StoreError
from strategies.stopping import RoundRecord

SCHEMA_VERSION = 3
STEPS = ("embed", "score", "select", "labels", "train", "evaluate", "stop")

metadata = MetaData()

campaigns = Table(
    "campaigns",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("uid", String(32), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("config", JSON, nullable=False),
    Column("seed", Integer, nullable=False),
    Column("pool_digest", String(64), nullable=False),
    Column("pool_size", Integer, nullable=False),
    Column("eval_digest", String(64)),
    Column("labels", JSON, nullable=False),
    Column("model_digest", String(64), nullable=False),
    Column("mlflow_experiment_id", String(64)),
    Column("mlflow_run_id", String(64)),
    Column("stop_rule", String(32)),
    Column("stop_reason", Text),
    Column("stopped_round", Integer),
    Column("stopped_at", DateTime(timezone=True)),
)

rounds = Table(
    "rounds",
    metadata,
    Column("campaign", String(64), ForeignKey("campaigns.name"), nullable=False),
    Column("round", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("n_labels", Integer),
    Column("strategy", String(64), nullable=False),
    Column("mlflow_run_id", String(64)),
    Column("tracked_at", DateTime(timezone=True)),
    PrimaryKeyConstraint("campaign", "round"),
)

steps = Table(
    "steps",
    metadata,
    Column("campaign", String(64), ForeignKey("campaigns.name"), nullable=False),
    Column("round", Integer, nullable=False),
    Column("step", String(16), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Column("seconds", Float, nullable=False),
    Column("result", JSON, nullable=False),
    PrimaryKeyConstraint("campaign", "round", "step"),
)

selections = Table(
    "selections",
    metadata,
    Column("campaign", String(64), ForeignKey("campaigns.name"), nullable=False),
    Column("example_id", String(512), nullable=False),
    Column("pool_id", Integer, nullable=False),
    Column("round", Integer, nullable=False),
    Column("position", Integer, nullable=False),
    Column("score", Float),
    Column("strategy", String(64), nullable=False),
    Column("selected_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("campaign", "example_id"),
    UniqueConstraint("campaign", "round", "position"),
)

label_events = Table(
    "label_events",
    metadata,
    Column("event_id", Integer, primary_key=True, autoincrement=True),
    Column("campaign", String(64), ForeignKey("campaigns.name"), nullable=False),
    Column("example_id", String(512), nullable=False),
    Column("round", Integer, nullable=False),
    # Text: a generation campaign's label is a written response (up to 100k characters);
    # PostgreSQL enforces VARCHAR lengths, SQLite never did.
    Column("label", Text, nullable=False),
    Column("annotator", String(128), nullable=False),
    Column("source", String(32), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("kind", String(16), nullable=False, server_default="label"),
    Index("ix_label_events_campaign_example", "campaign", "example_id"),
)

access_tokens = Table(
    "access_tokens",
    metadata,
    Column("campaign", String(64), ForeignKey("campaigns.name"), primary_key=True),
    Column("token_sha256", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

consumed_inputs = Table(
    "consumed_inputs",
    metadata,
    Column("campaign", String(64), ForeignKey("campaigns.name"), nullable=False),
    Column("key", String(128), nullable=False),
    Column("round", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("campaign", "key"),
)

waits = Table(
    "waits",
    metadata,
    Column("campaign", String(64), ForeignKey("campaigns.name"), nullable=False),
    Column("round", Integer, nullable=False),
    Column("mode", String(16), nullable=False),
    Column("flow_run_id", String(64)),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("resumed_at", DateTime(timezone=True)),
    PrimaryKeyConstraint("campaign", "round"),
)

metrics = Table(
    "metrics",
    metadata,
    Column("campaign", String(64), ForeignKey("campaigns.name"), nullable=False),
    Column("round", Integer, nullable=False),
    Column("name", String(128), nullable=False),
    Column("value", Float, nullable=False),
    Column("n_labels", Integer, nullable=False),
    PrimaryKeyConstraint("campaign", "round", "name"),
)

run_leases = Table(
    "run_leases",
    metadata,
    Column("campaign", String(64), ForeignKey("campaigns.name"), nullable=False),
    Column("flow_run_id", String(64), nullable=False),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("pid_start", String(128)),  # boot id + start tick: a reused pid is another process
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    Column("end_reason", Text),
    PrimaryKeyConstraint("campaign", "flow_run_id"),
)

alft_meta = Table(
    "alft_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _sqlite_pragmas(engine: Engine, immediate: bool = True) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # pragma: no cover - driver callback
        # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE: SQLite's default deferred
        # transactions deadlock when two writers both upgrade from a read lock.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")  # labels are human work: durable on commit
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    if immediate:

        @event.listens_for(engine, "begin")
        def _on_begin(conn) -> None:  # pragma: no cover - driver callback
            conn.exec_driver_sql("BEGIN IMMEDIATE")


#: Key of the PostgreSQL advisory lock that serialises schema creation and migration.
_SCHEMA_LOCK = 0x616C6674  # "alft"


def _postgres_session(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # pragma: no cover - driver callback
        # Timestamps come back in UTC whatever the server's TimeZone (they are written in UTC).
        cur = dbapi_conn.cursor()
        cur.execute("SET TIME ZONE 'UTC'")
        cur.close()
        dbapi_conn.commit()


def _migrate_1_to_2(conn: Connection) -> None:
    """v2 adds ``label_events.kind``; the new tables come from ``create_all``."""
    conn.exec_driver_sql(
        "ALTER TABLE label_events ADD COLUMN kind VARCHAR(16) NOT NULL DEFAULT 'label'"
    )
    conn.execute(
        alft_meta.update().where(alft_meta.c.key == "schema_version").values(value="2")
    )


def _migrate_2_to_3(conn: Connection) -> None:
    """v3 adds ``run_leases`` (from ``create_all``): only the version changes."""
    conn.execute(
        alft_meta.update().where(alft_meta.c.key == "schema_version").values(value="3")
    )


def _live_lease(name: str, flow_run_id: str):
    """WHERE clause: the lease of ``flow_run_id`` on campaign ``name``, if not ended."""
    return (
        (run_leases.c.campaign == name) & (run_leases.c.flow_run_id == flow_run_id) & run_leases.c.ended_at.is_(None)
    )


def _dicts(result) -> list[dict[str, Any]]:
    """Rows as dicts; zipping the keys once is ~4x faster than ``.mappings()`` per row."""
    keys = list(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result.all()]


#: SQLite (and PostgreSQL) messages of a write the disk or the permissions refused.
_WRITE_FAILURES = (
    "database or disk is full", "readonly database", "read-only", "disk i/o error",
    "unable to open database file", "no space left", "could not extend file",
)


class CampaignStore:
    """Typed access to the campaign tables. Methods taking ``conn`` run inside a transaction."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            parsed = make_url(url)
            if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
                from pathlib import Path

                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(url, future=True, pool_pre_ping=True)
            # Reads go through ``reader``: on SQLite a second engine without BEGIN IMMEDIATE,
            # so readers (the labeling page, status) never queue on the write lock; WAL
            # gives each read a consistent snapshot. Elsewhere it is the same engine.
            self.reader = self.engine
            if self.engine.dialect.name == "sqlite":
                _sqlite_pragmas(self.engine)
                self.reader = create_engine(url, future=True, pool_pre_ping=True)
                _sqlite_pragmas(self.reader, immediate=False)
            elif self.engine.dialect.name == "postgresql":
                _postgres_session(self.engine)
            with self.transaction() as conn:
                if self.engine.dialect.name == "postgresql":
                    # Processes opening a new database at once would race in CREATE TABLE
                    # (SQLite's BEGIN IMMEDIATE already serialises them): one at a time.
                    conn.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK)))
                metadata.create_all(conn)
                row = conn.execute(
                    select(alft_meta.c.value).where(alft_meta.c.key == "schema_version")
                ).scalar()
                if row is None:
                    conn.execute(alft_meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
                elif int(row) in (1, 2):
                    if int(row) == 1:
                        _migrate_1_to_2(conn)
                    _migrate_2_to_3(conn)
                elif int(row) != SCHEMA_VERSION:
                    raise StoreError(
                        f"campaign store {safe_url(url)} has schema version {row}, "
                        f"this alft expects {SCHEMA_VERSION}"
                    )
        except StoreError:
            raise
        except (SQLAlchemyError, OSError, ValueError) as exc:
            raise StoreError(f"cannot open campaign store {safe_url(url)}: {exc}") from None

    def close(self) -> None:
        self.engine.dispose()
        if self.reader is not self.engine:
            self.reader.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction: commits on success, rolls back on any exception.

        A full disk or a read-only store file becomes a StoreError naming the store: the
        transaction is rolled back, so the store keeps its last committed state.
        """
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as exc:
            why = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            if not any(m in why.lower() for m in _WRITE_FAILURES):
                raise
            raise StoreError(
                f"campaign store {safe_url(self.url)}: cannot write ({why}); nothing of this "
                "transaction was kept: make room or fix the permissions, then run again"
            ) from None

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

    def _rows(self, q, conn: Connection | None) -> list[dict[str, Any]]:
        # Inside a write transaction, reads must use its connection: a second SQLite
        # connection would wait for the write lock this one holds.
        if conn is not None:
            return _dicts(conn.execute(q))
        with self.reader.connect() as c:
            return _dicts(c.execute(q))

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
    ) -> None:
        """Append one event per (example id, label); ``kind`` label, retract or unsure."""
        if kind not in ("label", "retract", "unsure"):
            raise StoreError(f"unknown label event kind {kind!r}")
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
                }
                for ex, label in labels
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
        q = select(waits).where((waits.c.campaign == name) & (waits.c.round == round_))
        if conn is not None:
            row = conn.execute(q).mappings().first()
        else:
            with self.reader.connect() as c:
                row = c.execute(q).mappings().first()
        return dict(row) if row else None

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

    def lock_campaign(self, conn: Connection, name: str) -> None:
        """Serialise writers of one campaign inside ``conn``'s transaction.

        SQLite already serialises every writer (BEGIN IMMEDIATE); elsewhere a row lock on
        the campaign makes concurrent label submissions queue instead of interleaving. The
        lock is held to commit; under READ COMMITTED every later statement of the
        transaction sees what the previous holder committed. ``FOR NO KEY UPDATE``: it
        conflicts with itself and with updates of the campaign row, but not with the key-share
        locks that inserts into the campaign's other tables take through their foreign keys
        (so those never wait for it, and a transaction that inserted first cannot deadlock
        on taking it).
        """
        if self.engine.dialect.name != "sqlite":
            conn.execute(
                select(campaigns.c.name).where(campaigns.c.name == name).with_for_update(key_share=True)
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
        return {
            "selections": sel,
            "labels": labels,
            "metrics": self.metrics(name),
            "steps": st,
            "stop": (camp.get("stop_rule"), camp.get("stop_reason"), camp.get("stopped_round")),
        }
