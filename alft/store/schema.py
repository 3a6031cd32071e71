"""The campaign store's tables, its schema version, and the in-place migrations of older stores.

Every table is keyed by campaign name, so campaigns can share one database. Every
timestamp is written in UTC (``utcnow``).

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

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
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
    select,
)
from sqlalchemy.engine import Connection

from alft.errors import StoreError
from alft.store.engine import safe_url

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


def ensure_schema(conn: Connection, url: str) -> None:
    """Create the missing tables and migrate an older store, in ``conn``'s transaction.

    A store of a newer (or unknown) schema version is a StoreError naming ``url``.
    """
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
