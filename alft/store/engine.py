"""Engines for a campaign store URL: SQLite's pragmas and reader engine, PostgreSQL's session.

SQLite (the default) runs in WAL mode with durable commits, foreign keys and a 30 s busy
timeout; its writer engine opens every transaction with BEGIN IMMEDIATE, and reads go
through a second engine without it. PostgreSQL sessions read timestamps in UTC, and an
advisory lock serialises schema creation between processes. Nothing here knows the tables.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.engine import Connection, make_url


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


def open_engines(url: str) -> tuple[Engine, Engine]:
    """The writer and the reader engine of ``url`` (one and the same except on SQLite).

    A SQLite file's folder is created first.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    sqlite = parsed.get_backend_name() == "sqlite"
    # A pooled server connection may have died with its server: ping it on checkout. A
    # SQLite file has no server, and a ping is one more statement per request.
    engine = create_engine(url, future=True, pool_pre_ping=not sqlite)
    # Reads go through ``reader``: on SQLite a second engine without BEGIN IMMEDIATE,
    # so readers (the labeling page, status) never queue on the write lock; WAL
    # gives each read a consistent snapshot. Elsewhere it is the same engine.
    reader = engine
    if sqlite:
        _sqlite_pragmas(engine)
        # as many idle connections as the page's concurrent readers: fewer re-opens
        reader = create_engine(url, future=True, pool_size=20)
        _sqlite_pragmas(reader, immediate=False)
    elif engine.dialect.name == "postgresql":
        _postgres_session(engine)
    return engine, reader


def lock_schema(conn: Connection) -> None:
    """Hold the schema lock for the rest of ``conn``'s transaction (PostgreSQL only).

    Processes opening a new database at once would race in CREATE TABLE (SQLite's BEGIN
    IMMEDIATE already serialises them): one at a time.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK)))


#: SQLite (and PostgreSQL) messages of a write the disk or the permissions refused.
WRITE_FAILURES = (
    "database or disk is full", "readonly database", "read-only", "disk i/o error",
    "unable to open database file", "no space left", "could not extend file",
)
