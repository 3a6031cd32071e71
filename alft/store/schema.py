"""The campaign store's tables, its schema version, and the in-place migrations of older stores.

Every table is keyed by campaign name, so campaigns can share one database. Every
timestamp is written in UTC (``utcnow``).

Schema (version 5; version 1 to 4 stores are migrated in place on open)::

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
                                                         INDEX(campaign, event_id)   [v5]
                 kind: label | retract (undo of the annotator's last label) | unsure  [v2]
                 shown, proposal, proposal_confidence, provenance                   [v4]
                 what the annotator was shown (label | draft | NULL) and the label's
                 provenance: accepted | corrected | typed | auto
    proposals(campaign, round, example_id, label, confidence, source, agrees, decision,
              created_at)                                PK(campaign, round, example_id) [v4]
                 the proposed label (or draft) of each batch example: source model | llm
    prelabel_rounds(campaign, round, source, info JSON, created_at)  PK(campaign, round) [v4]
    batch_counts(campaign, round, policy, head, size, resolved, updated_at)
                                                         PK(campaign, round)          [v5]
                 resolved examples of a pending batch, kept by ``submit`` in its transaction;
                 valid while ``head`` is the campaign's newest event id (else recounted)
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
    Boolean,
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

SCHEMA_VERSION = 5
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
    # [v4] what the annotator was shown with the example, so every label's provenance is known:
    # shown label | draft | NULL (nothing); the proposed label (NULL for a draft) and its
    # confidence; provenance accepted | corrected | typed | auto (NULL: retract, unsure, pre-v4)
    Column("shown", String(8)),
    Column("proposal", Text),
    Column("proposal_confidence", Float),
    Column("provenance", String(16)),
    Index("ix_label_events_campaign_example", "campaign", "example_id"),
    # [v5] the campaign's newest event id and the events after one (the labeling page's
    # incremental reads, ``batch_counts``' version check) without scanning its history
    Index("ix_label_events_campaign_event", "campaign", "event_id"),
)

# [v4] What was proposed to the annotators of a round's batch, written once per round (with its
# ``prelabel_rounds`` marker, in one transaction): a label and its confidence, or a draft
# response (confidence NULL). ``agrees``: the current classifier predicts the same label (NULL:
# no classifier to ask). ``decision`` (oracle.kind mixed): auto = accepted without a human,
# audit = would have been auto, sent to people blind; NULL = shown to people.
proposals = Table(
    "proposals",
    metadata,
    Column("campaign", String(64), ForeignKey("campaigns.name"), nullable=False),
    Column("round", Integer, nullable=False),
    Column("example_id", String(512), nullable=False),
    Column("label", Text, nullable=False),
    Column("confidence", Float),
    Column("source", String(16), nullable=False),
    Column("agrees", Boolean),
    Column("decision", String(8)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("campaign", "round", "example_id"),
)

# [v4] One row per round whose proposals were computed (none may exist: round 0 has no model):
# the done-marker that makes a re-run find them instead of computing them again; ``info``
# holds the round's decisions (source, shots, the mixed threshold and its calibration counts).
prelabel_rounds = Table(
    "prelabel_rounds",
    metadata,
    Column("campaign", String(64), ForeignKey("campaigns.name"), nullable=False),
    Column("round", Integer, nullable=False),
    Column("source", String(16), nullable=False),
    Column("info", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("campaign", "round"),
)

# [v5] How many examples of a pending batch are resolved, so a label submission need not
# re-read and re-resolve the whole batch. A cache, not a record: ``submit`` adjusts it in its
# own transaction by what its write changed, and only while it is current -- the same
# resolve ``policy`` (overlap/rule/adjudicator), ``head`` = the campaign's newest event id
# (any other writer of label events leaves it behind) and the batch's ``size``; otherwise
# it recounts the batch and rewrites the row. Never in ``dump``.
batch_counts = Table(
    "batch_counts",
    metadata,
    Column("campaign", String(64), ForeignKey("campaigns.name"), nullable=False),
    Column("round", Integer, nullable=False),
    Column("policy", Text, nullable=False),
    Column("head", Integer, nullable=False),
    Column("size", Integer, nullable=False),
    Column("resolved", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("campaign", "round"),
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

# One fine-tune of the target model (``alft target``): arm alft | random, at n_labels, repeat r,
# under one target spec (digest of the target section and the campaign seed). A row is written
# once, after the run finished; a killed comparison re-runs only the rows it lacks.
target_runs = Table(
    "target_runs",
    metadata,
    Column("campaign", String(64), ForeignKey("campaigns.name"), nullable=False),
    Column("spec", String(64), nullable=False),
    Column("arm", String(16), nullable=False),
    Column("n_labels", Integer, nullable=False),
    Column("repeat", Integer, nullable=False),
    Column("seconds", Float, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("model_dir", Text),
    Column("example_ids", JSON, nullable=False),  # what it trained on (example ids)
    Column("finished_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("campaign", "spec", "arm", "n_labels", "repeat"),
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


def _migrate_3_to_4(conn: Connection) -> None:
    """v4 adds the provenance columns of ``label_events``; ``proposals`` and
    ``prelabel_rounds`` come from ``create_all``. Events written before v4 keep NULL there:
    what their annotators were shown was not recorded."""
    for column, sql_type in (
        ("shown", "VARCHAR(8)"),
        ("proposal", "TEXT"),
        ("proposal_confidence", "FLOAT"),
        ("provenance", "VARCHAR(16)"),
    ):
        conn.exec_driver_sql(f"ALTER TABLE label_events ADD COLUMN {column} {sql_type}")
    conn.execute(
        alft_meta.update().where(alft_meta.c.key == "schema_version").values(value="4")
    )


def _migrate_4_to_5(conn: Connection) -> None:
    """v5 indexes ``label_events`` by (campaign, event_id); ``batch_counts`` comes from
    ``create_all``, which adds no index to a table that exists already."""
    index = next(ix for ix in label_events.indexes if ix.name == "ix_label_events_campaign_event")
    index.create(conn, checkfirst=True)
    conn.execute(
        alft_meta.update().where(alft_meta.c.key == "schema_version").values(value="5")
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
    elif int(row) in (1, 2, 3, 4):
        if int(row) == 1:
            _migrate_1_to_2(conn)
        if int(row) <= 2:
            _migrate_2_to_3(conn)
        if int(row) <= 3:
            _migrate_3_to_4(conn)
        _migrate_4_to_5(conn)
    elif int(row) != SCHEMA_VERSION:
        raise StoreError(
            f"campaign store {safe_url(url)} has schema version {row}, "
            f"this alft expects {SCHEMA_VERSION}"
        )
