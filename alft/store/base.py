"""One open campaign store: its engines, its schema brought up to date, its transactions.

``StoreBase`` is what every group of queries builds on (``alft.store.batches``,
``alft.store.campaign_store``): the writer engine and the reader engine, ``transaction``,
reads that join a caller's transaction (``_rows``) and the per-campaign write lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from alft.errors import StoreError
from alft.store.engine import WRITE_FAILURES, lock_schema, open_engines, safe_url
from alft.store.schema import campaigns, ensure_schema


#: Built once: the labeling page takes this lock per submission, and building a statement
#: costs more CPU than executing it (see ``alft.store.batches``' prepared statements).
_LOCK_CAMPAIGN = (
    select(campaigns.c.name).where(campaigns.c.name == bindparam("camp")).with_for_update(key_share=True)
)


def _dicts(result) -> list[dict[str, Any]]:
    """Rows as dicts; zipping the keys once is ~4x faster than ``.mappings()`` per row."""
    keys = list(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result.all()]


class StoreBase:
    """The engines and transactions of one store URL; the schema is created or migrated on open."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine, self.reader = open_engines(url)
            with self.transaction() as conn:
                lock_schema(conn)
                ensure_schema(conn, url)
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
            if not any(m in why.lower() for m in WRITE_FAILURES):
                raise
            raise StoreError(
                f"campaign store {safe_url(self.url)}: cannot write ({why}); nothing of this "
                "transaction was kept: make room or fix the permissions, then run again"
            ) from None

    def _rows(self, q, conn: Connection | None, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        # Inside a write transaction, reads must use its connection: a second SQLite
        # connection would wait for the write lock this one holds.
        if conn is not None:
            return _dicts(conn.execute(q, params))
        with self.reader.connect() as c:
            return _dicts(c.execute(q, params))

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
        if self.engine.dialect.name == "sqlite":
            return
        if conn.in_nested_transaction():  # a savepoint rolled back would release the lock: no memo
            conn.execute(_LOCK_CAMPAIGN, {"camp": name})
            return
        # held to commit: a second call in the same transaction (submit, then add_label_events
        # and set_batch_counts) need not ask the server again
        txn = conn.get_transaction()
        held = conn.info.get("alft_campaign_locks")
        if held is not None and held[0] is txn and name in held[1]:
            return
        conn.execute(_LOCK_CAMPAIGN, {"camp": name})
        if held is None or held[0] is not txn:
            held = (txn, set())
            conn.info["alft_campaign_locks"] = held
        held[1].add(name)
