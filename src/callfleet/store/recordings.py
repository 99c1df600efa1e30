"""A call's recording in the database: its upload outbox, its life, its retention.

A recording is written on the machine that carried the call, then uploaded to the
storage (`callfleet.storage`). Before the upload, `stage_upload` writes a durable
record (`recording_uploads`: the key, the machine, the local path) and marks the
call `recording_state = 'uploading'`; `mark_stored` records the upload done and
drops the record in one transaction. Whatever is left in the outbox (a failed
upload, a worker killed between the call's end and the upload) is retried by the
machine that has the file (`dispatch/uploads.py`), so a recording is never lost.

`recording_state`: null (no recording), `uploading`, `stored`, then one of
`deleted` (DELETE /v1/calls/{id}/recording), `expired` (the retention sweeper),
`erased` (POST /v1/erasure) or `lost` (the local file vanished before its upload).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from callfleet.storage import recording_key
from callfleet.store.tables import calls, recording_uploads

__all__ = [
    "REMOVED_STATES",
    "PendingUpload",
    "RecordingState",
    "due_uploads",
    "drop_upload",
    "expired_recordings",
    "mark_removed",
    "mark_stored",
    "recording_keys",
    "recording_of",
    "stage_upload",
    "upload_failed",
]


class RecordingState(enum.StrEnum):
    UPLOADING = "uploading"
    STORED = "stored"
    DELETED = "deleted"
    EXPIRED = "expired"
    ERASED = "erased"
    LOST = "lost"


REMOVED_STATES = (
    RecordingState.DELETED,
    RecordingState.EXPIRED,
    RecordingState.ERASED,
    RecordingState.LOST,
)


@dataclass(frozen=True)
class PendingUpload:
    key: str
    call_id: str
    local_path: str
    attempts: int
    call_state: str | None
    """The call's `recording_state` now: a removed one is not uploaded at all."""


def stage_upload(
    conn: Connection,
    *,
    call_id: str,
    key: str,
    node: str,
    local_path: str,
    expires_at: datetime | None,
    now: datetime,
    retry_after_s: float = 15.0,
) -> None:
    """Record that `local_path` on `node` must reach the storage as `key` (idempotent).

    The uploader loop leaves it alone for `retry_after_s`: the inline upload goes first.
    """
    found = conn.execute(
        sa.select(recording_uploads.c.key).where(recording_uploads.c.key == key)
    ).first()
    if found is None:
        conn.execute(
            sa.insert(recording_uploads).values(
                key=key,
                call_id=call_id,
                node=node,
                local_path=local_path,
                next_attempt_at=now + timedelta(seconds=retry_after_s),
                created_at=now,
            )
        )
    conn.execute(
        sa.update(calls)
        .where(calls.c.id == call_id)
        .values(recording_state=RecordingState.UPLOADING, recording_expires_at=expires_at)
    )


def mark_stored(conn: Connection, call_id: str, key: str) -> bool:
    """The upload of `key` is done: the call points at it, the outbox forgets it.

    False when the recording was removed meanwhile (deleted, erased): the caller
    deletes the object it just stored.
    """
    conn.execute(sa.delete(recording_uploads).where(recording_uploads.c.key == key))
    res = conn.execute(
        sa.update(calls)
        .where(calls.c.id == call_id, calls.c.recording_state == RecordingState.UPLOADING)
        .values(recording_path=key, recording_state=RecordingState.STORED)
    )
    if res.rowcount == 1:
        return True
    state = conn.execute(sa.select(calls.c.recording_state).where(calls.c.id == call_id)).scalar()
    return state not in REMOVED_STATES


def drop_upload(conn: Connection, key: str, *, lost: bool = False, now: datetime) -> None:
    """Forget an upload; with `lost`, the call says its recording is gone."""
    call_id = conn.execute(
        sa.delete(recording_uploads)
        .where(recording_uploads.c.key == key)
        .returning(recording_uploads.c.call_id)
    ).scalar()
    if lost and call_id is not None:
        conn.execute(
            sa.update(calls)
            .where(calls.c.id == call_id, calls.c.recording_state == RecordingState.UPLOADING)
            .values(recording_state=RecordingState.LOST, recording_removed_at=now)
        )


def upload_failed(conn: Connection, key: str, error: str, next_at: datetime) -> None:
    conn.execute(
        sa.update(recording_uploads)
        .where(recording_uploads.c.key == key)
        .values(
            attempts=recording_uploads.c.attempts + 1,
            last_error=error[:2000],
            next_attempt_at=next_at,
        )
    )


def due_uploads(conn: Connection, node: str, now: datetime, limit: int = 50) -> list[PendingUpload]:
    """This machine's uploads whose retry is due, oldest first."""
    rows = conn.execute(
        sa.select(
            recording_uploads.c.key,
            recording_uploads.c.call_id,
            recording_uploads.c.local_path,
            recording_uploads.c.attempts,
            calls.c.recording_state,
        )
        .join(calls, calls.c.id == recording_uploads.c.call_id)
        .where(recording_uploads.c.node == node, recording_uploads.c.next_attempt_at <= now)
        .order_by(recording_uploads.c.next_attempt_at)
        .limit(limit)
    ).all()
    return [
        PendingUpload(r.key, r.call_id, r.local_path, r.attempts, r.recording_state) for r in rows
    ]


def recording_of(conn: Connection, account_id: str, call_id: str) -> Row[Any] | None:
    """The account's call's recording columns (None: no such call in the account)."""
    return conn.execute(
        sa.select(
            calls.c.id,
            calls.c.record,
            calls.c.state,
            calls.c.attempt,
            calls.c.recording_path,
            calls.c.recording_state,
            calls.c.recording_removed_at,
        ).where(calls.c.account_id == account_id, calls.c.id == call_id)
    ).first()


def mark_removed(
    conn: Connection, call_ids: list[str], state: RecordingState, now: datetime
) -> int:
    """The recordings of `call_ids` are gone (`state` says why); returns how many changed."""
    if not call_ids:
        return 0
    res = conn.execute(
        sa.update(calls)
        .where(
            calls.c.id.in_(call_ids),
            calls.c.recording_state.in_((RecordingState.STORED, RecordingState.UPLOADING)),
        )
        .values(recording_state=state, recording_removed_at=now)
    )
    return int(res.rowcount)


def recording_keys(call_id: str, attempt: int, current: str | None) -> list[str]:
    """Every key a call's recordings may have: the one it points at, and each earlier
    attempt's (a retried call's earlier recording stays in the storage until the
    call's recording is deleted, expires or is erased)."""
    keys = [current] if current else []
    keys += [k for n in range(1, attempt + 1) if (k := recording_key(call_id, n)) != current]
    return keys


def expired_recordings(
    conn: Connection, now: datetime, limit: int = 200
) -> list[tuple[str, list[str]]]:
    """(call id, its recordings' keys) past their retention, oldest first."""
    rows = conn.execute(
        sa.select(calls.c.id, calls.c.attempt, calls.c.recording_path)
        .where(
            calls.c.recording_state == RecordingState.STORED,
            calls.c.recording_expires_at <= now,
        )
        .order_by(calls.c.recording_expires_at)
        .limit(limit)
    ).all()
    return [(r.id, recording_keys(r.id, r.attempt, r.recording_path)) for r in rows]
