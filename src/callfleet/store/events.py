"""Live progress: call and batch events, one row each, for the Server-Sent Events streams.

An event row is written in the transaction of the state change it reports (a call
inserted, claimed, answered, settled; a batch stopped, completed, paused, resumed), so
an event exists exactly when its change committed, whichever process or machine made
it. Readers take the account first.

The row's integer id is the stream's `id:`. Ids are handed out in insert order but
may become visible out of order on PostgreSQL (a transaction that took id 7 can commit
after the one that took id 8), and a rolled-back transaction leaves a hole for ever.
`Tail` therefore only moves its cursor over a contiguous run of committed ids; a hole
is waited for up to `gap_grace_s`, then taken as a rollback. That is what lets a
client resume with `Last-Event-ID` without missing an event.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from callfleet.clock import utcnow
from callfleet.store.tables import events

__all__ = [
    "BATCH_KINDS",
    "CALL_KINDS",
    "Event",
    "Tail",
    "append_batch_event",
    "append_call_ended",
    "append_call_event",
    "append_queued",
    "latest_id",
    "prune_events",
]

CALL_KINDS = ("call.queued", "call.started", "call.answered", "call.ended")
BATCH_KINDS = ("batch.paused", "batch.resumed", "batch.stopped", "batch.completed")

_INSERT = sa.insert(events)


def iso(value: datetime) -> str:
    return value.isoformat()


def _compact(call_id: str, batch_id: str | None, status: str, at: datetime) -> dict[str, Any]:
    return {"call_id": call_id, "batch_id": batch_id, "status": status, "at": iso(at)}


def append_queued(conn: Connection, rows: Sequence[dict[str, Any]], at: datetime) -> None:
    """`call.queued` for freshly inserted call rows (each has id, account_id, batch_id)."""
    if not rows:
        return
    conn.execute(
        _INSERT,
        [
            {
                "account_id": r["account_id"],
                "batch_id": r.get("batch_id"),
                "call_id": r["id"],
                "kind": "call.queued",
                "payload": _compact(r["id"], r.get("batch_id"), "queued", at),
                "created_at": at,
            }
            for r in rows
        ],
    )


def append_call_event(
    conn: Connection,
    account_id: str,
    call_id: str,
    batch_id: str | None,
    kind: str,
    status: str,
    at: datetime,
) -> None:
    """A call event with the compact payload (`call_id`, `batch_id`, `status`, `at`)."""
    conn.execute(
        _INSERT,
        {
            "account_id": account_id,
            "batch_id": batch_id,
            "call_id": call_id,
            "kind": kind,
            "payload": _compact(call_id, batch_id, status, at),
            "created_at": at,
        },
    )


def append_call_ended(conn: Connection, details: dict[str, Any], at: datetime) -> None:
    """`call.ended` with the call's details object (`store.views.call_details`, the
    `call.completed` webhook's body; keys starting with `_` are internal)."""
    conn.execute(
        _INSERT,
        {
            "account_id": str(details["_account_id"]),
            "batch_id": details.get("batch_id") or None,
            "call_id": details["call_id"],
            "kind": "call.ended",
            "payload": {k: v for k, v in details.items() if not k.startswith("_")},
            "created_at": at,
        },
    )


def append_batch_event(
    conn: Connection, account_id: str, batch_id: str, kind: str, payload: dict[str, Any]
) -> None:
    """A batch event (`batch.paused`, `batch.resumed`, `batch.stopped`, `batch.completed`).

    Call it in the transaction that changes the batch's state, and only when that
    change took effect (a repeated pause is not a second `batch.paused`).
    """
    if kind not in BATCH_KINDS:
        raise ValueError(f"unknown batch event {kind!r}; one of {', '.join(BATCH_KINDS)}")
    conn.execute(
        _INSERT,
        {
            "account_id": account_id,
            "batch_id": batch_id,
            "call_id": None,
            "kind": kind,
            "payload": payload,
            "created_at": utcnow(),
        },
    )


def latest_id(conn: Connection) -> int:
    """The newest event id (0 when there is none): where a stream without history starts."""
    return int(conn.execute(sa.select(sa.func.max(events.c.id))).scalar() or 0)


def prune_events(conn: Connection, before: datetime, limit: int = 5000) -> int:
    """Delete up to `limit` events older than `before`; returns how many went."""
    ids = sa.select(events.c.id).where(events.c.created_at < before).limit(limit)
    found = [r[0] for r in conn.execute(ids)]
    if not found:
        return 0
    conn.execute(sa.delete(events).where(events.c.id.in_(found)))
    return len(found)


@dataclass(frozen=True)
class Event:
    id: int
    kind: str
    payload: dict[str, Any]


@dataclass
class Tail:
    """One stream's cursor: the account's (and batch's) events after `after`, in id order."""

    account_id: str
    after: int
    batch_id: str | None = None
    gap_grace_s: float = 10.0
    page: int = 2000
    _gap_seen: dict[int, float] = field(default_factory=dict)

    def _safe_upto(self, ids: Iterable[tuple[int, datetime]], mono: float, old: datetime) -> int:
        """The last id up to which every id is committed (or given up on as a hole).

        A hole is given up on once it has been seen for `gap_grace_s`, or at once when
        the row after it was written before `old` (holes left by pruning, or by
        transactions that rolled back long ago).
        """
        upto = self.after
        for found, written in ids:
            if upto + 1 < found and written >= old:
                first = self._gap_seen.setdefault(upto + 1, mono)
                if mono - first < self.gap_grace_s:
                    return upto
            upto = found
        return upto

    def poll(self, conn: Connection, mono: float | None = None) -> list[Event]:
        """The next events (at most one page of ids looked at); moves the cursor."""
        mono = time.monotonic() if mono is None else mono
        old = utcnow() - timedelta(seconds=self.gap_grace_s)
        ids = [
            (int(r[0]), r[1])
            for r in conn.execute(
                sa.select(events.c.id, events.c.created_at)
                .where(events.c.id > self.after)
                .order_by(events.c.id)
                .limit(self.page)
            )
        ]
        upto = self._safe_upto(ids, mono, old)
        if upto == self.after:
            return []
        where = [
            events.c.account_id == self.account_id,
            events.c.id > self.after,
            events.c.id <= upto,
        ]
        if self.batch_id is not None:
            where.append(events.c.batch_id == self.batch_id)
        rows = conn.execute(
            sa.select(events.c.id, events.c.kind, events.c.payload)
            .where(*where)
            .order_by(events.c.id)
        ).all()
        self.after = upto
        self._gap_seen = {k: v for k, v in self._gap_seen.items() if k > upto}
        return [Event(int(r.id), r.kind, dict(r.payload)) for r in rows]
