"""Stored `Idempotency-Key`s. Every function takes the account's id first.

The rules (who may go ahead, what is replayed, what is a conflict) are the API's,
in `callfleet.api.idempotency`; this module only reads and writes the rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from callfleet.store.tables import idempotency_keys

__all__ = [
    "SWEEP_BATCH",
    "complete",
    "find",
    "forget",
    "insert_in_flight",
    "lock",
    "release",
    "sweep",
]

SWEEP_BATCH = 1000
"""The most expired keys one `sweep` deletes, so no sweep holds the write lock for long."""


def _the_key(account_id: str, key: str) -> Any:
    return sa.and_(idempotency_keys.c.account_id == account_id, idempotency_keys.c.key == key)


def find(conn: Connection, account_id: str, key: str) -> Row[Any] | None:
    return conn.execute(sa.select(idempotency_keys).where(_the_key(account_id, key))).first()


def insert_in_flight(
    conn: Connection,
    account_id: str,
    key: str,
    method_path: str,
    digest: str,
    now: datetime,
    locked_until: datetime,
) -> bool:
    """Reserve a new key as in flight; False if a concurrent request inserted it first."""
    try:
        with conn.begin_nested():
            conn.execute(
                sa.insert(idempotency_keys).values(
                    account_id=account_id,
                    key=key,
                    method_path=method_path,
                    request_hash=digest,
                    state="in_flight",
                    created_at=now,
                    locked_until=locked_until,
                )
            )
    except IntegrityError:
        return False
    return True


def lock(conn: Connection, account_id: str, key: str, locked_until: datetime) -> None:
    """Extend (or take over) a reservation until `locked_until`."""
    conn.execute(
        sa.update(idempotency_keys)
        .where(_the_key(account_id, key))
        .values(locked_until=locked_until)
    )


def complete(
    conn: Connection, account_id: str, key: str, status_code: int, body: dict[str, Any]
) -> None:
    """Store the response the key answers with from now on."""
    conn.execute(
        sa.update(idempotency_keys)
        .where(_the_key(account_id, key))
        .values(state="done", status_code=status_code, response=body, locked_until=None)
    )


def release(conn: Connection, account_id: str, key: str) -> None:
    """Delete the key if it is still in flight."""
    conn.execute(
        sa.delete(idempotency_keys).where(
            _the_key(account_id, key), idempotency_keys.c.state == "in_flight"
        )
    )


def forget(conn: Connection, account_id: str, key: str) -> None:
    """Delete the key whatever its state (it has expired)."""
    conn.execute(sa.delete(idempotency_keys).where(_the_key(account_id, key)))


def sweep(conn: Connection, created_before: datetime, limit: int = SWEEP_BATCH) -> int:
    """Delete at most `limit` keys created before `created_before`, oldest first."""
    t = idempotency_keys.c
    oldest = (
        sa.select(t.account_id, t.key)
        .where(t.created_at < created_before)
        .order_by(t.created_at)
        .limit(limit)
    )
    done = conn.execute(
        sa.delete(idempotency_keys).where(sa.tuple_(t.account_id, t.key).in_(oldest))
    )
    return done.rowcount
